"""Adapting a frozen pre-trained Prompt-DT (the PLM) to new tasks from few-shot data: the shared base
of the prompt generators (:mod:`promptrl.methods.diffuser`, :mod:`promptrl.methods.baselines.vae`) and of the
baselines of :mod:`promptrl.methods.baselines`.

:class:`FrozenPLMMethod` holds what they have in common: settings checked on construction, the
``learn`` loop over few-shot batches of history windows (AdamW with betas (0.9, 0.95) and gradient
clip 0.25, as Table 4 of the Prompt Diffuser paper), a seeded :class:`PromptBank` of real prompt
windows per task, Stable-Baselines3-style ``predict`` and self-contained save/load (the PLM in
``plm/``, the method's weights in ``model.safetensors`` and its settings in ``config.json``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from promptrl.common.distributed import active, average_gradients, broadcast_module, rank_seed, world
from promptrl.common.files import atomic_folder, load_optimizer_tensors, optimizer_tensors
from promptrl.common.hub import CONFIG_NAME, JsonHubMixin, write_model_files
from promptrl.data.episodes import Episode, as_task_episodes
from promptrl.data.windows import Segment, SegmentSampler, whole_windows
from promptrl.methods.plm import OBS_KEYS, PromptDT, _spaces_of, action_loss, training_action_loss
from promptrl.methods.training import Callback, check_callback, check_number, train, training_budget

PLM_FOLDER = "plm"
TRAINING_STATE = "training_state"
"""Stem of the files (``.safetensors``, ``.json``) that hold a method's optimizer and random state."""
Method = TypeVar("Method", bound="FrozenPLMMethod")


# ---------------------------------------------------------------------- settings
@dataclass
class MethodSettings:
    """Settings every method has."""

    seed: int = 0
    """Seeds initialization, batches and prompt draws."""

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass
class TrainingSettings(MethodSettings):
    """Settings of a method that trains (Table 4 fine-tuning budget and optimizer by default)."""

    learning_rate: float = 1e-4
    """AdamW learning rate."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    batch_size: int = 32
    """Windows per training batch."""
    epochs: int = 20
    """Default epochs of ``learn`` (when it gets no ``total_steps``)."""
    steps_per_epoch: int = 100
    """Gradient steps per epoch."""
    steps_trained: int = 0
    """Updates done so far (all ``learn`` calls)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            not isinstance(self.betas, Sequence)
            or len(self.betas) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        check_number("learning_rate", self.learning_rate)
        check_number("weight_decay", self.weight_decay, strict=False)
        check_number("grad_clip", self.grad_clip, strict=False)
        for name in ("batch_size", "epochs", "steps_per_epoch"):
            check_number(name, getattr(self, name), integer=True)
        check_number("steps_trained", self.steps_trained, integer=True, strict=False)
        check_number("weight_decay", self.weight_decay, strict=False)
        check_number("grad_clip", self.grad_clip)
        check_number("steps_trained", self.steps_trained, integer=True, strict=False)
        for name in ("batch_size", "epochs", "steps_per_epoch"):
            check_number(name, getattr(self, name), integer=True)


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global generator (which initialization and dropout use) forked and seeded: reproducible
    results without touching the caller's random state."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % 2**63)
        yield


# ---------------------------------------------------------------------- prompt windows
def check_prompt_length(tasks: Mapping[int, list[Episode]], length: int) -> None:
    """Prompts are whole windows: every episode needs at least ``length`` steps."""
    for task, eps in tasks.items():
        if min(len(e) for e in eps) < length:
            raise ValueError(f"task {task} has episodes shorter than the prompt length {length}")


