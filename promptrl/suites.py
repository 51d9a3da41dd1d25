"""Task suites: a spec file (``envs/<suite>.json``) turned into envs, experts and datasets.

>>> from promptrl import load_suite
>>> suite = load_suite("cheetah-vel")
>>> len(suite.tasks), suite.test_tasks, suite.horizon
(40, [2, 7, 15, 23, 26], 200)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

if TYPE_CHECKING:
    import minari

    from promptrl.experts import Expert

QUALITIES = ("expert", "medium", "random")
SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class SuiteSpec:
    """The data of one suite spec file."""

    name: str
    """Suite name, e.g. ``"cheetah-vel"``."""
    env_id: str
    """Gymnasium id of the env family, e.g. ``"promptrl/CheetahVel-v0"``."""
    description: str
    """One line on the reward and the task parameter."""
    goal_name: str
    """What a task's goal vector means (``"velocity"``, ``"angle"``, ...)."""
    tasks: list[list[float]]
    """Goal vector of every task, indexed by task id."""
    train_tasks: list[int]
    """Task ids used for pre-training."""
    test_tasks: list[int]
    """Task ids held out for few-shot adaptation and evaluation."""
    horizon: int
    """Episode length (the env's time limit)."""
    rtg_target: float
    """Return-to-go the Decision Transformer is conditioned on at evaluation."""
    rtg_scale: float
    """Divisor applied to returns-to-go before they enter the model."""
    obs_dim: int
    """Observation size."""
    act_dim: int
    """Action size."""
    dataset_id: str
    """Minari dataset id template with ``{task}`` and ``{quality}`` fields."""
    expert: str
    """Name of the shipped expert weights (``experts/<name>.safetensors``) or ``"scripted"``."""
    episodes: dict[str, int]
    """Default number of episodes per task for each dataset quality."""
    provenance: str
    """Where the numbers come from."""


def spec_dir() -> Path:
    """The folder holding the suite spec files."""
    return Path(__file__).parent / "specs"


def available_suites() -> list[str]:
    """Names of all suites with a spec file."""
    return sorted(p.stem for p in spec_dir().glob("*.json"))


def parse_spec(data: dict[str, Any], source: str = "<dict>") -> SuiteSpec:
    """Validate a spec's JSON data and return it as a :class:`SuiteSpec`."""
    expected = {f.name for f in fields(SuiteSpec)}
    missing, unknown = expected - set(data), set(data) - expected
    if missing or unknown:
        raise ValueError(f"malformed suite spec {source}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    spec = SuiteSpec(**data)
    n = len(spec.tasks)
    if n == 0 or any(not isinstance(g, list) or len(g) != len(spec.tasks[0]) for g in spec.tasks):
        raise ValueError(f"malformed suite spec {source}: 'tasks' must be a non-empty list of equal-length goal lists")
    for key in ("train_tasks", "test_tasks"):
        bad = [t for t in getattr(spec, key) if not isinstance(t, int) or not 0 <= t < n]
        if bad or not getattr(spec, key):
            raise ValueError(f"malformed suite spec {source}: {key!r} must be task ids in [0, {n - 1}], got {bad or 'none'}")
    if spec.horizon <= 0 or spec.rtg_scale <= 0 or spec.obs_dim <= 0 or spec.act_dim <= 0:
        raise ValueError(f"malformed suite spec {source}: horizon, rtg_scale, obs_dim and act_dim must be positive")
    if set(spec.episodes) != set(QUALITIES):
        raise ValueError(f"malformed suite spec {source}: 'episodes' must give a count for each of {QUALITIES}")
    if "{task" not in spec.dataset_id or "{quality}" not in spec.dataset_id:
        raise ValueError(f"malformed suite spec {source}: 'dataset_id' must contain {{task}} and {{quality}} fields")
    return spec


@functools.cache
def load_spec(name: str) -> SuiteSpec:
    """Read and validate ``envs/<name>.json``."""
    suites = available_suites()
    if name not in suites:
        raise ValueError(f"unknown suite {name!r}; choose one of {suites}")
    path = spec_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed suite spec {path.name}: {err}") from err
    return parse_spec(data, path.name)


class TaskSuite:
    """A suite of related tasks: its envs, split, targets, experts and datasets."""

    def __init__(self, spec: SuiteSpec):
        self.spec = spec

    def __repr__(self) -> str:
        return f"TaskSuite({self.name!r}, tasks={len(self.tasks)}, train={len(self.train_tasks)}, test={len(self.test_tasks)})"

    name = property(lambda self: self.spec.name)
    env_id = property(lambda self: self.spec.env_id)
    tasks = property(lambda self: self.spec.tasks)
    train_tasks = property(lambda self: list(self.spec.train_tasks))
    test_tasks = property(lambda self: list(self.spec.test_tasks))
    horizon = property(lambda self: self.spec.horizon)
    rtg_target = property(lambda self: self.spec.rtg_target)
    rtg_scale = property(lambda self: self.spec.rtg_scale)

    def split(self, split: str) -> list[int]:
        """Task ids of ``"train"``, ``"test"`` or ``"all"``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return {"train": self.train_tasks, "test": self.test_tasks, "all": list(range(len(self.tasks)))}[split]

    def check_task(self, task: int) -> int:
        if not isinstance(task, int) or isinstance(task, bool) or not 0 <= task < len(self.tasks):
            raise ValueError(f"task must be an integer in [0, {len(self.tasks) - 1}] for suite {self.name!r}, got {task!r}")
        return task

    def make_env(self, task: int, **kwargs: Any) -> gym.Env:
        """``gym.make(env_id, task=task, **kwargs)``."""
        return gym.make(self.env_id, task=self.check_task(task), **kwargs)

    def expert(self, task: int) -> Expert:
        """The task-conditioned expert for ``task``, with SB3's ``predict(obs, deterministic=True)``."""
        from promptrl.experts import load_expert

        return load_expert(self.spec, self.check_task(task))

    def dataset_id(self, task: int, quality: str) -> str:
        """Minari id of a task's dataset, e.g. ``promptrl/cheetah-vel/task02-expert-v0``."""
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
        return self.spec.dataset_id.format(task=self.check_task(task), quality=quality)

    def dataset(self, task: int, quality: str = "expert", episodes: int | None = None) -> minari.MinariDataset:
        """Load one task's Minari dataset, optionally only its first ``episodes`` episodes."""
        from promptrl.datasets import load_dataset

        return load_dataset(self, task, quality, episodes)

    def datasets(self, split: str = "train", quality: str = "expert") -> list[minari.MinariDataset]:
        """Load the datasets of every task in a split, in task order."""
        return [self.dataset(t, quality) for t in self.split(split)]


def load_suite(name: str) -> TaskSuite:
    """Load a task suite by name (``cheetah-dir``, ``cheetah-vel``, ``ant-dir``, ``ant-dir-ood``, ``mw-reach``)."""
    return TaskSuite(load_spec(name))
