"""PromptDiffuser: a conditional diffusion model that generates the trajectory prompt of a frozen
Prompt-DT (Section 4, Algorithm 1 and Table 4 of the Prompt Diffuser paper).

x0 is a K*-step prompt window flattened as (states, actions, rewards), each feature scaled into
[-1, 1] by the training data's min/max; the condition y is the window's returns-to-go (scaled by
the PLM's return scale) and timesteps (scaled by the PLM's timestep range). Training minimizes the
diffusion loss L_DM (Eq. 10) and, through the whole reverse chain, the frozen PLM's action loss
L_DT (Eq. 13) on history windows of the same task, the two gradients combined by ``update``
(Eq. 15 by default). The representation, the guided training loop, generation and save/load are
shared with the VAE ablation (:mod:`promptrl.methods.generator`, :mod:`promptrl.methods.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from promptrl.common.config_checks import check_bool, check_float, check_int, check_parameter_count
from promptrl.common.distributed import barrier, is_main
from promptrl.common.files import CONFIG_NAME, atomic_folder, latest_folder
from promptrl.common.hub import model_card_template, write_model_files
from promptrl.methods.base import PLM_FOLDER
from promptrl.methods.generator import GeneratorSettings, PromptGenerator
from promptrl.methods.training import train_in_chunks
from promptrl.nn.diffusion import GaussianDiffusion, NoiseMLP, check_compile_chain

__all__ = ["PLM_FOLDER", "PRETRAIN_RECIPE", "PromptDiffuser", "PromptDiffuserSettings", "pretrain_generator"]


MAX_DIFFUSION_STEPS = 100_000
"""Largest ``n_steps`` a config may ask for."""


@dataclass
class PromptDiffuserSettings(GeneratorSettings):
    """Everything ``config.json`` holds besides the PLM (which lives in ``plm/``); the training,
    guidance and condition settings come from :class:`~promptrl.methods.generator.GeneratorSettings`."""

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
    residual: bool = True
    """Residual noise MLP (dropout inside the residual branches, as improved-diffusion's blocks);
    False: a plain (Linear, Mish, Dropout) stack, where dropout is on the main path."""
    compile_chain: bool | str = False
    """Compile the reverse chain's step with ``torch.compile`` on a CUDA device (True: CUDA graphs for
    generation; a string names the mode); elsewhere the plain chain runs, with the same draws."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_compile_chain(self.compile_chain)
        check_int("n_steps", self.n_steps, 1, MAX_DIFFUSION_STEPS)
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        check_int("hidden", self.hidden, 1, 1 << 20)
        check_int("n_hidden", self.n_hidden, 1, 1024)
        check_float("dropout", self.dropout, 0.0, 1.0, open_max=True)
        check_bool("residual", self.residual)
        check_parameter_count("the noise MLP of this config", self.n_hidden * self.hidden * self.hidden)  # at least

    model_card: dict[str, Any] | None = None
    """Markdown ``training`` / ``results`` sections of the model card, kept with the model so every save writes them."""


MODEL_CARD = model_card_template("""
from promptrl import PromptDiffuser, PromptWrapper, load_suite

pd = PromptDiffuser.from_pretrained("{{ repo_id | default("path/to/this/folder", true) }}")
env = PromptWrapper(load_suite("{{ suite }}").make_env(task={{ task }}), pd)  # a generated prompt at every reset
obs, info = env.reset(seed=0)
action, _ = pd.predict(obs, deterministic=True)
""")


