"""Minari datasets of a suite: one per task and quality, e.g. ``promptrl/cheetah-vel/task02-expert-v0``.

Datasets live where Minari keeps them (``$MINARI_DATASETS_PATH``, default ``~/.minari/datasets``) and
load with a plain ``minari.load_dataset(id)``. Creation is idempotent and atomic: a dataset is
written into a scratch folder beside the others and renamed into place only when complete, so an
interrupted run never leaves a half-written dataset that loads as if complete. Creation is also
safe across processes: a lock file beside the dataset folder (``.<name>.lock``) lets one process
create a dataset while the others that want it wait and then load it.

Qualities: ``expert`` (the suite's expert, deterministic), ``medium`` (an earlier checkpoint of the
expert's training whose return is about halfway between random and expert, or for Meta-World the
scripted expert with action noise), ``random`` (uniform random actions).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import minari
import numpy as np
from filelock import FileLock
from minari.data_collector import EpisodeBuffer
from minari.storage import get_dataset_path
from tqdm.auto import tqdm

from promptrl.data.experts import load_expert
from promptrl.data.rollouts import Policy, RandomPolicy, rollout
from promptrl.tasks.spec import QUALITIES, SuiteSpec, as_spec, available_suites


def datasets_root() -> Path:
    """Minari's dataset folder (honours ``MINARI_DATASETS_PATH``)."""
    return Path(get_dataset_path(""))


def dataset_exists(dataset_id: str) -> bool:
    """A complete dataset with this id is on disk (scratch folders never count)."""
    return (datasets_root() / dataset_id / "data" / "metadata.json").is_file()


def dataset_lock(dataset_id: str) -> FileLock:
    """The inter-process lock of dataset ``dataset_id``: a hidden lock file beside its folder
    (Minari lists folders only, so the file never shows as a dataset)."""
    path = datasets_root() / dataset_id
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.with_name(f".{path.name}.lock"))


@contextlib.contextmanager
def _scratch_root() -> Iterator[Path]:
    """A temporary ``MINARI_DATASETS_PATH`` on the same file system as the real one."""
    root = datasets_root()
    scratch = Path(tempfile.mkdtemp(prefix=".promptrl-scratch-", dir=root))
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(scratch)
    try:
        yield scratch
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
        shutil.rmtree(scratch, ignore_errors=True)


def check_dataset_spaces(suite: SuiteSpec | Any) -> None:
    """Check every dataset of ``suite`` on disk against the spec: an observation or action shape that
    differs from ``obs_dim`` / ``act_dim`` is a ``ValueError`` naming the dataset (read from Minari's
    metadata, before any data loads)."""
    spec = as_spec(suite)
    for task in spec.split("all"):
        for quality in QUALITIES:
            dataset_id = spec.task_dataset_id(task, quality)
            path = datasets_root() / dataset_id / "data" / "metadata.json"
            if not path.is_file():
                continue
            meta = json.loads(path.read_text())
            for key, field, dim in (
                ("observation_space", "obs_dim", spec.obs_dim),
                ("action_space", "act_dim", spec.act_dim),
            ):
                space = json.loads(meta[key]) if isinstance(meta.get(key), str) else meta.get(key) or {}
                if space.get("shape") != [dim]:
                    raise ValueError(
                        f"dataset {dataset_id!r} of suite {spec.name!r}: its {key} has shape {space.get('shape')}, "
                        f"expected [{dim}] (the spec's {field})"
                    )


def _check_episodes(episodes: int) -> int:
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    return episodes


def _policy(spec: SuiteSpec, task: int, quality: str, seed: int) -> Policy:
    """The policy that writes a dataset (``load_expert`` says clearly when the spec has no expert)."""
    if quality == "random":
        return RandomPolicy(spec.make_env(task).action_space, seed=seed)
    return load_expert(spec, task, quality, seed=seed)


def create_dataset(
    suite: SuiteSpec | Any, task: int, quality: str, episodes: int | None = None, seed: int = 0
) -> minari.MinariDataset:
    """Roll out the ``quality`` policy on ``task`` of ``suite`` (a name, spec or TaskSuite) and write the
    Minari dataset (replacing nothing: raises ``FileExistsError`` if the id exists). Holds the
    dataset's :func:`dataset_lock` while it checks and writes."""
    spec = as_spec(suite)
    dataset_id = spec.task_dataset_id(task, quality)
    episodes = _check_episodes(spec.episodes[quality] if episodes is None else episodes)
    with dataset_lock(dataset_id):
        if dataset_exists(dataset_id):
            raise FileExistsError(f"dataset {dataset_id!r} already exists in {datasets_root()}")
        _write_dataset(spec, dataset_id, task, quality, episodes, seed)
    return minari.load_dataset(dataset_id)


