"""PromptDiffuser: a conditional diffusion model that generates the trajectory prompt of a frozen
Prompt-DT (Section 4, Algorithm 1 and Table 4 of the Prompt Diffuser paper).

x0 is a K*-step prompt window flattened as (states, actions, rewards), each feature scaled into
[-1, 1] by the training data's min/max; the condition y is the window's returns-to-go (scaled by
the PLM's return scale) and timesteps (scaled by the PLM's timestep range). Training minimizes the
diffusion loss L_DM (Eq. 10) and, through the whole reverse chain, the frozen PLM's action loss
L_DT (Eq. 13) on history windows of the same task, the two gradients combined by ``update``
(Eq. 15 by default).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from tqdm.auto import tqdm

from promptrl.checkpoint import CONFIG_NAME, WEIGHTS_NAME, JsonHubMixin, write_model_files
from promptrl.diffusion import UPDATE_RULES, GaussianDiffusion, NoiseMLP, combine_gradients
from promptrl.plm import PromptDT, _as_task_episodes
from promptrl.segments import Episode, random_window, stack_windows
from promptrl.transformer import Segment

PLM_FOLDER = "plm"


@dataclass
class PromptDiffuserSettings:
    """Everything ``config.json`` holds besides the PLM (which lives in ``plm/``)."""

    n_steps: int = 100
    """N: diffusion steps."""
    schedule: str = "linear"
    """Noise schedule."""
    hidden: int = 256
    """Width of the noise MLP's hidden layers."""
    n_hidden: int = 3
    """Hidden layers of the noise MLP."""
    dropout: float = 0.1
    """Dropout in the noise MLP."""
    update: str = "projection"
    """How L_DM and L_DT gradients combine: projection (Eq. 15), dm, dt or sum (Eq. 18-20)."""
    guidance_weight: float = 1.0
    """Multiplier of L_DT."""
    temperature: float = 0.5
    """Variance multiplier of low-temperature sampling at inference (Eq. 16)."""
    learning_rate: float = 1e-4
    """AdamW learning rate."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    batch_size: int = 32
    """Prompts per training batch."""
    epochs: int = 20
    """Default epochs of ``learn``."""
    steps_per_epoch: int = 100
    """Gradient steps per epoch."""
    x_min: list[float] | None = None
    """Per-feature minimum of the (state, action, reward) tokens (set by the first ``learn``)."""
    x_max: list[float] | None = None
    """Per-feature maximum of the (state, action, reward) tokens."""
    conditions: dict[str, list[list[float]]] | None = None
    """Per task (key: task index), the conditions y of the latest ``learn`` data, drawn from at generation."""
    seed: int = 0
    """Seeds initialization, batches and generation."""
    steps_trained: int = 0
    """Gradient steps done so far (all ``learn`` calls)."""


class PromptDiffuser(JsonHubMixin, library_name="promptrl", tags=["reinforcement-learning", "diffusion", "prompt-tuning"]):
    """Generates trajectory prompts for a frozen :class:`PromptDT`.

    :param plm: the pre-trained Prompt-DT (frozen here).
    :param env: unused beyond a size check against the PLM (kept for the SB3-style signature).
    :param hyperparams: fields of :class:`PromptDiffuserSettings`.
    """

    def __init__(self, plm: PromptDT, env: Any = None, **hyperparams: Any):
        valid = {f.name for f in fields(PromptDiffuserSettings)}
        unknown = set(hyperparams) - valid
        if unknown:
            raise TypeError(f"unknown PromptDiffuser hyperparameters {sorted(unknown)}; valid: {sorted(valid)}")
        if not isinstance(plm, PromptDT):
            raise TypeError(f"plm must be a PromptDT, got {type(plm).__name__}")
        if not plm.settings.use_prompt:
            raise ValueError("the PLM was trained without prompts (MT-ORL): a prompt generator has nothing to condition")
        if env is not None:
            from promptrl.plm import _spaces_of

            obs_dim, act_dim, _ = _spaces_of(env)
            if (obs_dim, act_dim) != (plm.settings.obs_dim, plm.settings.act_dim):
                raise ValueError(f"env sizes ({obs_dim}, {act_dim}) do not match the PLM's ({plm.settings.obs_dim}, {plm.settings.act_dim})")
        if "betas" in hyperparams:
            hyperparams["betas"] = tuple(hyperparams["betas"])
        self.settings = PromptDiffuserSettings(**hyperparams)
        if self.settings.update not in UPDATE_RULES:
            raise ValueError(f"update must be one of {UPDATE_RULES}, got {self.settings.update!r}")
        self.plm = plm
        self.plm.network.requires_grad_(False).eval()
        self.device = plm.device
        s, p = self.settings, plm.settings
        self.token_dim = p.obs_dim + p.act_dim + 1
        self.x_dim, self.y_dim = p.prompt_length * self.token_dim, 2 * p.prompt_length
        torch.manual_seed(s.seed)
        self.model = NoiseMLP(self.x_dim, self.y_dim, s.hidden, s.n_hidden, s.dropout).to(self.device)
        self.diffusion = GaussianDiffusion(s.n_steps, s.schedule).to(self.device)
        self._optimizer: torch.optim.Optimizer | None = None
        self._generator = torch.Generator(device=self.device).manual_seed(s.seed)
        self._rng = np.random.default_rng(s.seed)

    def set_random_seed(self, seed: int) -> None:
        """Reseed batch sampling, noise and generation (as Stable-Baselines3's ``set_random_seed``)."""
        self.settings.seed = int(seed)
        self._generator.manual_seed(self.settings.seed)
        self._rng = np.random.default_rng(self.settings.seed)

    def num_parameters(self) -> int:
        """Trainable parameters (the noise model; the PLM is frozen)."""
        return sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------------ prompt <-> x0, y
    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.settings.x_min is None:
            raise RuntimeError("the model has no token bounds yet: call learn() first")
        lo = torch.tensor(self.settings.x_min, device=self.device)
        hi = torch.tensor(self.settings.x_max, device=self.device)
        return lo, torch.maximum(hi, lo + 1e-6)

    def _encode(self, windows: list[tuple[np.ndarray, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw windows (states, actions, rewards, rtg, timesteps) -> normalized x0 (B, x_dim), y (B, y_dim)."""
        states, actions, rewards, rtg, timesteps = (torch.as_tensor(np.stack(c), device=self.device, dtype=torch.float32)
                                                    for c in zip(*windows))
        tokens = torch.cat([states, actions, rewards[..., None]], -1)  # (B, K*, token_dim)
        lo, hi = self._bounds()
        x0 = (2 * (tokens - lo) / (hi - lo) - 1).clamp(-1, 1).flatten(1)  # (B, K* * token_dim)
        p = self.plm.settings
        y = torch.cat([rtg / p.rtg_scale, timesteps / p.max_ep_len], -1)  # (B, 2 K*)
        return x0, y

    def _decode(self, x0: torch.Tensor, y: torch.Tensor) -> Segment:
        """x0, y -> the PLM's (normalized) prompt segment; differentiable in x0."""
        p = self.plm.settings
        lo, hi = self._bounds()
        tokens = (x0.view(-1, p.prompt_length, self.token_dim) + 1) / 2 * (hi - lo) + lo  # (B, K*, token_dim)
        mean = torch.tensor(p.state_mean, device=self.device)
        std = torch.tensor(p.state_std, device=self.device)
        states = (tokens[..., : p.obs_dim] - mean) / std
        actions = tokens[..., p.obs_dim: p.obs_dim + p.act_dim].clamp(-1, 1)
        rtg = y[:, : p.prompt_length, None]  # already scaled by rtg_scale
        timesteps = (y[:, p.prompt_length:] * p.max_ep_len).round().long().clamp(0, p.max_ep_len - 1)
        return Segment(states, actions, rtg, timesteps, torch.ones_like(rtg[..., 0]))

    @staticmethod
    def _raw_window(ep: Episode, start: int, length: int) -> tuple[np.ndarray, ...]:
        end = min(start + length, len(ep))
        start = end - length  # whole windows only: prompts have no padding
        t = np.arange(start, end)
        return ep.observations[t], ep.actions[t], ep.rewards[t], ep.rtg[t], t.astype(np.float32)

    # ------------------------------------------------------------------ training
    def learn(self, datasets: Any, epochs: int | None = None, steps_per_epoch: int | None = None,
              callback: Callable[[dict[str, Any]], bool | None] | None = None, progress_bar: bool = True) -> PromptDiffuser:
        """Train the generator on prompts from ``datasets`` (one per task, or one dataset), guided by the
        frozen PLM's action loss on history windows of the same task; returns self.

        Use it twice: on the training tasks' datasets (generator pre-training), then on a test task's
        few-shot data (fine-tuning, Table 4's budget by default).
        """
        s, p = self.settings, self.plm.settings
        epochs = s.epochs if epochs is None else epochs
        steps_per_epoch = s.steps_per_epoch if steps_per_epoch is None else steps_per_epoch
        for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        tasks = _as_task_episodes(datasets, p.obs_dim, p.act_dim, "datasets")
        for task, eps in tasks.items():
            if min(len(e) for e in eps) < p.prompt_length:
                raise ValueError(f"task {task} has episodes shorter than the prompt length {p.prompt_length}")
        if s.x_min is None:
            tokens = np.concatenate([np.concatenate([e.observations, e.actions, e.rewards[:, None]], 1)
                                     for eps in tasks.values() for e in eps])
            s.x_min, s.x_max = tokens.min(0).tolist(), tokens.max(0).tolist()
        seg_spec = self.plm._segment_spec()
        self._remember_conditions(tasks)
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(self.model.parameters(), lr=s.learning_rate, betas=s.betas, weight_decay=s.weight_decay)
        params = list(self.model.parameters())
        task_ids = sorted(tasks)
        bar = tqdm(total=epochs * steps_per_epoch, desc="PromptDiffuser", disable=not progress_bar)
        step = 0
        for _ in range(epochs):
            for _ in range(steps_per_epoch):
                prompts, histories = [], []
                for _ in range(s.batch_size):
                    eps = tasks[task_ids[self._rng.integers(len(task_ids))]]
                    pe = eps[self._rng.integers(len(eps))]
                    prompts.append(self._raw_window(pe, int(self._rng.integers(0, len(pe))), p.prompt_length))
                    histories.append(random_window(eps[self._rng.integers(len(eps))], p.context, seg_spec, self._rng))
                x0, y = self._encode(prompts)
                history = stack_windows(histories, self.device)
                self.model.train()
                loss_dm = self.diffusion.loss(self.model, x0, y, self._generator)
                g_dm = torch.autograd.grad(loss_dm, params)
                loss_dt = torch.zeros((), device=self.device)
                if s.update != "dm":
                    generated = self.diffusion.sample(self.model, y, self.x_dim, self._generator, keep_grad=True)
                    loss_dt = s.guidance_weight * self.plm.loss(history, self._decode(generated, y))
                    g_dt = torch.autograd.grad(loss_dt, params)
                    flat = combine_gradients(torch.cat([g.flatten() for g in g_dm]), torch.cat([g.flatten() for g in g_dt]), s.update)
                else:
                    flat = torch.cat([g.flatten() for g in g_dm])
                offset = 0
                for q in params:
                    q.grad = flat[offset: offset + q.numel()].view_as(q).clone()
                    offset += q.numel()
                torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                self._optimizer.step()
                step += 1
                s.steps_trained += 1
                values = {"loss_dm": loss_dm.item(), "loss_dt": loss_dt.item()}
                if not all(math.isfinite(v) for v in values.values()):
                    raise FloatingPointError(f"training loss became non-finite at step {step}: {values}")
                bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})
                bar.update()
                if callback is not None and callback({"step": step, **values, "model": self}) is False:
                    bar.close()
                    self.model.eval()
                    return self
        bar.close()
        self.model.eval()
        return self

    def _remember_conditions(self, tasks: dict[int, list[Episode]]) -> None:
        """Keep the conditions y of every whole prompt window of the data (the few-shot data after fine-tuning)."""
        p = self.plm.settings
        self.settings.conditions = {}
        for task, eps in tasks.items():
            windows = [self._raw_window(e, t, p.prompt_length) for e in eps for t in range(0, len(e) - p.prompt_length + 1)]
            self.settings.conditions[str(task)] = self._encode(windows)[1].cpu().tolist()

    def _conditions(self, n: int, task: int | Sequence[int] | None) -> torch.Tensor:
        """Draw ``n`` conditions y: from the bank of ``task`` (one task, or one per prompt), else from all."""
        banks = self.settings.conditions
        if not banks:
            raise RuntimeError("the generator has no conditions yet: call learn() first")
        tasks = [task] * n if task is None or isinstance(task, (int, np.integer)) else list(task)
        if len(tasks) != n:
            raise ValueError(f"task must be one task index or {n} of them, got {len(tasks)}")
        pooled = [y for bank in banks.values() for y in bank]
        missing = sorted({int(t) for t in tasks if t is not None and str(int(t)) not in banks})
        if missing:
            warnings.warn(f"no few-shot data of task(s) {missing} was learned: their prompts are conditioned on "
                          f"all learned tasks ({sorted(banks, key=int)}); call learn() on their data first", stacklevel=3)
        out = []
        for t in tasks:
            bank = banks.get(str(int(t)), pooled) if t is not None else pooled
            out.append(bank[int(torch.randint(0, len(bank), (1,), generator=self._generator, device=self.device))])
        return torch.tensor(out, device=self.device, dtype=torch.float32)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_prompt(self, n: int = 1, rtg: float | None = None, temperature: float | None = None,
                        task: int | Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
        """``n`` prompts for the PLM (raw units, on the model's device): dicts of states, actions, rtg,
        timesteps and mask. Conditions come from the latest ``learn`` data of ``task`` (one index or
        one per prompt; wrappers pass their env's task), of all learned tasks when None; ``rtg``
        replaces their return-to-go (e.g. zero-shot: the target return only)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        p = self.plm.settings
        y = self._conditions(n, task)
        if rtg is not None:
            y[:, : p.prompt_length] = float(rtg) / p.rtg_scale
        self.model.eval()
        x0 = self.diffusion.sample(self.model, y, self.x_dim, self._generator,
                                   temperature=self.settings.temperature if temperature is None else temperature)
        lo, hi = self._bounds()
        tokens = (x0.view(n, p.prompt_length, self.token_dim) + 1) / 2 * (hi - lo) + lo
        rtg_raw = y[:, : p.prompt_length, None] * p.rtg_scale
        steps = (y[:, p.prompt_length:] * p.max_ep_len).round().long().clamp(0, p.max_ep_len - 1)
        return [{"states": tokens[i, :, : p.obs_dim], "actions": tokens[i, :, p.obs_dim: p.obs_dim + p.act_dim].clamp(-1, 1),
                 "rtg": rtg_raw[i], "timesteps": steps[i], "mask": torch.ones(p.prompt_length, device=self.device)}
                for i in range(n)]

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True):
        """The PLM's action for a :class:`~promptrl.wrappers.PromptWrapper` observation (prompts come from this generator)."""
        return self.plm.predict(observation, state, episode_start, deterministic)

    # ------------------------------------------------------------------ hub
    def _save_pretrained(self, save_directory: Path) -> None:
        self.plm.save_pretrained(Path(save_directory) / PLM_FOLDER)
        write_model_files(Path(save_directory), self.model, self.settings)

    def save_generator(self, folder: str | Path) -> None:
        """Save the generator alone (config + weights, no PLM); load it with ``from_pretrained(folder, plm=plm)``."""
        from promptrl.checkpoint import atomic_folder

        with atomic_folder(Path(folder)) as tmp:
            write_model_files(tmp, self.model, self.settings)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir: Any = None, force_download: bool = False,
                         local_files_only: bool = False, token: Any = None, device: str = "cpu", plm: PromptDT | None = None,
                         **_: Any) -> PromptDiffuser:
        """``plm=`` reuses an already loaded PLM (then the folder needs no ``plm/``, e.g. a generator saved with
        ``save_generator``)."""
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(snapshot_download(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                            local_files_only=local_files_only, token=token))
        needed = (CONFIG_NAME, WEIGHTS_NAME) + (() if plm is not None else (f"{PLM_FOLDER}/{CONFIG_NAME}", f"{PLM_FOLDER}/{WEIGHTS_NAME}"))
        for name in needed:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{name} not found in {model_id}: a PromptDiffuser folder holds its PLM in {PLM_FOLDER}/")
        if plm is None:
            plm = PromptDT.from_pretrained(folder / PLM_FOLDER, device=device)
        elif not isinstance(plm, PromptDT):
            raise TypeError(f"plm must be a PromptDT, got {type(plm).__name__}")
        try:
            settings = json.loads((folder / CONFIG_NAME).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"corrupt {CONFIG_NAME} in {model_id}: {err}") from err
        valid = {f.name for f in fields(PromptDiffuserSettings)}
        if not isinstance(settings, dict) or set(settings) - valid:
            raise ValueError(f"{CONFIG_NAME} in {model_id} is not a PromptDiffuser config")
        model = cls(plm, **settings)
        try:
            state = load_file(str(folder / WEIGHTS_NAME))
            model.model.load_state_dict(state)
        except Exception as err:
            raise ValueError(f"{WEIGHTS_NAME} in {model_id} is corrupt or does not match its {CONFIG_NAME}: {err}") from err
        model.model.eval()
        return model
