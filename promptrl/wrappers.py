"""Gymnasium wrappers that let a Decision-Transformer policy run in any ordinary Gymnasium loop.

A Decision Transformer needs its prompt, the return-to-go and the last K steps, not just the
current observation. :class:`PromptWrapper` keeps them and hands them over inside a ``Dict``
observation, so ``obs, info = env.reset(); action, _ = model.predict(obs)`` works unchanged.

>>> import gymnasium as gym, numpy as np, promptrl
>>> from promptrl.methods.plm import PromptDT
>>> from promptrl.wrappers import PromptWrapper
>>> env = gym.make("promptrl/CheetahVel-v0", task=2)
>>> model = PromptDT(env, embed_dim=16, n_layer=1, state_mean=[0.0] * 17, state_std=[1.0] * 17)
>>> prompt = {"states": np.zeros((5, 17)), "actions": np.zeros((5, 6)), "rtg": np.zeros((5, 1)),
...           "timesteps": np.arange(5), "mask": np.ones(5)}
>>> env = PromptWrapper(env, model, prompt=prompt)
>>> obs, info = env.reset(seed=0)
>>> action, _ = model.predict(obs)
>>> action.shape
(6,)
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from promptrl.data.episodes import episodes_of
from promptrl.methods.plm import (
    OBS_KEYS,
    PromptDT,
    check_action_space,
    observation_dtype,
    observation_shapes,
    plm_of,
    prompt_from_episode,
)

PromptSource = Mapping[str, Any] | str | Callable[[int], list[Mapping[str, Any]]] | Any


class HistoryBuffer:
    """The last K steps of ``n`` episodes, right-aligned: row ``i`` of each array is episode ``i``."""

    def __init__(self, n: int, context: int, obs_dim: int, act_dim: int):
        self.states = np.zeros((n, context, obs_dim), np.float32)
        self.actions = np.zeros((n, context, act_dim), np.float32)
        self.rtg = np.zeros((n, context, 1), np.float32)
        self.timesteps = np.zeros((n, context), np.int64)
        self.mask = np.zeros((n, context), np.float32)

    def reset(self, i: int | np.ndarray, obs: np.ndarray, rtg: float) -> None:
        """Start episode(s) ``i`` at ``obs`` with return-to-go ``rtg``."""
        for a in (self.states, self.actions, self.rtg, self.timesteps, self.mask):
            a[i] = 0
        self.states[i, -1] = obs
        self.rtg[i, -1] = rtg
        self.mask[i, -1] = 1

    def push(self, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray) -> None:
        """Record every episode's action and reward, and append its next observation."""
        self.actions[:, -1] = action
        for a in (self.states, self.actions, self.rtg, self.timesteps, self.mask):
            a[:, :-1] = a[:, 1:].copy()
        self.states[:, -1] = next_obs
        self.actions[:, -1] = 0
        self.rtg[:, -1, 0] = self.rtg[:, -2, 0] - reward
        self.timesteps[:, -1] = self.timesteps[:, -2] + 1
        self.mask[:, -1] = 1

    def observation(self, i: int | slice = slice(None)) -> dict[str, np.ndarray]:
        return {k: getattr(self, k)[i].copy() for k in OBS_KEYS}


def suite_and_task(env: Any) -> tuple[str | None, int | None]:
    """The suite (name or spec path) and task id an unwrapped env belongs to: those
    ``SuiteSpec.make_env`` attached, else the ``suite`` / ``task`` attributes of promptrl's own envs."""
    if hasattr(env, "promptrl_suite"):
        return env.promptrl_suite, env.promptrl_task
    return getattr(env, "suite", None), getattr(env, "task", None)


