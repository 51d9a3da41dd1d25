"""Episodes as arrays, read from Minari datasets and checked for what a Prompt-DT needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import minari
import numpy as np

ACTION_TOLERANCE = 1e-4
"""Slack on the [-1, 1] action range for float rounding in stored data."""


@dataclass
class Episode:
    """One episode as arrays: observations (T, obs_dim), actions (T, act_dim), rewards (T,) and
    returns-to-go (T,). An episode rolled out by :func:`~promptrl.data.rollouts.rollout` also keeps
    what a Minari episode records besides: the final observation (obs_dim,), the termination and
    truncation flags (T,) and its reset seed."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    rtg: np.ndarray
    final_observation: np.ndarray | None = None
    terminations: np.ndarray | None = None
    truncations: np.ndarray | None = None
    seed: int | None = None

    @classmethod
    def from_arrays(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        dtype: type | None = np.float32,
        **recorded: Any,
    ) -> Episode:
        """An episode from observations (T or T + 1 rows: a (T + 1)-th row is the final observation),
        actions (T, act_dim) and rewards (T,); ``dtype`` casts the arrays (None keeps them as given);
        ``recorded``: ``terminations``, ``truncations``, ``seed``."""
        observations, actions, rewards = (np.asarray(a, dtype) for a in (observations, actions, rewards))
        rtg = np.cumsum(rewards[::-1])[::-1].copy()
        n = len(actions)
        final = observations[n] if len(observations) > n else None
        return cls(observations[:n], actions, rewards, rtg, final_observation=final, **recorded)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        """Sum of the rewards."""
        return float(self.rewards.sum())


def episodes_of(dataset: minari.MinariDataset, obs_dim: int | None = None, act_dim: int | None = None) -> list[Episode]:
    """All episodes of a Minari dataset, checked for shape and finite values."""
    out = []
    name = dataset.spec.dataset_id
    for ep in dataset.iterate_episodes():
        if isinstance(ep.observations, dict) or np.ndim(ep.observations) != 2:
            kind = (
                f"Dict observations (keys {sorted(ep.observations)})"
                if isinstance(ep.observations, dict)
                else f"observations of shape {np.shape(ep.observations)}"
            )
            raise ValueError(
                f"dataset {name!r} has {kind}; a Prompt-DT takes flat vectors (steps, obs_dim): flatten "
                "them (as gymnasium.wrappers.FlattenObservation does) before training"
            )
        actions = np.asarray(ep.actions)
        if actions.ndim != 2 or not np.issubdtype(actions.dtype, np.floating):
            raise ValueError(
                f"dataset {name!r} has actions of shape {actions.shape} and dtype {actions.dtype}; "
                "a Prompt-DT acts in a continuous Box: (steps, act_dim) floats (discrete actions are not supported)"
            )
        e = Episode.from_arrays(ep.observations, actions, ep.rewards)
        if obs_dim is not None and e.observations.shape[1] != obs_dim:
            raise ValueError(
                f"dataset {name!r} has observations of size {e.observations.shape[1]}, the model expects {obs_dim}"
            )
        if act_dim is not None and e.actions.shape[1] != act_dim:
            raise ValueError(f"dataset {name!r} has actions of size {e.actions.shape[1]}, the model expects {act_dim}")
        if not all(np.isfinite(x).all() for x in (e.observations, e.actions, e.rewards)):
            raise ValueError(f"dataset {name!r} episode {ep.id} contains NaN or infinite values")
        if np.abs(e.actions).max(initial=0.0) > 1.0 + ACTION_TOLERANCE:
            raise ValueError(
                f"dataset {name!r} episode {ep.id} has actions in [{e.actions.min():.3g}, {e.actions.max():.3g}], but the "
                "policy's tanh head acts in [-1, 1]: rescale the actions into [-1, 1] (and wrap the env in "
                "gymnasium.wrappers.RescaleAction(env, -1.0, 1.0))"
            )
        out.append(e)
    if not out:
        raise ValueError(f"dataset {dataset.spec.dataset_id!r} has no episodes")
    return out


def dataset_task(dataset: minari.MinariDataset) -> int | None:
    """The task index a promptrl dataset was recorded on, if known: the one ``TaskSuite.dataset`` loaded
    it for, else ``task`` of its env spec (the built-in suites' envs take the task id)."""
    if getattr(dataset, "promptrl_task", None) is not None:
        return int(dataset.promptrl_task)
    env_spec = dataset.spec.env_spec
    task = env_spec.kwargs.get("task") if env_spec is not None else None
    return int(task) if isinstance(task, (int, np.integer)) else None


def state_statistics(episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (floored at 1e-6) of the observations of all episodes."""
    obs = np.concatenate([e.observations for e in episodes])
    return obs.mean(0), np.maximum(obs.std(0), 1e-6)


def as_task_episodes(data: Any, obs_dim: int, act_dim: int, arg: str) -> dict[int, list[Episode]]:
    """Accept a dataset, a list of datasets (one per task) or a {task: dataset(s)} mapping."""
    if isinstance(data, minari.MinariDataset):
        data = [data]
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        # A task's own index when the dataset records it, else its position in the list.
        items = [
            (dataset_task(d) if isinstance(d, minari.MinariDataset) and dataset_task(d) is not None else i, d)
            for i, d in enumerate(data)
        ]
    else:
        raise TypeError(
            f"{arg} must be a MinariDataset, a list of them (one per task) or a {{task: dataset}} dict, got {type(data).__name__}"
        )
    if not items:
        raise ValueError(f"{arg} is empty")
    out: dict[int, list[Episode]] = {}
    for task, ds in items:
        group = ds if isinstance(ds, Sequence) else [ds]
        for d in group:
            if not isinstance(d, minari.MinariDataset):
                raise TypeError(f"{arg} must hold MinariDataset objects, got {type(d).__name__}")
            out.setdefault(int(task), []).extend(episodes_of(d, obs_dim, act_dim))
    return out
