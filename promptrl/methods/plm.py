"""PromptDT, the pre-trained language-model-style policy (PLM): multi-task, prompt-augmented
training on Minari datasets, Stable-Baselines3-style ``learn`` / ``predict``, Hub save and load.

>>> import gymnasium as gym, promptrl
>>> from promptrl.methods.plm import PromptDT
>>> model = PromptDT(gym.make("promptrl/CheetahVel-v0", task=2), embed_dim=32, n_layer=1)
>>> model.settings.context, model.settings.prompt_length
(20, 5)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from promptrl.common.config_checks import check_bool, check_optional_number, check_vector
from promptrl.common.devices import usable_device
from promptrl.common.distributed import active, barrier, data_parallel, global_sum, is_main, rank_seed, world
from promptrl.common.files import (
    atomic_folder,
    latest_folder,
    load_optimizer_tensors,
    optimizer_tensors,
    saved_steps,
)
from promptrl.common.hub import JsonHubMixin, model_card_template
from promptrl.data.episodes import Episode, as_task_episodes, state_statistics
from promptrl.data.windows import Segment, SegmentSampler, SegmentSpec, stack_windows, window
from promptrl.methods.training import Callback, check_number, train, train_in_chunks
from promptrl.nn.compiled import maybe_compile, will_compile
from promptrl.nn.transformer import PromptDTConfig, PromptDTNetwork
from promptrl.suites import TaskSuite, load_suite
from promptrl.tasks.spec import SuiteSpec

log = logging.getLogger(__name__)
OBS_KEYS = ("states", "actions", "rtg", "timesteps", "mask")
PROMPT_WINDOWS = ("random", "last")


@dataclass
class PromptDTSettings(PromptDTConfig):
    """Everything ``config.json`` holds: the architecture (:class:`PromptDTConfig`), training
    hyperparameters and normalization."""

    suite: str | None = None
    """Suite the model was built for, if any: a built-in suite's name, or its spec file's name."""
    learning_rate: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay (matrices only)."""
    warmup_steps: int = 10_000
    """Linear learning-rate warm-up."""
    batch_per_task: int = 16
    """Sequences per task in each batch."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    prompt_window: str = "last"
    """Where a prompt is cut from an expert episode, in training, for ``prompt="expert"`` and for the
    real prompt windows of the adaptation methods: ``"last"`` (its last K* steps, as the reference
    Prompt-DT code does) or ``"random"`` (a window starting anywhere; what a ``config.json``
    without this field was trained with)."""
    bf16: bool | None = None
    """bfloat16 autocast during training; None (the default) turns it on where it is faster than float32
    (see :func:`bf16_is_fast`). Rounding aside, the two train the same model."""
    bf16_inference: bool = False
    """bfloat16 autocast in ``predict`` (faster batched evaluation where bf16 matrix units exist;
    actions then differ slightly from float32)."""
    compile: bool = False
    """Compile the training loss with ``torch.compile`` (CUDA graphs) on a CUDA device; elsewhere the
    plain path runs (see :func:`promptrl.nn.compiled.maybe_compile`)."""
    rtg_target: float | None = None
    """Return-to-go the policy is conditioned on at the start of an episode (default: the suite's;
    without a suite, the first ``learn`` sets the highest episode return of its data)."""
    rtg_scale: float | None = None
    """Divisor of returns-to-go (default: the suite's; without a suite, the first ``learn`` sets the
    largest absolute episode return of its data, at least 1)."""
    state_mean: list[float] | None = None
    """Observation mean (set by the first ``learn``)."""
    state_std: list[float] | None = None
    """Observation std (set by the first ``learn``)."""
    steps_trained: int = 0
    """Gradient steps done so far."""
    model_card: dict[str, Any] | None = None
    """Markdown ``training`` / ``results`` sections of the model card, kept with the model so every save writes them."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the architecture, and its size limit
        if self.suite is not None and not isinstance(self.suite, str):
            raise ValueError(f"suite must be a suite name or None, got {self.suite!r}")
        check_number("learning_rate", self.learning_rate)
        check_number("weight_decay", self.weight_decay, strict=False)
        check_number("warmup_steps", self.warmup_steps, integer=True, strict=False)
        check_number("batch_per_task", self.batch_per_task, integer=True)
        check_number("grad_clip", self.grad_clip, strict=False)
        check_number("steps_trained", self.steps_trained, integer=True, strict=False)
        if self.prompt_window not in PROMPT_WINDOWS:
            raise ValueError(f"prompt_window must be one of {PROMPT_WINDOWS}, got {self.prompt_window!r}")
        if self.bf16 is not None:
            check_bool("bf16", self.bf16)
        check_bool("bf16_inference", self.bf16_inference)
        check_bool("compile", self.compile)
        check_optional_number("rtg_target", self.rtg_target)
        check_optional_number("rtg_scale", self.rtg_scale, positive=True)
        check_vector("state_mean", self.state_mean, self.obs_dim)
        check_vector("state_std", self.state_std, self.obs_dim, positive=True)
        if self.model_card is not None and not isinstance(self.model_card, dict):
            raise ValueError(f"model_card must be a JSON object or None, got {type(self.model_card).__name__}")

    def network_config(self) -> PromptDTConfig:
        names = {f.name for f in fields(PromptDTConfig)}
        return PromptDTConfig(**{k: v for k, v in asdict(self).items() if k in names})


