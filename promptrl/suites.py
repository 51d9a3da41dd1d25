"""The suite facade: one object per task suite that hands out its envs, experts and Minari datasets.

>>> from promptrl import load_suite
>>> suite = load_suite("cheetah-vel")
>>> len(suite.tasks), suite.test_tasks, suite.horizon
(40, [2, 7, 15, 23, 26], 200)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np

from promptrl.data.datasets import check_dataset_spaces, load_dataset
from promptrl.data.experts import Expert, load_expert
from promptrl.tasks.spec import QUALITIES, SPLITS, SuiteSpec, available_suites, import_entry_point, load_spec

__all__ = ["QUALITIES", "SPLITS", "SuiteSpec", "TaskSuite", "available_suites", "load_suite"]


class TaskSuite:
    """A suite of related tasks: its envs, split, targets, experts and datasets.

    :param spec: the suite's validated spec (see :func:`promptrl.tasks.spec.parse_spec`); :meth:`check`
        checks it against its env, expert and datasets (:func:`load_suite` does).
    """

    def __init__(self, spec: SuiteSpec):
        if not isinstance(spec, SuiteSpec):
            raise TypeError(
                f"spec must be a SuiteSpec (use load_suite(name) for a built-in suite), got {type(spec).__name__}"
            )
        self.spec = spec

    def __repr__(self) -> str:
        return f"TaskSuite({self.name!r}, tasks={len(self.tasks)}, train={len(self.train_tasks)}, test={len(self.test_tasks)})"

    name = property(lambda self: self.spec.name)
    ref = property(lambda self: self.spec.ref)
    env_id = property(lambda self: self.spec.env_id)
    tasks = property(lambda self: self.spec.tasks)
    train_tasks = property(lambda self: list(self.spec.train_tasks))
    validation_tasks = property(lambda self: list(self.spec.validation_tasks))
    test_tasks = property(lambda self: list(self.spec.test_tasks))
    horizon = property(lambda self: self.spec.horizon)
    rtg_target = property(lambda self: self.spec.rtg_target)
    rtg_scale = property(lambda self: self.spec.rtg_scale)

    def check(self) -> TaskSuite:
        """Check the spec against what it names, before any compute: its env builds with the spec's
        space sizes, its expert's entry point imports, and its datasets on disk have the env's
        spaces. Each problem is a ``ValueError`` naming the field; returns the suite."""
        key = id(self.spec)
        if key not in _CHECKED:
            self.spec.check_env()
            expert = self.spec.expert
            if expert is not None and expert.policy == "scripted":
                try:
                    factory = import_entry_point(expert.entry_point, self.spec.source)
                except (ImportError, ValueError) as err:
                    raise ValueError(
                        f"suite spec {self.name!r}: field 'expert.entry_point' = {expert.entry_point!r}: expected "
                        f"an importable factory ({err})"
                    ) from err
                try:  # as Expert builds it: factory(goal, **kwargs), for task 0
                    factory(np.asarray(self.spec.tasks[0], dtype=np.float64), **expert.kwargs)
                except Exception as err:
                    raise ValueError(
                        f"suite spec {self.name!r}: fields 'expert.entry_point' = {expert.entry_point!r} and "
                        f"'expert.kwargs' = {expert.kwargs!r}: expected a factory that builds a policy from "
                        f"factory(goal, **kwargs); for task 0 it raised {type(err).__name__}: {err}"
                    ) from err
            _CHECKED[key] = self.spec
        check_dataset_spaces(self.spec)
        return self

    def split(self, split: str) -> list[int]:
        """Task ids of ``"train"``, ``"validation"``, ``"test"`` or ``"all"``."""
        return self.spec.split(split)

    @property
    def selection_split(self) -> str:
        """The split that choices (checkpoints, temperatures, rules) read: ``"validation"``, or
        ``"train"`` for a suite without validation tasks. Never ``"test"``; a suite whose training tasks
        are also its test tasks (cheetah-dir) gets a warning, since its choices then read them."""
        split = "validation" if self.split("validation") else "train"
        shared = sorted(set(self.split(split)) & set(self.split("test")))
        if shared:
            warnings.warn(
                f"suite {self.name!r}: its {split} tasks {shared} are also test tasks, so a choice made on them "
                "reads the test tasks (the suite has no other tasks)",
                stacklevel=2,
            )
        return split

    def check_task(self, task: int) -> int:
        """``task`` if it is a task id of this suite, else a ``ValueError``."""
        return self.spec.check_task(task)

    def make_env(self, task: int, **kwargs: Any) -> gym.Env:
        """``gym.make(env_id, task=task, **kwargs)``."""
        return self.spec.make_env(task, **kwargs)

    def expert(self, task: int) -> Expert:
        """The task-conditioned expert for ``task``, with SB3's ``predict(obs, deterministic=True)``."""
        return load_expert(self.spec, self.check_task(task))

    def dataset_id(self, task: int, quality: str) -> str:
        """Minari id of a task's dataset, e.g. ``promptrl/cheetah-vel/task02-expert-v0``."""
        return self.spec.task_dataset_id(task, quality)

    def dataset(self, task: int, quality: str = "expert", episodes: int | None = None) -> minari.MinariDataset:
        """Load one task's Minari dataset, optionally only its first ``episodes`` episodes."""
        return load_dataset(self.spec, task, quality, episodes)

    def datasets(self, split: str = "train", quality: str = "expert") -> list[minari.MinariDataset]:
        """Load the datasets of every task in a split, in task order."""
        return [self.dataset(t, quality) for t in self.split(split)]


_CHECKED: dict[int, SuiteSpec] = {}
"""Specs whose env and expert were checked (by ``id``; the value keeps the spec alive)."""


def load_suite(suite: str | Path | SuiteSpec | TaskSuite) -> TaskSuite:
    """Load a task suite: a built-in one by name (``cheetah-dir``, ``cheetah-vel``, ``ant-dir``,
    ``ant-dir-ood``, ``mw-reach``, ``mw-push``, ``mw-pick-place``), a spec file by its path
    (``"my-suite.json"``), or a :class:`SuiteSpec`; checked with :meth:`TaskSuite.check`. A
    :class:`TaskSuite` is returned as it is."""
    if isinstance(suite, TaskSuite):
        return suite
    return TaskSuite(suite if isinstance(suite, SuiteSpec) else load_spec(suite)).check()