def _write_dataset(spec: SuiteSpec, dataset_id: str, task: int, quality: str, episodes: int, seed: int) -> None:
    """Roll out and write one dataset (the caller holds its lock and has checked it is missing)."""
    run_seed = int(np.random.SeedSequence([seed, task, QUALITIES.index(quality)]).generate_state(1)[0])
    runs = rollout(spec, task, _policy(spec, task, quality, run_seed), episodes, seed=run_seed)
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=np.concatenate([ep.observations, ep.final_observation[None]]),
            actions=ep.actions,
            rewards=list(ep.rewards),
            terminations=list(ep.terminations),
            truncations=list(ep.truncations),
        )
        for i, ep in enumerate(runs)
    ]
    env = spec.make_env(task)
    returns = [ep.episode_return for ep in runs]
    description = (
        f"{spec.name} task {task} (goal {spec.tasks[task]}), {quality} data: {episodes} episodes, "
        f"mean return {np.mean(returns):.1f} +- {np.std(returns):.1f}. {spec.description}"
    )
    final = datasets_root() / dataset_id
    with _scratch_root() as scratch, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(code_permalink|author_email).*")  # the project has neither yet
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env,
            eval_env=env.spec,
            algorithm_name=f"promptrl-{quality}-policy",
            author="promptrl",
            description=description,
            requirements=["promptrl"],
        )
        final.parent.mkdir(parents=True, exist_ok=True)
        _copy_namespace_metadata(scratch, dataset_id)
        (scratch / dataset_id).rename(final)
    env.close()


def _copy_namespace_metadata(scratch: Path, dataset_id: str, name: str = "namespace_metadata.json") -> None:
    """Carry Minari's namespace metadata files (``promptrl/``, ``promptrl/<suite>/``) to the real root."""
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        src = scratch.joinpath(*parts[:depth], name)
        dst = datasets_root().joinpath(*parts[:depth], name)
        if src.is_file() and not dst.is_file():
            # atomically, through a temp file of this process: another dataset of the namespace may copy it too
            tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)


def create_datasets(
    suite: SuiteSpec | Any,
    quality: str,
    tasks: list[int] | None = None,
    episodes: int | None = None,
    seed: int = 0,
    progress_bar: bool = False,
) -> list[str]:
    """Create the missing datasets of ``tasks`` (default: all) of ``suite`` (a name, spec or TaskSuite);
    returns the ids created, reusing complete ones. Processes that create the same datasets at once
    all succeed: each dataset is written once, by whichever holds its :func:`dataset_lock` first."""
    spec = as_spec(suite)
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    tasks = spec.split("all") if tasks is None else spec.check_tasks(tasks)
    if episodes is not None:
        _check_episodes(episodes)
    created = []
    for task in tqdm(tasks, desc=f"{spec.name} {quality}", disable=not progress_bar):
        dataset_id = spec.task_dataset_id(task, quality)
        if dataset_exists(dataset_id):
            continue
        with dataset_lock(dataset_id):  # another process may be creating it: wait, then look again
            if not dataset_exists(dataset_id):
                n = spec.episodes[quality] if episodes is None else episodes
                _write_dataset(spec, dataset_id, task, quality, n, seed)
                created.append(dataset_id)
    return created


def load_dataset(suite: SuiteSpec | Any, task: int, quality: str, episodes: int | None = None) -> minari.MinariDataset:
    """Load a task's dataset of ``suite`` (a name, spec or TaskSuite), optionally restricted to its first
    ``episodes`` episodes."""
    spec = as_spec(suite)
    dataset_id = spec.task_dataset_id(task, quality)
    if not dataset_exists(dataset_id):
        how = (
            f"create it with `promptrl data {spec.ref} --quality {quality} --tasks {task}`"
            if spec.expert is not None or quality == "random"
            else "the suite's spec has no expert to create it: add the dataset with Minari"
        )
        raise FileNotFoundError(f"dataset {dataset_id!r} not found in {datasets_root()}; {how}")
    dataset = minari.load_dataset(dataset_id)
    if episodes is not None:
        if not isinstance(episodes, int) or isinstance(episodes, bool) or not 1 <= episodes <= dataset.total_episodes:
            raise ValueError(
                f"episodes must be an integer in [1, {dataset.total_episodes}] for {dataset_id!r}, got {episodes!r}"
            )
        dataset = minari.MinariDataset(dataset.storage, episode_indices=np.arange(episodes))
    dataset.promptrl_task = task  # the task id, for envs that take a goal rather than a task id (see dataset_task)
    return dataset


def suites_table(suites: Sequence[SuiteSpec | Any] | None = None) -> str:
    """A markdown table of ``suites`` (names, spec paths or specs; default: the built-in ones): envs,
    split, horizon, return-to-go settings and datasets on disk."""
    rows = [
        "| suite | env id | tasks | train | validation | test | horizon | RTG target / scale | obs / act | expert | datasets on disk |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for suite in available_suites() if suites is None else suites:
        s = as_spec(suite)
        on_disk = sum(dataset_exists(s.task_dataset_id(t, q)) for t in s.split("all") for q in QUALITIES)
        rows.append(
            f"| {s.name} | {s.env_id} | {len(s.tasks)} | {len(s.train_tasks)} | {s.validation_tasks or '—'} | "
            f"{s.test_tasks} | {s.horizon} | {s.rtg_target:g} / {s.rtg_scale:g} | {s.obs_dim} / {s.act_dim} | "
            f"{s.expert.policy if s.expert else 'none'} | {on_disk} / {len(s.tasks) * len(QUALITIES)} |"
        )
    return "\n".join(rows)