class PromptDiffuser(
    PromptGenerator,
    license="mit",
    model_card_template=MODEL_CARD,
    tags=["reinforcement-learning", "diffusion", "prompt-tuning", "decision-transformer", "offline-rl"],
):
    """Generates trajectory prompts for a frozen :class:`PromptDT`.

    :param plm: the pre-trained Prompt-DT (frozen here).
    :param env: unused beyond a size check against the PLM (kept for the SB3-style signature).
    :param hyperparams: fields of :class:`PromptDiffuserSettings`.

    ``learn(datasets, epochs, steps_per_epoch, callback, progress_bar, prompt_data, total_steps)``
    trains it (callback keys ``loss_dm``, ``loss_dt`` and the gradient statistics ``grad_gen``,
    ``grad_dt``, ``grad_cos``), ``generate_prompt(n, rtg, temperature, task)`` samples prompts,
    ``predict`` runs the PLM, ``num_parameters()`` counts the noise model's parameters.
    """

    settings_class: ClassVar[type[PromptDiffuserSettings]] = PromptDiffuserSettings
    legacy_settings: ClassVar[dict[str, Any]] = {"residual": False}  # folders saved before the residual noise MLP

    def _make_model(self) -> nn.Module:
        s = self.settings
        model = NoiseMLP(self.x_dim, self.y_dim, s.hidden, s.n_hidden, s.dropout, residual=s.residual)
        self.diffusion = GaussianDiffusion(s.n_steps, s.schedule).to(self.device)
        return model

    def _generative_loss(self, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.diffusion.loss(self.model, x0, y, self._generator)

    def _sample_x0(
        self, y: torch.Tensor, temperature: float, keep_grad: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.diffusion.sample(
            self.model,
            y,
            self.x_dim,
            self._generator if generator is None else generator,
            temperature=temperature,
            keep_grad=keep_grad,
            compile_chain=self.settings.compile_chain,
        )

    @torch.no_grad()
    def denoising_chain(self, n: int = 1, task: int | None = None, temperature: float | None = None) -> torch.Tensor:
        """The reverse process of ``n`` prompts (Fig. 4 of the paper): x_N (noise), ..., x_0 in normalized
        units, shape (N + 1, n, K*, obs_dim + act_dim + 1); conditions as in :meth:`generate_prompt`
        (a task of ``task_generators``: that generator's chain)."""
        if isinstance(task, int) and task in self.task_generators and task not in self.own_tasks():
            return self.task_generators[task].denoising_chain(n, task, temperature)
        y = self._conditions(n, task)
        if self.settings.target_rtg is not None:
            y[:, : self.plm.settings.prompt_length] = self.settings.target_rtg / self.plm.settings.rtg_scale
        self.model.eval()
        t = self.settings.temperature if temperature is None else temperature
        _, chain = self.diffusion.sample(self.model, y, self.x_dim, self._generator, temperature=t, return_chain=True)
        return torch.stack(chain).view(len(chain), n, self.plm.settings.prompt_length, self.token_dim)

    # ------------------------------------------------------------------ hub
    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """The Hub model card; ``save_pretrained(..., model_card_kwargs={"training": ..., "results": ...})`` fills it in."""
        s, p = self.settings, self.plm.settings
        tasks = self.served_tasks() or [0]
        routed = sorted(self.task_generators)
        kwargs.setdefault("title", f"Prompt Diffuser{f' for {p.suite}' if p.suite else ''}")
        kwargs.setdefault(
            "summary",
            (
                f"A conditional diffusion model (N={s.n_steps} steps, {s.n_hidden}x{s.hidden} {'residual ' if s.residual else ''}Mish MLP, "
                f"{self.num_parameters():,} trainable parameters, {100 * self.num_parameters() / self.plm.num_parameters():.2f}% of the PLM) "
                f"that generates the {p.prompt_length}-step trajectory prompt of the frozen Prompt-DT in `plm/` "
                f"({self.plm.num_parameters():,} parameters). Trained {s.steps_trained:,} steps with update rule `{s.update}`; "
                f"it holds prompt conditions for tasks {self.own_tasks()}"
                + (
                    f", and `tasks/<task>/` holds a generator of each of tasks {routed}, used for that task's prompts."
                    if routed
                    else "."
                )
            ),
        )
        kwargs.setdefault("suite", p.suite or "cheetah-vel")
        kwargs.setdefault("task", tasks[0])
        for key, text in (s.model_card or {}).items():
            kwargs.setdefault(key, text)
        return super().generate_model_card(*args, **kwargs)


PRETRAIN_RECIPE: dict[str, Any] = {"update": "dm", "learning_rate": 1e-3, "batch_size": 64}
"""How the shipped generators were pre-trained on the training tasks: L_DM only (a step without the
guided reverse chain), a larger learning rate and batch."""


def pretrain_generator(
    plm: Any,
    datasets: Any,
    folder: str | Path,
    steps: int,
    *,
    recipe: dict[str, Any] | None = None,
    save_steps: int = 1000,
    seed: int = 0,
    model_card: Callable[[PromptGenerator], str] | None = None,
    progress_bar: bool = True,
    generator_class: type[PromptGenerator] | None = None,
    **settings: Any,
) -> PromptGenerator:
    """A generator pre-trained on ``datasets`` (a suite's training tasks) until ``steps`` steps are done
    in all, saved (atomically) to ``folder`` every ``save_steps`` steps; a rerun resumes from there,
    and one with more ``steps`` continues. Each save holds the optimizer and random state too (see
    :meth:`~promptrl.methods.base.FrozenPLMMethod.save_training_state`), so that a run killed at any
    point and rerun ends with the weights of one that never stopped (bit for bit on a CPU, in a single
    process), whatever ``save_steps``.

    It trains with ``recipe`` (default :data:`PRETRAIN_RECIPE`), and each save holds the fine-tuning
    values of those settings instead (``settings``, else Table 4's), so that ``learn`` on a test
    task's data afterwards fine-tunes as the paper does. ``settings``: other fields of
    :class:`PromptDiffuserSettings` for a new generator; ``model_card(pd)``: the card's training section.
    ``generator_class``: another :class:`~promptrl.methods.generator.PromptGenerator` to pre-train
    the same way (e.g. the VAE of Table 5; default :class:`PromptDiffuser`).

    Under an initialized ``torch.distributed`` process group every rank calls it with the same
    arguments and trains data-parallel (each rank draws ``batch_size`` windows per step, see
    :meth:`~promptrl.methods.base.FrozenPLMMethod.learn`); rank 0 alone saves, and every rank waits
    for the save. ``folder`` must be one folder all ranks see."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    cls = PromptDiffuser if generator_class is None else generator_class
    recipe = {**PRETRAIN_RECIPE, **(recipe or {})}
    table4 = cls.settings_class()
    finetune = {k: settings.get(k, getattr(table4, k)) for k in recipe}
    folder = Path(folder)
    found = latest_folder(folder, CONFIG_NAME)  # the last save, also when a kill cut its swap short
    if found is not None:
        pd = cls.from_pretrained(found, plm=plm, device=plm.device)
        pd.load_training_state(found)
    else:
        pd = cls(plm, seed=seed, **settings)

    def learn(n: int) -> None:
        pd.settings = replace(pd.settings, **recipe)
        pd.learn(datasets, total_steps=n, progress_bar=progress_bar)
        pd.settings = replace(pd.settings, **finetune)

    def save() -> None:
        if is_main():
            if model_card is not None:
                pd.settings.model_card = {"training": model_card(pd)}
            with atomic_folder(folder) as tmp:
                write_model_files(tmp, pd._state_module(), pd.settings)
                pd.save_training_state(tmp)
        barrier()

    train_in_chunks(pd, steps, save_steps, learn, save, names=("steps", "save_steps"), progress_bar=progress_bar)
    return pd