def bf16_is_fast(device: str | torch.device) -> bool:
    """Whether bfloat16 autocast speeds up training on ``device``: True on a CUDA GPU with bf16 support
    or a CPU with AMX matrix units, False elsewhere (see ``benchmarks/train_step.py``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.cpu._is_amx_tile_supported())
        except AttributeError:  # a torch without the check
            return False
    return False


def training_bf16(setting: bool | None, device: str | torch.device) -> bool:
    """Whether training autocasts to bfloat16: the ``bf16`` setting, or where it is None :func:`bf16_is_fast`."""
    return bf16_is_fast(device) if setting is None else setting


def _g(value: float | None) -> str:
    return "unset" if value is None else f"{value:g}"


def plm_of(model: Any, argument: str = "model") -> PromptDT:
    """The Prompt-DT that acts for ``model`` (the model itself, or the frozen PLM of a method built on
    one), else a ``TypeError`` naming ``argument`` and what was expected."""
    plm = getattr(model, "plm", model)
    if not isinstance(plm, PromptDT):
        hint = (
            " (a folder: load it first, e.g. PromptDiffuser.from_pretrained(folder))" if isinstance(model, str) else ""
        )
        raise TypeError(
            f"{argument}: expected a PromptDT or a method built on one, got {type(model).__name__} {model!r}{hint}"
        )
    return plm


def check_action_space(space: gym.Space, act_dim: int | None = None) -> None:
    """A flat Box in [-1, 1] (of ``act_dim`` dimensions, when given): the range of the policy's tanh head."""
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise TypeError(f"env must have a flat Box action space, got {space}")
    if act_dim is not None and space.shape != (act_dim,):
        raise ValueError(f"env action space {space} does not match the model's act_dim={act_dim}")
    if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        raise ValueError(
            f"env has the action space {space}, but the policy's tanh head acts in [-1, 1]: wrap the env in "
            "gymnasium.wrappers.RescaleAction(env, -1.0, 1.0) and rescale the datasets' actions the same way"
        )