def prompt_dicts(
    states: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor, timesteps: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """Raw prompts (B, K*, ...) as the list of dicts that :func:`~promptrl.wrappers.resolve_prompt` takes."""
    mask = torch.ones(timesteps.shape, device=timesteps.device)
    return [
        {
            "states": states[i],
            "actions": actions[i],
            "rtg": rtg[i].reshape(-1, 1),
            "timesteps": timesteps[i],
            "mask": mask[i],
        }
        for i in range(len(states))
    ]


def requested_tasks(n: int, task: int | Sequence[int] | None) -> list[int | None]:
    """``task`` (one index, one per prompt, or None) as a list of ``n`` entries."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    tasks = [task] * n if task is None or isinstance(task, (int, np.integer)) else list(task)
    if len(tasks) != n:
        raise ValueError(f"task must be one task index or {n} of them, got {len(tasks)}")
    return [None if t is None else int(t) for t in tasks]


def choose_rows(
    row_tasks: Sequence[int],
    tasks: list[int | None],
    generator: torch.Generator,
    device: torch.device,
    zero_shot: bool = False,
) -> list[int]:
    """For each requested task, a uniformly drawn row of that task (of any row when the task is None).

    A task with no rows raises ``ValueError``, unless ``zero_shot``: then its row is drawn from every
    row, as for None (a prompt made without data of the task)."""
    by_task: dict[int, list[int]] = {}
    for i, t in enumerate(row_tasks):
        by_task.setdefault(int(t), []).append(i)
    missing = sorted({t for t in tasks if t is not None and t not in by_task})
    if missing and not zero_shot:
        raise ValueError(
            f"task={missing}: no few-shot data of this task was learned (learned tasks: {sorted(by_task)}); "
            "call learn() on its data first, or set the method's zero_shot = True to make its prompts from "
            "every learned task"
        )
    everything = list(range(len(row_tasks)))
    out = []
    for t in tasks:
        rows = by_task.get(t, everything) if t is not None else everything
        out.append(rows[int(torch.randint(0, len(rows), (1,), generator=generator, device=device))])
    return out


class PromptBank(nn.Module):
    """Real prompt windows (raw units) labeled with their task, kept as buffers so they are saved
    with the method; at most ``limit`` windows per task, drawn with the method's seeded generator
    (``last``: only the episodes' last windows, as the PLM's ``prompt_window="last"``)."""

    FIELDS = ("states", "actions", "rtg", "timesteps", "task")

    def __init__(self, obs_dim: int, act_dim: int, length: int, last: bool = False):
        super().__init__()
        self.length, self.last = length, last
        self.register_buffer("states", torch.zeros(0, length, obs_dim))
        self.register_buffer("actions", torch.zeros(0, length, act_dim))
        self.register_buffer("rtg", torch.zeros(0, length))
        self.register_buffer("timesteps", torch.zeros(0, length, dtype=torch.long))
        self.register_buffer("task", torch.zeros(0, dtype=torch.long))

    def __len__(self) -> int:
        return self.task.shape[0]

    def fill(self, tasks: Mapping[int, list[Episode]], limit: int, rng: np.random.Generator) -> None:
        """Replace the contents by whole windows of ``tasks`` (a random ``limit`` of each task's)."""
        check_prompt_length(tasks, self.length)
        rows: list[tuple[int, tuple[np.ndarray, ...]]] = []
        for task, eps in tasks.items():
            rows += [(task, w) for w in whole_windows(eps, self.length, limit, rng, self.last)]
        device = self.task.device
        cols = [np.stack(c) for c in zip(*(w for _, w in rows))]  # states, actions, rewards, rtg, timesteps
        self.states, self.actions = (torch.as_tensor(c, dtype=torch.float32, device=device) for c in cols[:2])
        self.rtg = torch.as_tensor(cols[3], dtype=torch.float32, device=device)
        self.timesteps = torch.as_tensor(cols[4], device=device).long()
        self.task = torch.tensor([t for t, _ in rows], dtype=torch.long, device=device)

    def sample(
        self, n: int, task: int | Sequence[int] | None, generator: torch.Generator, zero_shot: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """``n`` prompts (raw units) of ``task`` (one index, one per prompt, or None: any learned task;
        a task with no windows: see :func:`choose_rows`)."""
        tasks = requested_tasks(n, task)
        if len(self) == 0:
            raise RuntimeError("there are no prompts yet: call learn() first")
        rows = choose_rows(self.task.tolist(), tasks, generator, self.task.device, zero_shot)
        idx = torch.tensor(rows, device=self.task.device)
        return prompt_dicts(self.states[idx], self.actions[idx], self.rtg[idx], self.timesteps[idx])

    def observation(self, idx: Sequence[int]) -> dict[str, np.ndarray]:
        """Windows ``idx`` as numpy arrays keyed like a PromptWrapper observation (for ``PromptDT._segment``)."""
        d = prompt_dicts(self.states[idx], self.actions[idx], self.rtg[idx], self.timesteps[idx])
        return {k: np.stack([p[k].cpu().numpy() for p in d]) for k in OBS_KEYS}

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The number of windows depends on the data: take the saved shapes.
        for name in self.FIELDS:
            if prefix + name in state_dict:
                saved = state_dict[prefix + name]
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype, device=self.task.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---------------------------------------------------------------------- the base class
def _check_given_plm(plm: PromptDT, folder: Path) -> None:
    """A ``ValueError`` naming ``plm=`` if the folder keeps the PLM it was trained with (``plm/``) and the
    given one differs in what the method's weights are sized by (state and action sizes)."""
    saved = folder / PLM_FOLDER / CONFIG_NAME
    if not saved.is_file():
        return
    config = json.loads(saved.read_text())
    given = {"obs_dim": plm.settings.obs_dim, "act_dim": plm.settings.act_dim}
    if any(config.get(k) != v for k, v in given.items()):
        raise ValueError(
            f"plm: the given PLM has obs_dim={given['obs_dim']}, act_dim={given['act_dim']} (suite "
            f"{plm.settings.suite!r}), but {folder} was trained on a PLM with obs_dim={config.get('obs_dim')}, "
            f"act_dim={config.get('act_dim')} (suite {config.get('suite')!r}, in {PLM_FOLDER}/)"
        )


class FrozenPLMMethod(
    JsonHubMixin,
    library_name="promptrl",
    license="mit",
    tags=["reinforcement-learning", "decision-transformer", "offline-rl"],
):
    """Base of every method that adapts a pre-trained :class:`PromptDT` (the PLM) with few-shot data.

    :param plm: the pre-trained Prompt-DT; frozen (its parameters never change).
    :param env: optional; its sizes must match the PLM's (kept for the SB3-style signature).
    :param hyperparams: fields of the method's settings dataclass (``settings_class``).
    """

    settings_class: ClassVar[type[MethodSettings]] = MethodSettings
    requires_prompt: ClassVar[bool | None] = True
    """True: the PLM must use prompts; False: it must not (MT-ORL); None: either."""
    data_arg: ClassVar[str] = "few_shot_data"
    """Name of ``learn``'s data argument (in error messages)."""
    missing_file_hint: ClassVar[str] = (
        f"a method's folder holds its PLM in {PLM_FOLDER}/ (or pass plm= to from_pretrained)"
    )
    zero_shot: bool = False
    """False: asking for the prompt of a task whose data was never learned raises ``ValueError``.
    True: such a prompt is made from every learned task instead (zero-shot use, e.g. Table 9 of the
    paper). Set it on an instance (``method.zero_shot = True``); it is not saved."""

    def __init__(self, plm: PromptDT, env: Any = None, **hyperparams: Any):
        name = type(self).__name__
        valid = {f.name for f in fields(self.settings_class)}
        unknown = set(hyperparams) - valid
        if unknown:
            raise TypeError(f"unknown {name} hyperparameters {sorted(unknown)}; valid: {sorted(valid)}")
        self.settings = self.settings_class(**hyperparams)
        if not isinstance(plm, PromptDT):
            raise TypeError(f"plm must be a PromptDT, got {type(plm).__name__}")
        if self.requires_prompt and not plm.settings.use_prompt:
            raise ValueError(
                f"the PLM was trained without prompts (MT-ORL): {name} needs a prompt-conditioned Prompt-DT"
            )
        if self.requires_prompt is False and plm.settings.use_prompt:
            raise ValueError(
                f"{name} is for a PLM trained without prompts (PromptDT(..., use_prompt=False)); this one uses prompts"
            )
        self.env_task = self._env_task(env, plm)
        self.plm = self._adopt(plm)
        self.device = self.plm.device
        seed = self.settings.seed
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self._rng = np.random.default_rng(seed)
        self._optimizer: torch.optim.Optimizer | None = None
        self._optimizer_state: dict[str, torch.Tensor] | None = None  # loaded, applied when the optimizer is made
        self._dropout_state: dict[str, torch.Tensor] | None = None  # torch's generators, carried between learn calls
        self._sampler: SegmentSampler | None = None
        self.bank: PromptBank | None = None
        with seeded_torch(seed, self.device):
            self._build()

    @staticmethod
    def _env_task(env: Any, plm: PromptDT) -> tuple[str, int] | None:
        """Check the env's sizes; return its (suite, task) when it is a promptrl task env."""
        if env is None:
            return None
        obs_dim, act_dim, _ = _spaces_of(env)
        if (obs_dim, act_dim) != (plm.settings.obs_dim, plm.settings.act_dim):
            raise ValueError(
                f"env sizes ({obs_dim}, {act_dim}) do not match the PLM's ({plm.settings.obs_dim}, {plm.settings.act_dim})"
            )
        base = getattr(env, "unwrapped", None)
        suite, task = getattr(base, "suite", None), getattr(base, "task", None)
        return (suite, int(task)) if isinstance(suite, str) and isinstance(task, (int, np.integer)) else None

    # ------------------------------------------------------------------ hooks for subclasses
    def _adopt(self, plm: PromptDT) -> PromptDT:
        """The PLM this method runs (default: the given one, frozen and in eval mode)."""
        plm.network.requires_grad_(False).eval()
        return plm

    def _build(self) -> None:
        """Create the method's modules (runs under the method's seed); default: an empty module and,
        for a prompt-conditioned PLM, a :class:`PromptBank`."""
        p = self.plm.settings
        self.module = nn.Module()
        if p.use_prompt:
            self.bank = self.module.bank = PromptBank(
                p.obs_dim, p.act_dim, p.prompt_length, p.prompt_window == "last"
            ).to(self.device)

    def _state_module(self) -> nn.Module:
        """Everything saved in ``model.safetensors``: tuned parameters and buffers."""
        return self.module

    def _tuned_parameters(self) -> list[nn.Parameter]:
        """The parameters this method changes (counted by :meth:`num_parameters`)."""
        return list(self._state_module().parameters())

    def _pretrained(self) -> PromptDT:
        """The pre-trained PLM as given (saved in ``plm/``)."""
        return self.plm

    def _forward(self, history: Segment, prompt: Segment | None, last_only: bool = False) -> torch.Tensor:
        """The adapted model's action predictions (B, K, act_dim); ``last_only``: (B, 1, act_dim), see
        :meth:`~promptrl.nn.transformer.PromptDTNetwork.forward`."""
        return self.plm.network(history, prompt, last_only=last_only)

    def _prepare(self, tasks: dict[int, list[Episode]], prompts: dict[int, list[Episode]]) -> None:
        """Called by ``learn`` before training; default: fill the prompt bank with windows of ``prompts``
        (``max_prompts`` per task) and, for a method that trains, make a seeded sampler of
        (history, prompt) windows."""
        if self.bank is not None:
            self.bank.fill(prompts, getattr(self.settings, "max_prompts", 1000), self._rng)
        if self._tuned_parameters():
            self._make_sampler(tasks, prompts if self.plm.settings.use_prompt else None)

    def _train_step(self) -> dict[str, float]:
        """One update; default: a gradient step on the action loss of a few-shot batch."""
        history, prompt = self._sampler.sample(self._per_task, self.device)
        loss = self._training_loss(history, prompt)
        self._apply_gradients(torch.autograd.grad(loss, self._tuned_parameters()))
        return {"loss": loss.item()}

    def _training_loss(self, history: Segment, prompt: Segment | None) -> torch.Tensor:
        """The action loss a training step differentiates: :meth:`loss` in a single process; under a
        process group this rank's share of the masked mean over all ranks' batches
        (:func:`~promptrl.methods.plm.training_action_loss`)."""
        if not active():
            return self.loss(history, prompt)
        return training_action_loss(self._forward(history, prompt), history)

    # ------------------------------------------------------------------ shared machinery
    def _make_sampler(self, tasks: dict[int, list[Episode]], prompts: dict[int, list[Episode]] | None) -> None:
        self._per_task = max(1, self.settings.batch_size // len(tasks))
        seed = rank_seed(int(self._rng.integers(2**31)))  # under a process group: a stream per rank
        self._sampler = SegmentSampler(tasks, prompts, self.plm._segment_spec(), seed=seed)

    def _apply_gradients(self, grads: Sequence[torch.Tensor], averaged: bool = False) -> None:
        """Set the tuned parameters' gradients, clip their norm and take an AdamW step. Under a process
        group the gradients are first averaged over the ranks (unless ``averaged`` says they are), so
        that clipping and the step see the global gradient and every rank's weights stay equal."""
        params, s = self._tuned_parameters(), self.settings
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(params, lr=s.learning_rate, betas=s.betas, weight_decay=s.weight_decay)
            if self._optimizer_state is not None:
                load_optimizer_tensors(self._optimizer, self._optimizer_state, "adamw")
                self._optimizer_state = None
        if not averaged:
            grads = average_gradients(grads)
        for q, g in zip(params, grads):
            q.grad = g.detach().view_as(q)
        torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        self._optimizer.step()

    def _learning_data(self, data: Any, prompt_data: Any) -> tuple[Any, Any]:
        """``learn``'s data and prompt data as the method uses them (data None: nothing to learn)."""
        if data is None:
            raise TypeError(f"{type(self).__name__}.learn() needs {self.data_arg}")
        return data, prompt_data

    def _train(self, total: int, callback: Callback | None, progress_bar: bool) -> None:
        seed = self.settings.seed * 1_000_003 + self.settings.steps_trained
        where = world()
        if where.size > 1:  # data-parallel: batches and noise drawn per rank, from rank 0's weights
            self._rng = np.random.default_rng(rank_seed(int(self._rng.integers(2**31)), where))
            self._generator.manual_seed(rank_seed(seed, where))
            broadcast_module(self._state_module())
        # Dropout masks come from torch's global generator: fork it, seeded by the settings and the updates done
        # on the first learn (and after a DDP re-seed), then carried on from the previous learn call.
        with seeded_torch(rank_seed(seed, where), self.device):
            if self._dropout_state is not None and where.size == 1:
                torch.set_rng_state(self._dropout_state["cpu"])
                if "cuda" in self._dropout_state and self.device.type == "cuda":
                    torch.cuda.set_rng_state(self._dropout_state["cuda"], self.device)
            try:
                train(self, self._state_module(), self._train_step, total, callback, progress_bar)
            finally:
                self._dropout_state = {"cpu": torch.get_rng_state()}
                if self.device.type == "cuda":
                    self._dropout_state["cuda"] = torch.cuda.get_rng_state(self.device)

    def save_training_state(self, folder: str | Path) -> None:
        """Write into ``folder`` what the rest of a training run draws on besides the weights: the AdamW
        moments, the numpy generator of batches, the torch generator of noise and the dropout stream
        (``training_state.safetensors`` and ``.json``); :meth:`load_training_state` restores them."""
        folder = Path(folder)
        tensors = {"rng.noise": self._generator.get_state()}
        tensors.update({f"rng.dropout.{k}": v for k, v in (self._dropout_state or {}).items()})
        if self._optimizer is not None:
            tensors.update(optimizer_tensors(self._optimizer, "adamw"))
        save_file(tensors, str(folder / f"{TRAINING_STATE}.safetensors"))
        state = {"rng": self._rng.bit_generator.state, "steps_trained": self.settings.steps_trained}
        (folder / f"{TRAINING_STATE}.json").write_text(json.dumps(state))

    def load_training_state(self, folder: str | Path) -> bool:
        """Restore what :meth:`save_training_state` wrote to ``folder`` (False, changing nothing, when it
        holds none or one of another step than the loaded weights)."""
        folder = Path(folder)
        files = folder / f"{TRAINING_STATE}.json", folder / f"{TRAINING_STATE}.safetensors"
        if not all(f.is_file() for f in files):
            return False
        state = json.loads(files[0].read_text())
        if state.get("steps_trained") != self.settings.steps_trained:
            return False
        tensors = load_file(str(files[1]))
        self._rng.bit_generator.state = state["rng"]
        self._generator.set_state(tensors["rng.noise"])
        dropout = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith("rng.dropout.")}
        self._dropout_state = dropout or None
        self._optimizer_state = {k: v for k, v in tensors.items() if k.startswith("adamw.")}
        if self._optimizer is not None:
            load_optimizer_tensors(self._optimizer, self._optimizer_state, "adamw")
            self._optimizer_state = None
        return True

    # ------------------------------------------------------------------ public API
    def learn(
        self: Method,
        few_shot_data: Any = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        callback: Callback | None = None,
        progress_bar: bool = True,
        prompt_data: Any = None,
        total_steps: int | None = None,
    ) -> Method:
        """Adapt to the tasks of ``few_shot_data`` (a MinariDataset, a list of them or ``{task: dataset}``);
        returns self. Only methods that need no data may go without it (:class:`~promptrl.methods.baselines.FixedPrompt` built
        with a task env, :class:`~promptrl.methods.baselines.MTORL`).

        :param epochs: epochs of ``steps_per_epoch`` updates (defaults: the settings'), the paper's
            way of giving the budget; or give ``total_steps`` instead (not both).
        :param callback: called after every update with ``{"step", <losses>, "model"}`` (``step``:
            ``settings.steps_trained``); returning False stops.
        :param prompt_data: where prompts are cut from, per task (default: ``few_shot_data``).
        :param total_steps: the number of updates (instead of ``epochs`` x ``steps_per_epoch``).

        Under an initialized ``torch.distributed`` process group every rank calls ``learn`` with the
        same arguments and it trains data-parallel: each rank draws its own batches, gradients are
        averaged over the ranks before clipping (masked action losses normalized by the valid steps
        of all ranks' batches together) and all ranks keep equal weights; save from rank 0.
        """
        total = training_budget(total_steps, epochs, steps_per_epoch, self.settings)
        check_callback(callback)
        data, prompt_data = self._learning_data(few_shot_data, prompt_data)
        if data is None:
            return self
        p = self.plm.settings
        if p.state_mean is None:
            raise RuntimeError("the PLM has no state statistics: pre-train it with PromptDT.learn() first")
        tasks = as_task_episodes(data, p.obs_dim, p.act_dim, self.data_arg)
        prompts = tasks if prompt_data is None else as_task_episodes(prompt_data, p.obs_dim, p.act_dim, "prompt_data")
        self._prepare(tasks, prompts)
        if self._tuned_parameters():
            self._train(total, callback, progress_bar)
        return self

    def set_random_seed(self, seed: int) -> None:
        """Reseed batch sampling, noise and prompt draws (as Stable-Baselines3's ``set_random_seed``)."""
        self.settings.seed = int(seed)
        self._generator.manual_seed(self.settings.seed)
        self._rng = np.random.default_rng(self.settings.seed)

    def num_parameters(self) -> int:
        """Parameters this method tunes (the PLM's are frozen unless the method fine-tunes them)."""
        return sum(q.numel() for q in self._tuned_parameters())

    def percentage(self) -> float:
        """:meth:`num_parameters` in percent of the PLM's parameter count (Table 1's "Percentage" row)."""
        return 100.0 * self.num_parameters() / self._pretrained().num_parameters()

    def loss(self, history: Segment, prompt: Segment | None = None) -> torch.Tensor:
        """The adapted model's action loss (Eq. 2) on a batch of (normalized) history windows."""
        return action_loss(self._forward(history, prompt), history)

    def _draws(self, generator: torch.Generator | None) -> torch.Generator:
        """The generator prompt draws come from: the method's own when ``generator`` is None, else
        ``generator`` (on another device than the method's: a generator on the method's device seeded by
        one draw from it), so that the method's own random state stays untouched."""
        if generator is None:
            return self._generator
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type == self.device.type:
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        return torch.Generator(device=self.device).manual_seed(seed)

    def generate_prompt(
        self, n: int = 1, task: int | Sequence[int] | None = None, generator: torch.Generator | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """``n`` prompts (raw units, on the method's device) for ``task`` (one index, one per prompt, or
        None), drawn from the learned prompt windows; used by PromptWrapper and ``evaluate(prompt=None)``.
        A task that was never learned raises ``ValueError`` (see :attr:`zero_shot`). For a PLM without
        prompts (MT-ORL), ``n`` empty dicts (wrappers never ask for them).
        ``generator``: draw from it instead of the method's own random state, which then stays untouched
        (a PromptWrapper's ``reset(seed=...)`` passes one seeded from the reset seed)."""
        if self.bank is None:
            return [{} for _ in requested_tasks(n, task)]
        return self.bank.sample(n, task, self._draws(generator), self.zero_shot)

    def predict(
        self, observation: Mapping[str, Any], state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        """The adapted model's action for a PromptWrapper observation, as in Stable-Baselines3 (batched if the observation is)."""
        self._state_module().eval()
        return self.plm._predict_with(self._forward, observation)

    # ------------------------------------------------------------------ save / load
    def _save_pretrained(self, save_directory: Path) -> None:
        self._pretrained().save_pretrained(Path(save_directory) / PLM_FOLDER)
        super()._save_pretrained(save_directory)

    def save_method(self, folder: str | Path) -> None:
        """Save the method alone (config + weights, no PLM); load it with ``from_pretrained(folder, plm=plm)``."""
        with atomic_folder(Path(folder)) as tmp:
            write_model_files(tmp, self._state_module(), self.settings)

    load_arguments: ClassVar[frozenset[str]] = frozenset({"device", "plm"})
    """``plm=`` reuses an already loaded PLM (then the folder needs no ``plm/``)."""

    @classmethod
    def _needed_files(cls, plm: PromptDT | None = None, **_: Any) -> tuple[str, ...]:
        own = super()._needed_files()
        return own if plm is not None else own + tuple(f"{PLM_FOLDER}/{name}" for name in own)

    @classmethod
    def _from_settings(
        cls: type[Method],
        folder: Path,
        settings: dict[str, Any],
        device: str | torch.device = "cpu",
        plm: PromptDT | None = None,
    ) -> Method:
        if plm is None:
            plm = PromptDT.from_pretrained(folder / PLM_FOLDER, device=device)
        elif not isinstance(plm, PromptDT):
            raise TypeError(f"plm must be a PromptDT, got {type(plm).__name__}")
        else:
            _check_given_plm(plm, folder)
        return cls(plm, **settings)
