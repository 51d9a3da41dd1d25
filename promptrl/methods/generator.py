"""The shared part of the prompt generators (the Prompt Diffuser and its VAE ablation, Table 5 of the
paper): the (x0, y) representation of a prompt, guided training and conditional generation.

x0 is a K*-step prompt window flattened as (states, actions, rewards), each feature scaled into
[-1, 1] by the training data's min/max; the condition y is the window's returns-to-go (scaled by
the PLM's return scale) and timesteps (scaled by the PLM's timestep range). A training step draws
prompt windows and history windows of the same task, computes the generative loss (L_DM for the
diffusion model, the negative ELBO for the VAE) and the frozen PLM's action loss L_DT on a prompt
generated with gradients (Eq. 13), and combines the two gradients by ``update`` (Eq. 15, 18-20).
A subclass supplies the model (``_make_model``), its loss (``_generative_loss``) and its sampler
(``_sample_x0``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from promptrl.common.config_checks import check_vector
from promptrl.common.distributed import active, average_gradients
from promptrl.common.files import CONFIG_NAME
from promptrl.data.episodes import Episode, as_task_episodes
from promptrl.data.windows import Segment, prompt_start, random_window, raw_window, stack_windows, whole_windows
from promptrl.methods.base import (
    FrozenPLMMethod,
    TrainingSettings,
    check_number,
    check_prompt_length,
    choose_rows,
    prompt_dicts,
    requested_tasks,
)
from promptrl.nn.diffusion import UPDATE_RULES, combine_gradients

TASKS_FOLDER = "tasks"
"""Subfolder of a generator's folder that holds one generator per further task (``tasks/<task>/``)."""