def observation_shapes(settings: PromptDTConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of one (unbatched) PromptWrapper observation for a model of these settings: the
    K-step history (``states``, ``actions``, ``rtg``, ``timesteps``, ``mask``) and, for a model that
    uses prompts, the same keys prefixed ``prompt_`` with K* steps. Dtypes: :func:`observation_dtype`."""
    s = settings
    shapes = {
        "states": (s.context, s.obs_dim),
        "actions": (s.context, s.act_dim),
        "rtg": (s.context, 1),
        "timesteps": (s.context,),
        "mask": (s.context,),
    }
    if s.use_prompt:
        shapes.update({f"prompt_{k}": (s.prompt_length, *shape[1:]) for k, shape in list(shapes.items())})
    return shapes


def observation_dtype(key: str) -> type[np.generic]:
    """The dtype of an observation entry: int64 for (``prompt_``)``timesteps``, float32 for the rest."""
    return np.int64 if key.endswith("timesteps") else np.float32


def _spaces_of(env: gym.Env | TaskSuite | str | Path) -> tuple[int, int, SuiteSpec | None]:
    if isinstance(env, (str, Path)):
        env = load_suite(env)
    if isinstance(env, TaskSuite):
        return env.spec.obs_dim, env.spec.act_dim, env.spec
    if isinstance(env, (gym.Env, gym.vector.VectorEnv)):
        obs_space = getattr(env, "single_observation_space", env.observation_space)
        act_space = getattr(env, "single_action_space", env.action_space)
        if isinstance(obs_space, gym.spaces.Dict) and "states" in obs_space.spaces:  # a PromptWrapper
            obs_space = gym.spaces.Box(-np.inf, np.inf, obs_space["states"].shape[-1:])
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise TypeError(
                f"env must have a flat Box observation space, got {obs_space}: wrap it in "
                "gymnasium.wrappers.FlattenObservation"
            )
        check_action_space(act_space)
        base = env.unwrapped if isinstance(env, gym.Env) else None
        name = getattr(base, "promptrl_suite", None) or getattr(base, "suite", None)  # see SuiteSpec.make_env
        return obs_space.shape[0], act_space.shape[0], None if name is None else load_suite(name).spec
    raise TypeError(f"env must be a gymnasium.Env, a TaskSuite or a suite name, got {type(env).__name__}")


MODEL_CARD = model_card_template("""
from promptrl import PromptDT, PromptWrapper, load_suite

model = PromptDT.from_pretrained("{{ repo_id | default("path/to/this/folder", true) }}")
env = PromptWrapper(load_suite("{{ suite }}").make_env(task=0), model, prompt="expert")
obs, info = env.reset(seed=0)
action, _ = model.predict(obs, deterministic=True)
""")


class PromptDT(
    JsonHubMixin,
    library_name="promptrl",
    license="mit",
    tags=["reinforcement-learning", "decision-transformer", "prompt-dt", "offline-rl"],
    model_card_template=MODEL_CARD,
):
    """Prompt Decision Transformer with Stable-Baselines3's call shape.

    :param env: a Gymnasium env, a :class:`TaskSuite`, a suite name or a spec file's path; sizes come from its spaces
        (actions in [-1, 1]) and return-to-go settings from its suite (without one, from the data of
        the first ``learn``).
    :param device: torch device.
    :param seed: seeds initialization and batch sampling.
    :param hyperparams: any field of :class:`PromptDTSettings`.
    """

    settings_class: ClassVar[type[PromptDTSettings]] = PromptDTSettings
    legacy_settings: ClassVar[dict[str, Any]] = {"prompt_window": "random"}  # configs saved before the field existed
    fixed_settings: ClassVar[frozenset[str]] = frozenset(
        {f.name for f in fields(PromptDTConfig)} | {"state_mean", "state_std", "rtg_scale", "suite"}
    )

    def __init__(
        self,
        env: gym.Env | TaskSuite | str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
        **hyperparams: Any,
    ):
        valid = {f.name for f in fields(PromptDTSettings)}
        unknown = set(hyperparams) - valid
        if unknown:
            raise TypeError(f"unknown PromptDT hyperparameters {sorted(unknown)}; valid: {sorted(valid)}")
        if env is not None:
            obs_dim, act_dim, spec = _spaces_of(env)
            for key, value in (("obs_dim", obs_dim), ("act_dim", act_dim)):
                if key in hyperparams and hyperparams[key] != value:
                    raise ValueError(f"{key}={hyperparams[key]} does not match the env's {value}")
                hyperparams[key] = value
            if spec is not None:
                hyperparams.setdefault("suite", spec.cli_arg)  # a built-in suite's name, or the spec file's name
                hyperparams.setdefault("rtg_target", spec.rtg_target)
                hyperparams.setdefault("rtg_scale", spec.rtg_scale)
                hyperparams.setdefault("max_ep_len", max(1000, spec.horizon))
            limit = getattr(
                getattr(env, "spec", None), "max_episode_steps", None
            )  # a gymnasium.make'd env's time limit
            if isinstance(limit, int):
                hyperparams.setdefault("max_ep_len", max(1000, limit))
        if "obs_dim" not in hyperparams or "act_dim" not in hyperparams:
            raise TypeError("PromptDT needs an env (or obs_dim and act_dim)")
        if hyperparams.get("rtg_scale") is not None and not hyperparams["rtg_scale"] > 0:
            raise ValueError(f"rtg_scale must be positive, got {hyperparams['rtg_scale']!r}")
        if hyperparams.get("prompt_window", "last") not in PROMPT_WINDOWS:
            raise ValueError(f"prompt_window must be one of {PROMPT_WINDOWS}, got {hyperparams['prompt_window']!r}")
        if not hyperparams.get("use_prompt", True):
            hyperparams["prompt_length"] = 0
        self.settings = PromptDTSettings(**hyperparams)
        self.device = usable_device(device)
        self.seed = seed
        torch.manual_seed(seed)
        self.network = PromptDTNetwork(self.settings.network_config()).to(self.device)
        self._optimizer: torch.optim.Optimizer | None = None
        self._scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self._streams: TrainingStreams | None = None  # random state carried from one learn call to the next

    # ------------------------------------------------------------------ normalization
    def _segment_spec(self) -> SegmentSpec:
        s = self.settings
        if s.state_mean is None or s.state_std is None or s.rtg_scale is None:
            raise RuntimeError("the model has no state statistics yet: call learn() first")
        return SegmentSpec(
            s.context,
            s.prompt_length,
            s.rtg_scale,
            np.asarray(s.state_mean, np.float32),
            np.asarray(s.state_std, np.float32),
            s.max_ep_len,
            s.prompt_window,
        )

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count of the network."""
        return sum(p.numel() for p in self.network.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ training
    def _configure_optimizer(self) -> None:
        decay = [p for p in self.network.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.network.parameters() if p.dim() < 2]
        s = self.settings
        self._optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=s.learning_rate,
        )
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(
            self._optimizer,
            lambda _: min(1.0, (s.steps_trained + 1) / max(1, s.warmup_steps)),  # resumes with the model
        )

    def loss(self, history: Segment, prompt: Segment | None) -> torch.Tensor:
        """Action MSE over the real (unpadded) history steps (Eq. 2)."""
        return action_loss(self.network(history, prompt), history)

    def learn(
        self,
        datasets: Any,
        total_steps: int = 1000,
        prompt_datasets: Any | None = None,
        callback: Callback | None = None,
        progress_bar: bool = True,
    ) -> PromptDT:
        """Continue multi-task training for ``total_steps`` gradient steps; returns self. Batches and
        dropout masks continue the random streams of the previous call (or of the checkpoint loaded by
        :meth:`load_checkpoint`), so ``learn(a)`` then ``learn(b)`` trains as ``learn(a + b)``.

        :param datasets: one Minari dataset per task (list, or ``{task: dataset}``), or one dataset.
        :param prompt_datasets: where prompts are cut from, per task (default: ``datasets``; give the
            expert datasets when training on lower-quality data).
        :param callback: called every step with ``{"step", "loss", "model"}`` (``step``: the model's
            ``steps_trained``); returning False stops.

        Under an initialized ``torch.distributed`` process group (e.g. started by ``torchrun``) every
        rank calls ``learn`` with the same arguments and it trains data-parallel: the network runs in
        :class:`~torch.nn.parallel.DistributedDataParallel`, each rank draws its own ``batch_per_task``
        windows per task (sampler seeded by ``promptrl.common.distributed.rank_seed``), the loss
        is normalized by the valid steps of all ranks' batches together (so a step equals one step of
        one process on the union of the batches) and the logged loss is that global loss.
        """
        check_number("total_steps", total_steps, integer=True)
        s = self.settings
        histories = as_task_episodes(datasets, s.obs_dim, s.act_dim, "datasets")
        prompts = None
        if s.use_prompt:
            prompts = (
                histories
                if prompt_datasets is None
                else as_task_episodes(prompt_datasets, s.obs_dim, s.act_dim, "prompt_datasets")
            )
        episodes = [e for eps in histories.values() for e in eps]
        longest = max(len(e) for group in (histories, prompts or {}) for eps in group.values() for e in eps)
        if longest > s.max_ep_len:
            raise ValueError(
                f"datasets hold an episode of {longest} steps, longer than max_ep_len={s.max_ep_len} (the "
                f"timestep embedding's size): construct the model with max_ep_len={longest} or more"
            )
        if s.state_mean is None:
            mean, std = state_statistics(episodes)
            s.state_mean, s.state_std = mean.tolist(), std.tolist()
        if s.rtg_target is None or s.rtg_scale is None:  # an env outside the suites: from the data
            returns = [float(e.rtg[0]) for e in episodes]
            if s.rtg_target is None:
                s.rtg_target = max(returns)
            if s.rtg_scale is None:
                s.rtg_scale = max(1.0, max(abs(r) for r in returns))
            log.info("return-to-go target %g, scale %g (from the data)", s.rtg_target, s.rtg_scale)
        sampler = SegmentSampler(histories, prompts, self._segment_spec(), seed=rank_seed(self.seed))
        if self._streams is None:  # the first learn: dropout continues torch's stream (per rank: seeded anew)
            if active():
                with torch.random.fork_rng(devices=_rng_devices(self.device)):
                    torch.manual_seed(rank_seed(self.seed + 2**32))
                    self._streams = TrainingStreams.capture(sampler, self.device)
            else:
                self._streams = TrainingStreams.capture(sampler, self.device)
        if self._optimizer is None:
            self._configure_optimizer()
        self.network.requires_grad_(True)  # a PromptDiffuser may have frozen it
        network = data_parallel(self.network, self.device)  # the network itself in a single process
        bf16 = training_bf16(s.bf16, self.device)

        compute_loss = self._training_loss(network)
        graphs = will_compile(self.device, s.compile)

        def step() -> dict[str, float]:
            history, prompt = sampler.sample(s.batch_per_task, self.device)
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = compute_loss(history, prompt)
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), s.grad_clip)
            self._optimizer.step()
            self._scheduler.step()
            return {"loss": loss.item()}

        # Batches and dropout masks continue the streams of the previous learn call (or checkpoint), so that
        # training in chunks draws what one long run draws; torch's global generator is left as it was.
        with torch.random.fork_rng(devices=_rng_devices(self.device)):
            self._streams.restore(sampler, self.device)
            try:
                train(self, self.network, step, total_steps, callback, progress_bar)
            finally:
                self._streams = TrainingStreams.capture(sampler, self.device)
        return self

    def _training_loss(self, network: torch.nn.Module) -> Callable[[Segment, Segment | None], torch.Tensor]:
        """The train step's loss through ``network`` (this network, or its DDP wrapper: then this rank's
        share of the loss over all ranks' batches), compiled when ``settings.compile`` and the device is
        CUDA; kept across ``learn`` calls so a chunked run compiles once."""
        key = (id(network), self.settings.compile)
        cached = getattr(self, "_loss_cache", None)
        if cached is None or cached[0] != key:

            def loss(history: Segment, prompt: Segment | None) -> torch.Tensor:
                if network is self.network:  # one process
                    return self.loss(history, prompt)
                return training_action_loss(network(history, prompt), history)

            self._loss_cache = (key, maybe_compile(loss, self.device, enabled=self.settings.compile))
        return self._loss_cache[1]

    # ------------------------------------------------------------------ inference
    def _check_observation(self, observation: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        s = self.settings
        if not isinstance(observation, Mapping):
            raise TypeError(
                "observation must be the dict built by PromptWrapper (keys states, actions, rtg, timesteps, mask and "
                f"prompt_*), got {type(observation).__name__}: wrap the env with promptrl.PromptWrapper"
            )
        expect = observation_shapes(s)
        missing = [k for k in expect if k not in observation]
        if missing:
            raise ValueError(f"observation is missing keys {missing}; wrap the env with promptrl.PromptWrapper")
        obs = {k: np.asarray(observation[k]) for k in expect}
        batched = obs["states"].ndim == 3
        if not batched:
            obs = {k: v[None] for k, v in obs.items()}
        for k, shape in expect.items():
            if obs[k].shape[1:] != shape:
                raise ValueError(
                    f"observation[{k!r}] must have shape {shape} (or batched (n, ...)), got {obs[k].shape[1:]}"
                )
            if np.issubdtype(observation_dtype(k), np.integer):
                if not np.issubdtype(obs[k].dtype, np.integer):
                    raise TypeError(f"observation[{k!r}] must hold integers, got {obs[k].dtype}")
                if obs[k].size and obs[k].min() < 0:
                    raise ValueError(
                        f"observation[{k!r}] holds negative timesteps ({obs[k].min()}); steps count from 0"
                    )
            elif not np.issubdtype(obs[k].dtype, np.floating):
                raise TypeError(f"observation[{k!r}] must hold floats, got {obs[k].dtype}")
            elif not np.isfinite(obs[k]).all():
                raise ValueError(f"observation[{k!r}] contains NaN or infinite values")
            elif k.endswith("mask") and not ((obs[k] == 0) | (obs[k] == 1)).all():
                raise ValueError(f"observation[{k!r}] must hold 0 (padding) or 1 (a real step) only")
        return obs, batched

    def _segment(self, obs: dict[str, np.ndarray], prefix: str = "") -> Segment:
        spec = self._segment_spec()
        mask = obs[prefix + "mask"].astype(np.float32)
        states = (obs[prefix + "states"] - spec.state_mean) / spec.state_std * mask[..., None]
        rtg = obs[prefix + "rtg"] / spec.rtg_scale * mask[..., None]
        timesteps = np.clip(obs[prefix + "timesteps"], 0, spec.max_ep_len - 1)
        arrays = (states, obs[prefix + "actions"] * mask[..., None], rtg, timesteps, mask)
        return Segment(*(torch.as_tensor(np.ascontiguousarray(a), device=self.device) for a in arrays))

    def predict(
        self, observation: Mapping[str, Any], state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        """The action for the last step of each history, as in Stable-Baselines3 (batched if the observation is)."""
        return self._predict_with(self.network, observation)

    @torch.no_grad()
    def _predict_with(
        self, forward: Callable[..., torch.Tensor], observation: Mapping[str, Any]
    ) -> tuple[np.ndarray, None]:
        """``predict`` through ``forward(history, prompt, last_only=True) -> (B, 1, act_dim)`` (this network, or an adapted one)."""
        obs, batched = self._check_observation(observation)
        self.network.eval()
        history = self._segment(obs)
        prompt = self._segment(obs, "prompt_") if self.settings.use_prompt else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.bf16_inference):
            action = forward(history, prompt, last_only=True)[:, -1].float().cpu().numpy()
        return (action if batched else action[0]), None

    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """The Hub model card; ``save_pretrained(..., model_card_kwargs={"training": ..., "results": ...})`` fills it in."""
        s = self.settings
        kwargs.setdefault(
            "title",
            f"Prompt-DT{' (MT-ORL, no prompt)' if not s.use_prompt else ''}{f' for {s.suite}' if s.suite else ''}",
        )
        kwargs.setdefault(
            "summary",
            (
                f"A Prompt Decision Transformer ({self.num_parameters():,} parameters: embed {s.embed_dim}, {s.n_layer} layers, "
                f"{s.n_head} head(s), history K={s.context}, prompt K*={s.prompt_length}) trained for {s.steps_trained:,} "
                f"gradient steps with promptrl. Observation size {s.obs_dim}, action "
                f"size {s.act_dim}; return-to-go target {_g(s.rtg_target)}, scale {_g(s.rtg_scale)}."
            ),
        )
        kwargs.setdefault("suite", s.suite or "path/to/your-suite.json")
        for key, text in (s.model_card or {}).items():
            kwargs.setdefault(key, text)
        return super().generate_model_card(*args, **kwargs)

    # ------------------------------------------------------------------ training checkpoints
    def rank_streams(self) -> list[TrainingStreams | None]:
        """The random streams of every rank (collective under a process group: call it on all ranks),
        for :meth:`save_checkpoint` on rank 0; ``[this process's]`` in a single process."""
        if not active():
            return [self._streams]
        gathered: list[Any] = [None] * world().size
        torch.distributed.all_gather_object(gathered, self._streams)
        return gathered

    def save_checkpoint(self, folder: str | Path, streams: list[TrainingStreams | None] | None = None) -> None:
        """Atomically write to ``folder`` everything the rest of a training run depends on: weights,
        config (with ``steps_trained``), optimizer moments and learning rates, and the random streams of
        batch sampling and dropout (``streams``: one per rank, from :meth:`rank_streams`; default this
        process's). A run resumed with :meth:`load_checkpoint` then trains exactly as if it never stopped
        (bit for bit on a CPU, with the same number of ranks)."""
        streams = [self._streams] if streams is None else streams
        with atomic_folder(Path(folder)) as tmp:
            self._save_pretrained(tmp)
            tensors = {} if self._optimizer is None else optimizer_tensors(self._optimizer, "adamw")
            progress: dict[str, Any] = {"seed": self.seed, "world_size": len(streams), "sampler": []}
            if self._optimizer is not None:
                progress["learning_rates"] = [g["lr"] for g in self._optimizer.param_groups]
            for r, stream in enumerate(streams):
                progress["sampler"].append(None if stream is None else stream.sampler)
                if stream is not None:
                    tensors.update({f"rng.{r}.{k}": v for k, v in stream.torch.items()})
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "progress.json").write_text(json.dumps(progress))

    @classmethod
    def load_checkpoint(cls, folder: str | Path, device: str = "cpu") -> PromptDT | None:
        """The model saved by :meth:`save_checkpoint` with its optimizer state and random streams, or
        None if there is none. Under a process group of another size than the saving one, every rank
        starts fresh streams (training goes on, but no longer as the uninterrupted run would)."""
        found = latest_folder(Path(folder), "progress.json")
        if found is None:
            return None
        model = cls._from_pretrained(model_id=str(found), device=device)
        progress = json.loads((found / "progress.json").read_text())
        model.seed = progress["seed"]
        model._configure_optimizer()
        tensors = load_file(str(found / "optimizer.safetensors")) if (found / "optimizer.safetensors").is_file() else {}
        load_optimizer_tensors(model._optimizer, tensors, "adamw")
        for group, lr in zip(model._optimizer.param_groups, progress.get("learning_rates", [])):
            group["lr"] = lr
        where, samplers = world(), progress.get("sampler", [])
        prefix = f"rng.{where.rank}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if progress.get("world_size") == where.size and len(samplers) == where.size and own:
            model._streams = TrainingStreams(samplers[where.rank], own)
        elif samplers:
            log.warning(
                "%s was saved by %s rank(s), not %d: random streams start anew", found, len(samplers), where.size
            )
        return model

    # ------------------------------------------------------------------ hub
    def _state_module(self) -> nn.Module:
        return self.network

    @classmethod
    def _from_settings(cls, folder: Path, settings: dict[str, Any], device: str | torch.device = "cpu") -> PromptDT:
        return cls(device=device, **settings)