def resolve_prompt(
    model: PromptDT,
    prompt: PromptSource,
    rng: np.random.Generator,
    suite: str | Path | None = None,
    task: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Turn a prompt source into one raw prompt window of the model's prompt length.

    ``prompt`` may be a dict of arrays (states, actions, rtg, timesteps, mask), a Minari dataset
    (a window of its first episode, its start drawn from ``rng``), ``"expert"`` / ``"medium"`` /
    ``"random"`` (a window of the dataset of that quality for ``suite`` (a name or spec path) and ``task``), or a callable
    ``n -> [prompt dict]`` (a prompt generator; ``generator`` is passed on as in :func:`generate_prompts`).
    """
    import minari

    length = model.settings.prompt_length
    if callable(prompt) and not isinstance(prompt, Mapping):
        prompt = generate_prompts(prompt, 1, [task], [generator])[0]
    if isinstance(prompt, str):
        if suite is None or task is None or task < 0:
            raise ValueError(f"prompt={prompt!r} needs a promptrl task env; pass a prompt dict or a dataset instead")
        from promptrl.suites import load_suite

        prompt = load_suite(suite).dataset(task, prompt)
    if isinstance(prompt, minari.MinariDataset):
        episode = episodes_of(prompt, model.settings.obs_dim, model.settings.act_dim)[0]
        last = model.settings.prompt_window == "last"
        prompt = prompt_from_episode(episode, length, start=max(0, len(episode) - length) if last else None, rng=rng)
    if not isinstance(prompt, Mapping):
        raise TypeError(
            f"prompt must be a dict of arrays, a MinariDataset, a quality name or a callable, got {type(prompt).__name__}"
        )
    missing = [k for k in OBS_KEYS if k not in prompt]
    if missing:
        raise ValueError(f"prompt is missing keys {missing}")
    # generated prompts may be tensors on an accelerator
    out = {k: np.asarray(prompt[k].detach().cpu() if hasattr(prompt[k], "detach") else prompt[k]) for k in OBS_KEYS}
    if out["states"].shape != (length, model.settings.obs_dim):
        raise ValueError(
            f"prompt['states'] must have shape ({length}, {model.settings.obs_dim}) for this model, got {out['states'].shape}"
        )
    out["rtg"] = out["rtg"].reshape(length, 1)
    return {k: v.astype(np.int64 if k == "timesteps" else np.float32) for k, v in out.items()}


def generate_prompts(
    generator: Callable[..., list],
    n: int,
    tasks: list[int | None],
    draws: Sequence[torch.Generator | None] | None = None,
) -> list:
    """``n`` prompts of a prompt generator, passing the tasks (``task=``) when it accepts them.

    ``draws``: per prompt, a ``torch.Generator`` to draw it from or None. A prompt generator that
    takes ``generator=`` (as ``generate_prompt`` of every promptrl method does) makes each prompt with
    a torch.Generator in a call of its own; the others come from one batched call that draws from the
    generator's own random state (the only call when ``draws`` is None).
    """
    try:
        params = inspect.signature(generator).parameters
    except (TypeError, ValueError):
        params = {}
    known = [t if t is not None and t >= 0 else None for t in tasks]

    def call(m: int, tasks: list[int | None], **kwargs: Any) -> list:
        return generator(m, task=tasks, **kwargs) if "task" in params else generator(m, **kwargs)

    if draws is not None and len(draws) != n:
        raise ValueError(f"draws must hold one entry per prompt ({n}), got {len(draws)}")
    if draws is None or "generator" not in params or all(d is None for d in draws):
        return call(n, known)
    out: list = [None] * n
    free = [i for i, d in enumerate(draws) if d is None]
    if free:
        for i, p in zip(free, call(len(free), [known[i] for i in free])):
            out[i] = p
    for i, d in enumerate(draws):
        if d is not None:
            out[i] = call(1, [known[i]], generator=d)[0]
    return out


def prompt_draws(seed: int) -> torch.Generator:
    """The (CPU) ``torch.Generator`` a wrapper reset with ``seed`` draws generated prompts from: seeded
    from a stream of ``numpy.random.SeedSequence(seed)`` of its own, apart from the env's."""
    state = np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def start_rtg(plm: PromptDT, rtg_target: float | None) -> float:
    """The return-to-go an episode starts from: ``rtg_target``, else the model's."""
    if rtg_target is not None:
        if isinstance(rtg_target, bool) or not isinstance(rtg_target, numbers.Real) or not math.isfinite(rtg_target):
            raise ValueError(f"rtg_target: expected a finite number (the return to aim for), got {rtg_target!r}")
        return float(rtg_target)
    if plm.settings.rtg_target is None:
        raise ValueError("the model has no return-to-go target yet: call learn() first, or pass rtg_target=")
    return float(plm.settings.rtg_target)


def observation_space(model: PromptDT) -> gym.spaces.Dict:
    """The ``Dict`` observation space of a PromptWrapper for ``model``: one Box per key of
    :func:`~promptrl.methods.plm.observation_shapes`, of :func:`~promptrl.methods.plm.observation_dtype`
    (timesteps count from 0)."""
    spaces = {}
    for key, shape in observation_shapes(model.settings).items():
        dtype = observation_dtype(key)
        if np.issubdtype(dtype, np.integer):
            spaces[key] = gym.spaces.Box(0, np.iinfo(dtype).max, shape, dtype)
        else:
            spaces[key] = gym.spaces.Box(-np.inf, np.inf, shape, dtype)
    return gym.spaces.Dict(spaces)


class _Shared:
    """A constructor argument kept by reference in a wrapper's recorded arguments: ``env.spec`` (which
    deep-copies them) and ``env.spec.make()`` share the model instead of copying it."""

    def __init__(self, value: Any):
        self.value = value

    def __deepcopy__(self, memo: dict) -> _Shared:
        return self

    def __repr__(self) -> str:
        return f"<shared {type(self.value).__name__}>"


def _unshared(value: Any) -> Any:
    return value.value if isinstance(value, _Shared) else value


class PromptWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Keeps a Decision Transformer's prompt, return-to-go and K-step history; observations become dicts.

    :param env: a Gymnasium env with a flat Box observation space matching the model.
    :param model: the policy (a :class:`PromptDT` or anything holding one as ``.plm``).
    :param prompt: where the prompt comes from (see :func:`resolve_prompt`); ``None`` uses the
        model's own ``generate_prompt`` when it has one. A new prompt is drawn at every reset.
    :param rtg_target: return-to-go at the start of an episode (default: the model's).
    :param seed: seeds the choice of prompt windows until the first seeded reset.

    ``reset(seed=s)`` reseeds the prompt draws as it reseeds the env: the choice of dataset windows
    and, for a prompt generator that takes ``generator=``, its draws (from :func:`prompt_draws`
    ``(s)``; the model's own random state stays untouched), so equal seeds give equal observations,
    prompt included, and the unseeded resets after a seeded one repeat too. Before the first seeded
    reset a generator draws from its own random state. ``env.spec.make()`` builds the same wrapper, with
    the same model, around a new env.
    """

    def __init__(
        self, env: gym.Env, model: Any, prompt: PromptSource = None, rtg_target: float | None = None, seed: int = 0
    ):
        model, prompt = _unshared(model), _unshared(prompt)
        gym.utils.RecordConstructorArgs.__init__(
            self, model=_Shared(model), prompt=_Shared(prompt), rtg_target=rtg_target, seed=seed, _disable_deepcopy=True
        )
        gym.Wrapper.__init__(self, env)
        self.model = model
        plm = plm_of(model)
        obs_dim, act_dim = plm.settings.obs_dim, plm.settings.act_dim
        if env.observation_space.shape != (obs_dim,):
            raise ValueError(
                f"env observation space {env.observation_space} does not match the model's obs_dim={obs_dim}"
            )
        check_action_space(env.action_space, act_dim)
        if prompt is None and plm.settings.use_prompt:
            if not hasattr(model, "generate_prompt"):
                raise ValueError(
                    "this model has no prompt generator: pass prompt= (a dict, a dataset, 'expert' or 'random')"
                )
            prompt = model.generate_prompt
        self.plm, self.prompt_source = plm, prompt
        self.rtg_target = start_rtg(plm, rtg_target)
        self.observation_space = observation_space(plm)
        self.history = HistoryBuffer(1, plm.settings.context, obs_dim, act_dim)
        self.prompt: dict[str, np.ndarray] | None = None
        self._rng = np.random.default_rng(seed)
        self._draws: torch.Generator | None = None  # a generator's prompt draws after a seeded reset

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self.history.observation(0)
        if self.prompt is not None:
            obs.update({f"prompt_{k}": v.copy() for k, v in self.prompt.items()})
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._draws = prompt_draws(seed)
        if self.plm.settings.use_prompt:
            suite, task = suite_and_task(self.env.unwrapped)
            self.prompt = resolve_prompt(self.plm, self.prompt_source, self._rng, suite, task, self._draws)
        self.history.reset(0, obs, self.rtg_target)
        return self._obs(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.history.push(np.asarray(action, np.float32)[None], np.array([reward], np.float32), obs[None])
        return self._obs(), reward, terminated, truncated, info


class VectorPromptWrapper(gym.vector.VectorWrapper):
    """:class:`PromptWrapper` for a ``gymnasium.vector`` env: one history row per sub-env, prompts
    for all sub-envs that (re)start drawn together (one batched call for a prompt generator).

    Works with the ``NEXT_STEP`` (Gymnasium's default) and ``SAME_STEP`` autoreset modes.

    ``reset(seed=...)`` seeds each sub-env's prompt draws with its own seed (``seed + i`` for an int,
    as ``gymnasium.vector`` seeds the sub-envs, or the list's entries): sub-env ``i`` then gets the
    prompts a :class:`PromptWrapper` reset with that seed gets, at the reset and its autoresets.
    Until a sub-env's first seeded reset its prompts come from one batched call (a generator's own
    random state) and windows from a stream seeded by ``seed``.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        model: Any,
        prompt: PromptSource = None,
        rtg_target: float | None = None,
        seed: int = 0,
    ):
        super().__init__(env)
        plm = plm_of(model)
        s = plm.settings
        if env.single_observation_space.shape != (s.obs_dim,):
            raise ValueError(
                f"vector env observation space {env.single_observation_space} does not match the model's obs_dim={s.obs_dim}"
            )
        check_action_space(env.single_action_space, s.act_dim)
        self.autoreset_mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if self.autoreset_mode not in (gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP):
            raise ValueError(f"VectorPromptWrapper needs NEXT_STEP or SAME_STEP autoreset, got {self.autoreset_mode}")
        if prompt is None and s.use_prompt:
            if not hasattr(model, "generate_prompt"):
                raise ValueError(
                    "this model has no prompt generator: pass prompt= (a dict, a dataset, 'expert' or 'random')"
                )
            prompt = model.generate_prompt
        self.model, self.plm, self.prompt_source = model, plm, prompt
        self.rtg_target = start_rtg(plm, rtg_target)
        self.single_observation_space = observation_space(plm)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.history = HistoryBuffer(self.num_envs, s.context, s.obs_dim, s.act_dim)
        self.prompts: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(seed)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs  # per sub-env, after a seeded reset
        self._draws: list[torch.Generator | None] = [None] * self.num_envs
        self._restart = np.zeros(self.num_envs, bool)

    def _new_prompts(self, idx: np.ndarray) -> None:
        if not self.plm.settings.use_prompt or len(idx) == 0:
            return
        src = self.prompt_source
        suites, tasks = self._env_attr("promptrl_suite"), self._env_attr("promptrl_task")
        if all(s is None for s in suites):  # envs not made by SuiteSpec.make_env: promptrl's own attributes
            suites, tasks = self._env_attr("suite"), self._env_attr("task")
        rngs = [self._rng if self._rngs[i] is None else self._rngs[i] for i in idx]
        if callable(src) and not isinstance(src, Mapping):
            made = generate_prompts(src, len(idx), [tasks[i] for i in idx], [self._draws[i] for i in idx])
            new = [resolve_prompt(self.plm, p, rng) for p, rng in zip(made, rngs)]
        else:
            new = [resolve_prompt(self.plm, src, rng, suites[i], tasks[i]) for i, rng in zip(idx, rngs)]
        for j, i in enumerate(idx):
            for k, v in new[j].items():
                self.prompts.setdefault(k, np.zeros((self.num_envs, *v.shape), v.dtype))[i] = v

    def _env_attr(self, name: str) -> tuple:
        """A sub-env attribute (``promptrl_suite``, ``task``, ...) per sub-env, None where an env lacks it."""
        try:
            return tuple(self.env.get_attr(name))
        except AttributeError:
            return (None,) * self.num_envs

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self.history.observation()
        obs.update({f"prompt_{k}": v.copy() for k, v in self.prompts.items()})
        return obs

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if isinstance(seed, (int, np.integer)):
            seed = [int(seed) + i for i in range(self.num_envs)]  # as gymnasium.vector seeds the sub-envs
        for i, s in enumerate(seed or [None] * self.num_envs):
            if s is not None:
                self._rngs[i], self._draws[i] = np.random.default_rng(s), prompt_draws(s)
        everyone = np.arange(self.num_envs)
        self.history.reset(everyone, obs, self.rtg_target)
        self._new_prompts(everyone)
        self._restart[:] = False
        return self._obs(), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.history.push(np.asarray(actions, np.float32), np.asarray(reward, np.float32), obs)
        done = terminated | truncated
        restarted = self._restart if self.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP else done
        idx = np.flatnonzero(restarted)
        if len(idx):
            self.history.reset(idx, obs[idx], self.rtg_target)
            self._new_prompts(idx)
        self._restart = done.copy()
        return self._obs(), reward, terminated, truncated, info
