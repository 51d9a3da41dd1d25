"""Batched rollouts of a policy on one task: the episodes that become a Minari dataset.

All episodes of a call run together in a ``gymnasium.vector.SyncVectorEnv`` with one batched
``policy.predict`` per step; each sub-env gets its own seed, so a call repeats exactly. Episodes
end at different times (Ant terminates when it falls): a finished sub-env is auto-reset by the
vector env and what it does afterwards is masked out.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from promptrl.data.episodes import Episode
from promptrl.tasks.spec import SuiteSpec, as_spec


class Policy(Protocol):
    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = True): ...


class RandomPolicy:
    """Uniform random actions from an action space, seeded (SB3's ``predict`` signature)."""

    def __init__(self, action_space: gym.spaces.Box, seed: int | None = None):
        self.space = action_space
        self.rng = np.random.default_rng(seed)

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        obs = np.asarray(observation)
        n = () if obs.ndim == 1 else (len(obs),)
        action = self.rng.uniform(self.space.low, self.space.high, size=n + self.space.shape)
        return action.astype(self.space.dtype), None


def rollout(
    suite: SuiteSpec | Any,
    task: int,
    policy: Policy,
    n_episodes: int,
    seed: int = 0,
    deterministic: bool = True,
    env_kwargs: dict | None = None,
) -> list[Episode]:
    """Run ``n_episodes`` episodes of ``policy`` on ``task`` of ``suite`` (a name, spec or TaskSuite), all in
    parallel, each to termination or the horizon. The episodes keep their arrays' dtypes and their final observation."""
    suite = as_spec(suite)
    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    suite.check_task(task)
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(n_episodes)]
    envs = gym.vector.SyncVectorEnv(
        [lambda: suite.make_env(task, **(env_kwargs or {})) for _ in range(n_episodes)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    obs, _ = envs.reset(seed=seeds)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    alive = np.ones(n_episodes, bool)
    lengths = np.zeros(n_episodes, int)
    while alive.any():
        action, _ = policy.predict(obs, deterministic=deterministic)
        obs, reward, term, trunc, _ = envs.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(term)
        truncs.append(trunc)
        lengths += alive
        alive &= ~(term | trunc)
    envs.close()
    o, a, r = (
        np.stack(observations, 1),
        np.stack(actions, 1),
        np.stack(rewards, 1),
    )  # (n, T+1, obs), (n, T, act), (n, T)
    te, tr = np.stack(terms, 1), np.stack(truncs, 1)
    return [
        Episode.from_arrays(
            o[i, : n + 1], a[i, :n], r[i, :n], dtype=None, terminations=te[i, :n], truncations=tr[i, :n], seed=seeds[i]
        )
        for i, n in enumerate(lengths)
    ]