def train_plm(
    suite: TaskSuite | str | Path,
    folder: str | Path,
    steps: int,
    *,
    quality: str = "expert",
    device: str = "cpu",
    seed: int = 0,
    checkpoint_steps: int = 1000,
    callback: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[PromptDT], None] | None = None,
    model_card: Callable[[PromptDT], str] | None = None,
    progress_bar: bool = True,
    **hyperparams: Any,
) -> PromptDT:
    """A Prompt-DT (``use_prompt=False``: MT-ORL) trained on the suite's training tasks until ``steps``
    steps are done in all, saved to ``folder/final``.

    Every ``checkpoint_steps`` steps it writes an atomic checkpoint to ``folder/checkpoint`` (then
    calls ``on_checkpoint``), and a rerun resumes from there; a rerun with more ``steps`` continues
    training. ``hyperparams`` (fields of :class:`PromptDTSettings`) apply to a new run only;
    ``model_card(model)`` gives the card's training section. Datasets of a ``quality`` other than
    expert are paired with expert prompts.

    Under an initialized ``torch.distributed`` process group every rank calls it with the same
    arguments: all ranks load the same checkpoint and train data-parallel (see :meth:`PromptDT.learn`),
    only rank 0 writes checkpoints and ``final`` and calls ``on_checkpoint`` and ``model_card``, and
    every rank waits for those writes before going on. ``folder`` must be one folder all ranks see."""
    suite = load_suite(suite)
    folder = Path(folder)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    final = folder / "final"
    if saved_steps(final) >= steps:
        return PromptDT.from_pretrained(final, device=device)
    data = suite.datasets("train", quality)
    prompts = suite.datasets("train", "expert") if quality != "expert" else None
    model = PromptDT.load_checkpoint(folder / "checkpoint", device=device) or PromptDT(
        suite, device=device, seed=seed, **hyperparams
    )

    def save() -> None:
        streams = model.rank_streams()  # collective: every rank's random state goes to rank 0
        if is_main():
            model.save_checkpoint(folder / "checkpoint", streams)
            if on_checkpoint is not None:
                on_checkpoint(model)
        barrier()

    train_in_chunks(
        model,
        steps,
        checkpoint_steps,
        lambda n: model.learn(
            data, total_steps=n, prompt_datasets=prompts, callback=callback, progress_bar=progress_bar
        ),
        save,
        names=("steps", "checkpoint_steps"),
        progress_bar=progress_bar,
    )
    if is_main():
        if model_card is not None:
            model.settings.model_card = {"training": model_card(model)}
        model.save_pretrained(final)
    barrier()
    return model


