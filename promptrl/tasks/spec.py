"""Suite spec files (``promptrl/tasks/specs/<suite>.json``) as plain, validated data.

>>> from promptrl.tasks.spec import load_spec
>>> spec = load_spec("cheetah-vel")
>>> len(spec.tasks), spec.test_tasks, spec.horizon
(40, [2, 7, 15, 23, 26], 200)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym

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
    """Name of the shipped expert weights (``promptrl/data/expert_weights/<name>.safetensors``) or ``"scripted"``."""
    episodes: dict[str, int]
    """Default number of episodes per task for each dataset quality."""
    provenance: str
    """Where the numbers come from."""

    def split(self, split: str) -> list[int]:
        """Task ids of ``"train"``, ``"test"`` or ``"all"``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return {"train": list(self.train_tasks), "test": list(self.test_tasks), "all": list(range(len(self.tasks)))}[
            split
        ]

    def check_task(self, task: int) -> int:
        """``task`` if it is a task id of this suite, else a ``ValueError`` naming the valid range."""
        if not isinstance(task, int) or isinstance(task, bool) or not 0 <= task < len(self.tasks):
            raise ValueError(
                f"task must be an integer in [0, {len(self.tasks) - 1}] for suite {self.name!r}, got {task!r}"
            )
        return task

    def task_dataset_id(self, task: int, quality: str) -> str:
        """Minari id of a task's dataset, e.g. ``promptrl/cheetah-vel/task02-expert-v0``."""
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
        return self.dataset_id.format(task=self.check_task(task), quality=quality)

    def make_env(self, task: int, **kwargs: Any) -> gym.Env:
        """``gym.make(env_id, task=task, **kwargs)`` (the envs are registered by ``import promptrl``)."""
        return gym.make(self.env_id, task=self.check_task(task), **kwargs)


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
        raise ValueError(
            f"malformed suite spec {source}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}"
        )
    spec = SuiteSpec(**data)
    n = len(spec.tasks)
    if n == 0 or any(not isinstance(g, list) or len(g) != len(spec.tasks[0]) for g in spec.tasks):
        raise ValueError(f"malformed suite spec {source}: 'tasks' must be a non-empty list of equal-length goal lists")
    for key in ("train_tasks", "test_tasks"):
        bad = [t for t in getattr(spec, key) if not isinstance(t, int) or not 0 <= t < n]
        if bad or not getattr(spec, key):
            raise ValueError(
                f"malformed suite spec {source}: {key!r} must be task ids in [0, {n - 1}], got {bad or 'none'}"
            )
    if spec.horizon <= 0 or spec.rtg_scale <= 0 or spec.obs_dim <= 0 or spec.act_dim <= 0:
        raise ValueError(f"malformed suite spec {source}: horizon, rtg_scale, obs_dim and act_dim must be positive")
    if set(spec.episodes) != set(QUALITIES):
        raise ValueError(f"malformed suite spec {source}: 'episodes' must give a count for each of {QUALITIES}")
    if "{task" not in spec.dataset_id or "{quality}" not in spec.dataset_id:
        raise ValueError(f"malformed suite spec {source}: 'dataset_id' must contain {{task}} and {{quality}} fields")
    return spec


@functools.cache
def load_spec(name: str) -> SuiteSpec:
    """Read and validate the built-in spec ``promptrl/tasks/specs/<name>.json``."""
    suites = available_suites()
    if name not in suites:
        raise ValueError(f"unknown suite {name!r}; choose one of {suites}")
    path = spec_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed suite spec {path.name}: {err}") from err
    return parse_spec(data, path.name)


def as_spec(suite: Any) -> SuiteSpec:
    """The :class:`SuiteSpec` of ``suite``: a spec, a built-in suite's name, or anything holding one as ``.spec``
    (a :class:`~promptrl.suites.TaskSuite`)."""
    if isinstance(suite, str):
        return load_spec(suite)
    spec = getattr(suite, "spec", suite)
    if not isinstance(spec, SuiteSpec):
        raise TypeError(f"suite must be a suite name, a SuiteSpec or a TaskSuite, got {type(suite).__name__}")
    return spec