@dataclass
class GeneratorSettings(TrainingSettings):
    """Settings every prompt generator has (besides its model's)."""

    update: str = "projection"
    """How the generative and L_DT gradients combine: one of
    :data:`~promptrl.nn.diffusion.UPDATE_RULES` (see :func:`~promptrl.nn.diffusion.combine_gradients`)."""
    guidance_weight: float = 1.0
    """Multiplier of L_DT."""
    temperature: float = 0.5
    """Variance multiplier of the sampling noise at inference (low-temperature sampling, Eq. 16)."""
    bf16_plm: bool = False
    """bfloat16 autocast of the frozen PLM's forward (and so its backward) inside L_DT during ``learn``
    (faster where bf16 matrix units exist); the reverse chain stays in float32."""
    x_min: list[float] | None = None
    """Per-feature minimum of the (state, action, reward) tokens (set by the first ``learn``)."""
    x_max: list[float] | None = None
    """Per-feature maximum of the (state, action, reward) tokens."""
    conditions: dict[str, list[list[float]]] | None = None
    """Per task (key: task index), the conditions y of the latest ``learn`` data, drawn from at generation."""
    max_conditions: int = 200
    """Conditions kept per task (a seeded subset when the data has more windows; one 200-step
    episode has 196), so that ``config.json`` stays small."""
    target_rtg: float | None = None
    """When set, every generated prompt's return-to-go condition is this return (zero-shot: no data
    of the task, only its target return; Table 9 of the paper)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.update not in UPDATE_RULES:
            raise ValueError(f"update must be one of {UPDATE_RULES}, got {self.update!r}")
        check_number("guidance_weight", self.guidance_weight, strict=False)
        check_number("max_conditions", self.max_conditions, integer=True)
        rtg = self.target_rtg
        if rtg is not None and (not isinstance(rtg, (int, float)) or isinstance(rtg, bool) or not math.isfinite(rtg)):
            raise ValueError(f"target_rtg must be a finite number or None, got {rtg!r}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature <= 1.0:
            raise ValueError(f"temperature must be in [0, 1], got {self.temperature!r}")
        if not isinstance(self.bf16_plm, bool):
            raise ValueError(f"bf16_plm must be True or False, got {self.bf16_plm!r}")
        for name in ("x_min", "x_max"):
            check_vector(name, getattr(self, name))
        if self.x_min is not None and self.x_max is not None and len(self.x_min) != len(self.x_max):
            raise ValueError(f"x_min and x_max must have the same length, got {len(self.x_min)} and {len(self.x_max)}")
        if self.conditions is not None:
            if not isinstance(self.conditions, dict):
                raise ValueError(f"conditions must be a JSON object or None, got {type(self.conditions).__name__}")
            for task, rows in self.conditions.items():
                if not isinstance(rows, list) or not rows:
                    raise ValueError(f"conditions[{task!r}] must be a non-empty list of condition vectors")
                for row in rows:
                    check_vector(f"conditions[{task!r}]", row, len(rows[0]) if isinstance(rows[0], list) else None)


class PromptGenerator(FrozenPLMMethod):
    """Base of the conditional prompt generators of a frozen :class:`~promptrl.methods.plm.PromptDT`.

    ``learn(datasets, ...)`` (the arguments of :meth:`FrozenPLMMethod.learn`) trains the generator on
    prompts from ``datasets`` (one per task, or one dataset), guided by the frozen PLM's action loss on
    history windows of the same task. Use it twice: on the training tasks' datasets (generator
    pre-training), then on a test task's few-shot data (fine-tuning, Table 4's budget by default). The
    callback gets the generative loss (key ``generative_loss_name``) and ``loss_dt``; unless
    ``update="dm"``, also the norms of the two gradients (``grad_gen``, ``grad_dt``, before combining)
    and their cosine ``grad_cos``. Generation afterwards is conditioned on the windows of ``prompt_data``
    (the initial prompts y(tau*_initial) of Algorithm 1; default: the learned data), per task.

    A generator can serve further tasks with generators of their own (``task_generators``, e.g. one
    fine-tuned per test task as in Table 1): ``generate_prompt(task=t)`` uses this generator for the
    tasks it learned and the one of task ``t`` for the others, and raises ``ValueError`` for a task
    neither holds. ``save_pretrained`` writes them to ``tasks/<t>/`` beside this one's files and
    ``from_pretrained`` loads them back (sharing the PLM).
    """

    settings_class: ClassVar[type[GeneratorSettings]] = GeneratorSettings
    data_arg: ClassVar[str] = "datasets"
    generative_loss_name: ClassVar[str] = "loss_dm"
    """Key of the generative loss in the ``learn`` callback's dict."""

    # ------------------------------------------------------------------ for subclasses
    def _make_model(self) -> nn.Module:
        raise NotImplementedError

    def _generative_loss(self, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample_x0(
        self, y: torch.Tensor, temperature: float, keep_grad: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Generated x0 (B, x_dim) for conditions y; with ``keep_grad`` differentiable in the model; the
        noise drawn from ``generator`` (default: the method's own)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        p = self.plm.settings
        self.token_dim = p.obs_dim + p.act_dim + 1
        self.x_dim, self.y_dim = p.prompt_length * self.token_dim, 2 * p.prompt_length
        self.model = self._make_model().to(self.device)
        self.task_generators: dict[int, PromptGenerator] = {}
        """Generators of further tasks, by task (see the class docstring)."""

    def _state_module(self) -> nn.Module:
        return self.model

    def own_tasks(self) -> list[int]:
        """The tasks whose conditions this generator itself learned."""
        return sorted(int(t) for t in self.settings.conditions or {})

    def served_tasks(self) -> list[int]:
        """Every task this generator makes prompts for: its own and those of ``task_generators``."""
        return sorted(set(self.own_tasks()) | set(self.task_generators))

    def add_task_generator(self, task: int, generator: PromptGenerator) -> None:
        """Serve ``task`` with ``generator`` (of the same class and the same PLM object), which must
        have learned that task."""
        if type(generator) is not type(self):
            raise TypeError(f"generator must be a {type(self).__name__}, got {type(generator).__name__}")
        if generator.plm is not self.plm:
            raise ValueError("generator must run the same PLM object as this one (load it with plm=...)")
        if int(task) not in generator.own_tasks():
            raise ValueError(f"task={task}: the generator learned tasks {generator.own_tasks()}, not this one")
        self.task_generators[int(task)] = generator

    # ------------------------------------------------------------------ prompt <-> x0, y
    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.settings.x_min is None:
            raise RuntimeError("the model has no token bounds yet: call learn() first")
        lo = torch.tensor(self.settings.x_min, device=self.device)
        hi = torch.tensor(self.settings.x_max, device=self.device)
        return lo, torch.maximum(hi, lo + 1e-6)

    def encode(self, windows: list[tuple[np.ndarray, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw prompt windows (tuples of states, actions, rewards, rtg, timesteps, as
        :func:`~promptrl.data.windows.whole_windows` cuts them) -> normalized x0 (B, x_dim) and conditions y (B, y_dim)."""
        states, actions, rewards, rtg, timesteps = (
            torch.as_tensor(np.stack(c), device=self.device, dtype=torch.float32) for c in zip(*windows)
        )
        tokens = torch.cat([states, actions, rewards[..., None]], -1)  # (B, K*, token_dim)
        lo, hi = self._bounds()
        x0 = (2 * (tokens - lo) / (hi - lo) - 1).clamp(-1, 1).flatten(1)  # (B, K* * token_dim)
        p = self.plm.settings
        y = torch.cat([rtg / p.rtg_scale, timesteps / p.max_ep_len], -1)  # (B, 2 K*)
        return x0, y

    def _raw_prompt(self, x0: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x0, y -> raw (states, actions clamped to [-1, 1], rtg (B, K*, 1), timesteps); differentiable in x0."""
        p = self.plm.settings
        lo, hi = self._bounds()
        tokens = (x0.view(-1, p.prompt_length, self.token_dim) + 1) / 2 * (hi - lo) + lo  # (B, K*, token_dim)
        actions = tokens[..., p.obs_dim : p.obs_dim + p.act_dim].clamp(-1, 1)
        timesteps = (y[:, p.prompt_length :] * p.max_ep_len).round().long().clamp(0, p.max_ep_len - 1)
        return tokens[..., : p.obs_dim], actions, y[:, : p.prompt_length, None] * p.rtg_scale, timesteps

    def _decode(self, x0: torch.Tensor, y: torch.Tensor) -> Segment:
        """x0, y -> the PLM's (normalized) prompt segment; differentiable in x0."""
        p = self.plm.settings
        states, actions, _, timesteps = self._raw_prompt(x0, y)
        mean = torch.tensor(p.state_mean, device=self.device)
        std = torch.tensor(p.state_std, device=self.device)
        rtg = y[:, : p.prompt_length, None]  # already scaled by rtg_scale
        return Segment((states - mean) / std, actions, rtg, timesteps, torch.ones_like(rtg[..., 0]))

    # ------------------------------------------------------------------ training
    def _prepare(self, tasks: dict[int, list[Episode]], prompts: dict[int, list[Episode]]) -> None:
        s = self.settings
        check_prompt_length(tasks, self.plm.settings.prompt_length)
        if s.x_min is None:
            tokens = np.concatenate(
                [
                    np.concatenate([e.observations, e.actions, e.rewards[:, None]], 1)
                    for eps in tasks.values()
                    for e in eps
                ]
            )
            s.x_min, s.x_max = tokens.min(0).tolist(), tokens.max(0).tolist()
        self._seg_spec = self.plm._segment_spec()
        self._remember_conditions(prompts)
        self._tasks, self._task_ids = tasks, sorted(tasks)

    def _remember_conditions(self, tasks: dict[int, list[Episode]]) -> None:
        """Keep the conditions y of every whole prompt window of the data (the few-shot data after fine-tuning)."""
        length, keep = self.plm.settings.prompt_length, self.settings.max_conditions
        check_prompt_length(tasks, length)
        rng = np.random.default_rng(self.settings.seed)
        self.settings.conditions = {}
        for task, eps in tasks.items():
            y = (
                self.encode(whole_windows(eps, length, keep, rng, self.plm.settings.prompt_window == "last"))[1]
                .cpu()
                .numpy()
                .astype(np.float64)
            )
            self.settings.conditions[str(task)] = np.round(y, 6).tolist()  # float32 precision, short JSON

    def _sample_batch(self) -> tuple[torch.Tensor, torch.Tensor, Segment]:
        """``batch_size`` (prompt window, history window) pairs, each pair of one random task: x0, y, history."""
        p, rng = self.plm.settings, self._rng
        prompts, histories = [], []
        for _ in range(self.settings.batch_size):
            eps = self._tasks[self._task_ids[rng.integers(len(self._task_ids))]]
            pe = eps[rng.integers(len(eps))]
            # learn() checked that every episode holds a whole prompt; raw_window moves late starts back to fit
            prompts.append(raw_window(pe, prompt_start(len(pe), self._seg_spec, rng), p.prompt_length))
            histories.append(random_window(eps[rng.integers(len(eps))], p.context, self._seg_spec, rng))
        x0, y = self.encode(prompts)
        return x0, y, stack_windows(histories, self.device)

    def _train_step(self) -> dict[str, float]:
        s = self.settings
        x0, y, history = self._sample_batch()
        params = self._tuned_parameters()
        loss_gen = self._generative_loss(x0, y)
        grads: Sequence[torch.Tensor] = torch.autograd.grad(loss_gen, params)
        values = {self.generative_loss_name: loss_gen.item(), "loss_dt": 0.0}
        if s.update != "dm":
            generated = self._sample_x0(y, temperature=1.0, keep_grad=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=s.bf16_plm):
                loss_dt = s.guidance_weight * self._training_loss(history, self._decode(generated, y))
            g_dt = torch.autograd.grad(loss_dt, params, allow_unused=True)  # parts of a model may not generate
            g_gen = torch.cat([g.flatten() for g in grads])
            g_dt_flat = torch.cat([(torch.zeros_like(q) if g is None else g).flatten() for q, g in zip(params, g_dt)])
            if active():  # the rule combines the global gradients, as one process would on the union batch
                g_gen, g_dt_flat = average_gradients([g_gen, g_dt_flat])
            grads = combine_gradients(g_gen, g_dt_flat, s.update).split([q.numel() for q in params])
            n_gen, n_dt = g_gen.norm().item(), g_dt_flat.norm().item()
            values.update(
                loss_dt=loss_dt.item(),
                grad_gen=n_gen,
                grad_dt=n_dt,
                grad_cos=torch.dot(g_gen, g_dt_flat).item() / max(n_gen * n_dt, 1e-20),
            )
        self._apply_gradients(grads, averaged=s.update != "dm" and active())
        return values

    # ------------------------------------------------------------------ generation
    def condition_on(self, prompt_data: Any) -> None:
        """Generate from the conditions y of ``prompt_data``'s prompt windows from now on (the initial
        prompts y(tau*_initial) of Algorithm 1, line 9), per task: ``learn(data, prompt_data=prompt_data)``
        gives the same generator, as the conditions do not enter training. ``prompt_data`` is a
        MinariDataset, a list of them or ``{task: dataset}``, whose tasks the generator then serves (in
        place of those it held conditions for)."""
        p = self.plm.settings
        self._remember_conditions(as_task_episodes(prompt_data, p.obs_dim, p.act_dim, "prompt_data"))

    def _conditions(
        self, n: int, task: int | Sequence[int] | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` conditions y: from the bank of ``task`` (one task, or one per prompt), else from all;
        with ``generator`` (default: the method's own)."""
        tasks = requested_tasks(n, task)
        banks = self.settings.conditions
        if not banks:
            raise RuntimeError("the generator has no conditions yet: call learn() first")
        rows = [y for bank in banks.values() for y in bank]
        row_tasks = [int(t) for t, bank in banks.items() for _ in bank]
        idx = choose_rows(
            row_tasks, tasks, self._generator if generator is None else generator, self.device, self.zero_shot
        )
        return torch.tensor([rows[i] for i in idx], device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def generate_prompt(
        self,
        n: int = 1,
        rtg: float | None = None,
        temperature: float | None = None,
        task: int | Sequence[int] | None = None,
        conditions: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """``n`` prompts for the PLM (raw units, on the model's device): dicts of states, actions, rtg,
        timesteps and mask. Conditions come from the latest ``learn`` data of ``task`` (one index or
        one per prompt; wrappers pass their env's task), of all learned tasks when None (a task never
        learned raises ``ValueError`` unless :attr:`zero_shot`); ``rtg``
        replaces their return-to-go (e.g. zero-shot: the target return only; default: the
        ``target_rtg`` setting, if set). ``conditions`` (n, 2 K*) gives the conditions y explicitly
        (e.g. ``encode(windows)[1]``: one prompt per real window). ``generator``: draw the conditions and
        the noise from it instead of the model's own random state, which then stays untouched (a
        PromptWrapper's ``reset(seed=...)`` passes one seeded from the reset seed)."""
        p = self.plm.settings
        draws = self._draws(generator)
        if conditions is None and self.task_generators:
            tasks = requested_tasks(n, task)
            own = set(self.own_tasks())
            unserved = sorted({t for t in tasks if t is not None and t not in own and t not in self.task_generators})
            if unserved and not self.zero_shot:
                raise ValueError(
                    f"task={unserved}: this generator holds prompt generators for tasks {self.served_tasks()} only "
                    "(set its zero_shot = True to make their prompts from every task it learned)"
                )
            routed = {t for t in tasks if t in self.task_generators and t not in own}
            if routed:
                return self._generate_routed(tasks, routed, rtg, temperature, draws)
        if conditions is None:
            y = self._conditions(n, task, draws)
        elif conditions.shape != (n, self.y_dim):
            raise ValueError(f"conditions must have shape ({n}, {self.y_dim}), got {tuple(conditions.shape)}")
        else:
            y = conditions.to(self.device, torch.float32).clone()
        rtg = self.settings.target_rtg if rtg is None else rtg
        if rtg is not None:
            y[:, : p.prompt_length] = float(rtg) / p.rtg_scale
        self.model.eval()
        t = self.settings.temperature if temperature is None else temperature
        x0 = self._sample_x0(y, temperature=t, generator=draws)
        return prompt_dicts(*self._raw_prompt(x0, y))

    def _generate_routed(
        self,
        tasks: list[int | None],
        routed: set[int],
        rtg: float | None,
        temperature: float | None,
        draws: torch.Generator,
    ) -> list[dict[str, torch.Tensor]]:
        """Prompts for ``tasks`` where those in ``routed`` come from their task generators, in groups
        taken in the order of first appearance (the rest from this generator, in one call)."""
        out: list[dict[str, torch.Tensor] | None] = [None] * len(tasks)
        groups: dict[int | None, list[int]] = {}
        for i, t in enumerate(tasks):
            groups.setdefault(t if t in routed else None, []).append(i)
        for t, idx in groups.items():
            source = self if t is None else self.task_generators[t]
            task_arg = [tasks[i] for i in idx] if t is None else t
            made = source.generate_prompt(len(idx), rtg, temperature, task=task_arg, generator=draws)
            for i, prompt in zip(idx, made):
                out[i] = prompt
        return [p for p in out if p is not None]

    def set_random_seed(self, seed: int) -> None:
        """Reseed batch sampling, noise and prompt draws, of the task generators too."""
        super().set_random_seed(seed)
        for g in self.task_generators.values():
            g.set_random_seed(seed)

    def save_generator(self, folder: str | Path) -> None:
        """Save the generator alone (config + weights, no PLM, no task generators); load it with
        ``from_pretrained(folder, plm=plm)``."""
        self.save_method(folder)

    # ------------------------------------------------------------------ save / load of the task generators
    optional_files: ClassVar[tuple[str, ...]] = (f"{TASKS_FOLDER}/*/{CONFIG_NAME}", f"{TASKS_FOLDER}/*/*.safetensors")
    """The task generators' files, fetched from a Hub repo with the model's own."""

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)
        folder = Path(save_directory) / TASKS_FOLDER
        for task, g in sorted(self.task_generators.items()):
            g.save_generator(folder / str(task))
        if folder.is_dir():  # a folder saved over keeps no generator of a task this one no longer serves
            for sub in folder.iterdir():
                if sub.is_dir() and sub.name not in {str(t) for t in self.task_generators}:
                    shutil.rmtree(sub)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, settings_overrides: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        model = super()._from_pretrained(model_id=model_id, settings_overrides=settings_overrides, **kwargs)
        folder = Path(model_id) / TASKS_FOLDER
        if not folder.is_dir():
            return model
        name = kwargs.get("model_name") or model_id
        subs = [f for f in folder.iterdir() if f.is_dir()]
        for sub in subs:
            if not sub.name.isdigit():
                raise ValueError(
                    f"{TASKS_FOLDER}/{sub.name} in {name}: a task generator's folder is named by its task index"
                )
        for sub in sorted(subs, key=lambda f: int(f.name)):
            g = cls.from_pretrained(sub, plm=model.plm, device=model.device, **(settings_overrides or {}))
            try:
                if g.task_generators:
                    raise ValueError("it holds task generators itself (they do not nest)")
                model.add_task_generator(int(sub.name), g)
            except ValueError as err:
                raise ValueError(f"{TASKS_FOLDER}/{sub.name} in {name}: {err}") from err
        return model