def _rng_devices(device: torch.device) -> list[torch.device]:
    """The CUDA devices whose generator training draws from (none on a CPU)."""
    return [device] if device.type == "cuda" else []


@dataclass
class TrainingStreams:
    """The random state a PLM's training draws from: the batch sampler's numpy bit-generator state
    (JSON-able; None for a sampler without a numpy ``rng``) and torch's generator states for dropout
    (``cpu``, and ``cuda`` on a GPU), uint8 tensors."""

    sampler: dict[str, Any] | None
    torch: dict[str, torch.Tensor]

    @classmethod
    def capture(cls, sampler: SegmentSampler, device: torch.device) -> TrainingStreams:
        """The sampler's state and torch's current generator states."""
        states = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(device)
        rng = getattr(sampler, "rng", None)
        return cls(None if rng is None else rng.bit_generator.state, states)

    def restore(self, sampler: SegmentSampler, device: torch.device) -> None:
        """Put these states into ``sampler`` and torch's generators."""
        if self.sampler is not None and hasattr(sampler, "rng"):
            sampler.rng.bit_generator.state = self.sampler
        if "cpu" in self.torch:
            torch.set_rng_state(self.torch["cpu"])
        if device.type == "cuda" and "cuda" in self.torch:
            torch.cuda.set_rng_state(self.torch["cuda"], device)


