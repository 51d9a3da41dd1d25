"""Prompt-Tuning DT (Hu et al. 2023, "Prompt-Tuning Decision Transformer with Preference Ranking",
arXiv:2305.09648), offline setting: the raw prompt is tuned by rank-based black-box optimization."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from promptrl.data.windows import Segment
from promptrl.methods.base import TrainingSettings, check_number, prompt_dicts
from promptrl.methods.baselines.soft_prompt import OneTaskPrompt
from promptrl.methods.plm import action_loss

OPTIMIZERS = ("sgd", "adam")


@dataclass
class PromptTuningSettings(TrainingSettings):
    """Settings of :class:`PromptTuningDT` (see its docstring for where they come from)."""

    learning_rate: float = 0.05
    """Step size eta of the prompt update (in normalized prompt units)."""
    weight_decay: float = 0.0
    """AdamW weight decay (``optimizer="adam"`` only)."""
    population: int = 16
    """m: Gaussian perturbations ranked per step."""
    sigma: float = 0.1
    """mu: standard deviation of the perturbations (smoothing parameter), in normalized prompt units."""
    optimizer: str = "sgd"
    """``sgd``: ``x += eta * d`` with the rank-based direction d (ZO-RankSGD); ``adam``: AdamW on ``-d``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("population", self.population, integer=True, minimum=1)
        check_number("sigma", self.sigma)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")


class PromptTuningDT(OneTaskPrompt):
    """Prompt-Tuning DT, offline: the K*-step prompt's states, actions and returns-to-go (normalized
    as the PLM sees them: states by the PLM's mean and std, returns-to-go by its scale; timesteps
    stay those of the initial window) are tuned without any PLM gradient.

    Each step draws ``population`` perturbations ``xi_i ~ N(0, I)`` of the prompt ``x``, scores each
    candidate ``x + sigma * xi_i`` by the frozen PLM's action loss on the same few-shot history batch
    (score = minus the loss), ranks them, and estimates a descent direction from the ranking alone
    as ZO-RankSGD does (Tang et al. 2023, arXiv:2303.03751, on which Hu et al. build): with the
    candidates sorted best first, ``d = sum_r (m - 1 - 2r) xi_(r) / (m (m - 1) / 2)``, the average
    of ``xi_better - xi_worse`` over all ranked pairs. Then ``x += eta * d`` (``optimizer="sgd"``) or an
    AdamW step on ``-d`` (``"adam"``). The prompt starts from a real window of the few-shot data (or
    of ``prompt_data``: Table 2 of the Prompt Diffuser paper varies its quality).

    Settings and sources: the method (Gaussian sampling around the prompt with standard deviation mu,
    ranking by the offline behaviour-cloning loss, the rank-based gradient estimate of ZO-RankSGD and
    its step) follows Hu et al.'s abstract and the public OpenReview discussion of their paper; the
    estimator's weights are those of the ZO-RankSGD authors' reference optimizer (github.com/TZW1998/
    Taming-Stable-Diffusion-with-Human-Ranking-Feedback, ``optimizer.py``) with a full ranking (k = m).
    Those sources give no numeric hyperparameters (m, mu, eta), so the defaults (m = 16, mu = 0.1,
    eta = 0.05, plain step) are this library's choice. The budget (20 epochs x 100 steps,
    batches of 32) is the Prompt Diffuser paper's fine-tuning budget (Table 4); each step costs
    ``population + 1`` forward passes of the PLM over the batch.

    Tuned parameters: ``K* * (obs_dim + act_dim + 1)``. ``predict`` uses the tuned prompt (the
    observation's ``prompt_*`` entries are ignored); ``generate_prompt`` returns it in raw units.
    """

    settings_class: ClassVar[type[PromptTuningSettings]] = PromptTuningSettings

    def _build(self) -> None:
        super()._build()
        p = self.plm.settings
        width = p.obs_dim + p.act_dim + 1
        self.module.prompt = nn.Parameter(torch.zeros(p.prompt_length, width, device=self.device), requires_grad=False)
        self.module.register_buffer("timesteps", torch.zeros(p.prompt_length, dtype=torch.long, device=self.device))

    def _initialize(self, prompt: Segment) -> None:
        self.module.prompt.copy_(torch.cat([prompt.states[0], prompt.actions[0], prompt.rtg[0]], -1))
        self.module.timesteps.copy_(prompt.timesteps[0])

    def _segment(self, prompts: torch.Tensor) -> Segment:
        """Prompts (C, K*, obs + act + 1) in normalized units -> the PLM's prompt segment."""
        p = self.plm.settings
        timesteps = self.module.timesteps.expand(prompts.shape[0], -1)
        return Segment(
            prompts[..., : p.obs_dim],
            prompts[..., p.obs_dim : p.obs_dim + p.act_dim],
            prompts[..., -1:],
            timesteps,
            torch.ones(timesteps.shape, device=self.device),
        )

    def _forward(self, history: Segment, prompt: Segment | None, last_only: bool = False) -> torch.Tensor:
        return self.plm.network(
            history, self._segment(self.module.prompt.expand(history.timesteps.shape[0], -1, -1)), last_only=last_only
        )

    @torch.no_grad()
    def candidate_losses(self, candidates: torch.Tensor, history: Segment) -> torch.Tensor:
        """The frozen PLM's action loss of each candidate prompt (C, K*, obs + act + 1) on the same history batch: (C,)."""
        C, B = candidates.shape[0], history.timesteps.shape[0]
        histories = Segment(*(t.repeat(C, *[1] * (t.dim() - 1)) for t in history))
        pred = self.plm.network(histories, self._segment(candidates.repeat_interleave(B, dim=0)))
        return action_loss(pred, histories, groups=C)

    def _train_step(self) -> dict[str, float]:
        s, x = self.settings, self.module.prompt
        history, _ = self._sampler.sample(self._per_task, self.device)
        noise = torch.randn((s.population, *x.shape), generator=self._generator, device=self.device)
        losses = self.candidate_losses(torch.cat([x[None], x[None] + s.sigma * noise]), history)  # current prompt first
        m = s.population
        order = losses[1:].argsort()  # best (lowest loss) first
        weights = (m - 1 - 2 * torch.arange(m, device=self.device, dtype=x.dtype)) / max(1, m * (m - 1) // 2)
        direction = (weights[:, None, None] * noise[order]).sum(0)
        if s.optimizer == "sgd":
            with torch.no_grad():
                x.add_(s.learning_rate * direction)
        else:
            self._apply_gradients([-direction])
        return {"loss": losses[0].item(), "score": -losses[0].item()}

    @torch.no_grad()
    def generate_prompt(
        self, n: int = 1, task: int | Sequence[int] | None = None, generator: torch.Generator | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """``n`` copies of the tuned prompt in raw units (``task`` and ``generator``: as for the other
        methods; a task other than the learned one raises ``ValueError`` unless :attr:`zero_shot`)."""
        self.bank.sample(n, task, self._draws(generator), self.zero_shot)  # checks n and task, and that learn() ran
        p = self.plm.settings
        x = self.module.prompt.expand(n, -1, -1)
        states = x[..., : p.obs_dim] * torch.tensor(p.state_std, device=self.device) + torch.tensor(
            p.state_mean, device=self.device
        )
        return prompt_dicts(
            states,
            x[..., p.obs_dim : p.obs_dim + p.act_dim],
            x[..., -1] * p.rtg_scale,
            self.module.timesteps.expand(n, -1),
        )