def action_loss(pred: torch.Tensor, history: Segment, groups: int = 1) -> torch.Tensor:
    """Action MSE of predictions ``pred`` (B, K, act_dim) over the real history steps (Eq. 2).

    With ``groups`` > 1 the batch is ``groups`` equal consecutive blocks (the same histories under
    different prompts) and the result is one loss per block, shape (groups,).
    """
    err = (pred - history.actions).pow(2).mean(-1) * history.mask  # (B, K)
    if groups == 1:
        return err.sum() / history.mask.sum()
    mask = history.mask.view(groups, -1, history.mask.shape[1])
    return err.view(groups, -1, err.shape[1]).sum((1, 2)) / mask.sum((1, 2))


def training_action_loss(pred: torch.Tensor, history: Segment) -> torch.Tensor:
    """The action loss a training step back-propagates: :func:`action_loss` in a single process.

    Under a ``torch.distributed`` process group of ``n`` ranks: this rank's sum of masked errors divided
    by the number of valid steps in all ranks' batches together (all-reduced), times ``n``. DistributedDataParallel averages
    gradients over the ranks, so the gradient is that of the masked mean over the union of the
    batches, as one process would compute it; the mean of this value over the ranks is that loss.
    """
    if not active():
        return action_loss(pred, history)
    err = (pred - history.actions).pow(2).mean(-1) * history.mask  # (B, K)
    return err.sum() * world().size / global_sum(history.mask.sum())


def prompt_from_episode(
    episode: Episode, length: int, start: int | None = None, rng: np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """A raw (un-normalized) prompt window of ``length`` steps from an episode: dict of states,
    actions, rtg (raw returns-to-go), timesteps and mask. ``start`` defaults to a random step (seeded by ``rng``)."""
    if start is None:
        start = int((rng or np.random.default_rng()).integers(0, max(1, len(episode) - length + 1)))
    spec = SegmentSpec(
        0,
        length,
        1.0,
        np.zeros(episode.observations.shape[1], np.float32),
        np.ones(episode.observations.shape[1], np.float32),
        10**9,
    )
    seg = stack_windows([window(episode, start, length, spec)])
    return {k: v[0].numpy() for k, v in zip(OBS_KEYS, seg)}
