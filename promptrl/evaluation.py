"""Batched evaluation: every task x episode of a split runs at once in a ``gymnasium.vector`` env
with one batched model forward per step. Works with anything that has a PromptDT ``predict``.

An evaluation is a fixed work list of episodes (:func:`episode_plan`: task, episode index, reset
seed); ``evaluate(..., episodes=part)`` runs only a part of it, and :func:`merge_results` puts the
parts back together by key, equal to the result of one call over the whole list.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from promptrl.common.files import CONFIG_NAME, atomic_folder, csv_text, latest_folder, saved_steps, write_text_atomic
from promptrl.common.statistics import mean_ci, sample_std
from promptrl.methods.plm import plm_of
from promptrl.suites import TaskSuite, load_suite
from promptrl.wrappers import HistoryBuffer, PromptSource, generate_prompts, resolve_prompt


@dataclass
class EvalResult:
    """Episode returns of an evaluation, ``returns[task]`` one value per episode."""

    suite: str
    split: str
    returns: dict[int, list[float]]
    episodes: dict[int, list[int]] | None = None
    """The episode index (in :func:`episode_plan`) of each return, ``episodes[task][i]`` for ``returns[task][i]``."""

    @property
    def mean(self) -> float:
        return float(np.mean([np.mean(r) for r in self.returns.values()]))

    @property
    def std(self) -> float:
        """Sample std (ddof=1) over tasks of the per-task means; 0.0 for one task."""
        return sample_std([float(np.mean(r)) for r in self.returns.values()]) or 0.0

    def task_std(self, task: int) -> float:
        """Sample std (ddof=1) of one task's episode returns; 0.0 for one episode."""
        return sample_std(self.returns[task]) or 0.0

    def task_ci(self, task: int) -> tuple[float, float] | None:
        """The 95% confidence interval (t) of one task's mean return over its episodes; None for one episode."""
        return mean_ci(self.returns[task])

    def table(self) -> str:
        rows = ["| task | mean | std | 95% CI | episodes |", "|---|---|---|---|---|"]
        for t, r in self.returns.items():
            ci = self.task_ci(t)
            interval = "—" if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"
            rows.append(f"| {t} | {np.mean(r):.1f} | {self.task_std(t):.1f} | {interval} | {len(r)} |")
        rows.append(f"| **mean** | **{self.mean:.1f}** | {self.std:.1f} | | |")
        return "\n".join(rows)

    def __str__(self) -> str:
        return f"{self.suite} ({self.split}):\n{self.table()}"


class EpisodeKey(NamedTuple):
    """One episode of an evaluation's work list."""

    task: int
    """The task index."""
    episode: int
    """The episode's index among the task's episodes (0 to ``n_episodes - 1``)."""
    seed: int
    """The seed its env is reset with."""


def _plan_tasks(suite: TaskSuite, split: str, tasks: Sequence[int] | None) -> list[int]:
    if tasks is not None:
        if not tasks:
            raise ValueError(f"tasks must name at least one task of suite {suite.name!r}, got {tasks!r}")
        suite.spec.check_tasks(tasks)
    if tasks is None and not suite.split(split):
        sizes = ", ".join(f"{name} ({len(suite.split(name))})" for name in ("train", "validation", "test"))
        raise ValueError(
            f"split {split!r} of suite {suite.name!r} has no tasks (its splits: {sizes}); give tasks= (--tasks on the command line)"
        )
    return [int(t) for t in (suite.split(split) if tasks is None else tasks)]


def check_fits(model: Any, suite: TaskSuite | str) -> None:
    """A ``ValueError`` unless ``model`` (a PromptDT, or a method holding one as ``plm``) acts in
    ``suite``'s spaces: the same observation and action sizes. A model of another suite with the same
    sizes (cheetah-vel's on cheetah-dir) fits: that is a transfer experiment, not an error."""
    suite = load_suite(suite) if isinstance(suite, str) else suite
    s = plm_of(model).settings
    if (s.obs_dim, s.act_dim) != (suite.spec.obs_dim, suite.spec.act_dim):
        trained = f"trained on suite {s.suite!r}, " if getattr(s, "suite", None) else ""
        raise ValueError(
            f"model ({trained}observation size {s.obs_dim}, action size {s.act_dim}) does not fit suite "
            f"{suite.name!r} (observation size {suite.spec.obs_dim}, action size {suite.spec.act_dim})"
        )


def episode_plan(
    suite: TaskSuite | str,
    split: str = "test",
    n_episodes: int = 10,
    seed: int = 0,
    tasks: Sequence[int] | None = None,
) -> list[EpisodeKey]:
    """The work list of an :func:`evaluate` call with these arguments: ``n_episodes`` episodes of each
    task of ``split`` (or ``tasks``), task by task, each with its reset seed (drawn from ``seed``).

    >>> [tuple(k)[:2] for k in episode_plan("cheetah-vel", n_episodes=2, tasks=[2, 7])]
    [(2, 0), (2, 1), (7, 0), (7, 1)]
    """
    suite = load_suite(suite) if isinstance(suite, str) else suite
    if not isinstance(n_episodes, int) or isinstance(n_episodes, bool) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    order = [(t, i) for t in _plan_tasks(suite, split, tasks) for i in range(n_episodes)]
    seeds = np.random.SeedSequence(seed).generate_state(len(order))
    return [EpisodeKey(t, i, int(s)) for (t, i), s in zip(order, seeds)]


def merge_results(plan: Sequence[EpisodeKey], parts: Sequence[EvalResult]) -> EvalResult:
    """Put the results of :func:`evaluate` calls over parts of ``plan`` together by (task, episode),
    in the order of ``plan``: equal to one call over the whole plan, whichever part ran where or
    finished first. Raises ``ValueError`` when an episode of the plan is missing or two parts
    disagree on one."""
    if not parts:
        raise ValueError("parts must hold at least one EvalResult, got none")
    found: dict[tuple[int, int], float] = {}
    for part in parts:
        if part.episodes is None:
            raise ValueError(f"parts must be results of evaluate (with episode indices), got {part!r}")
        for task, returns in part.returns.items():
            for episode, value in zip(part.episodes[task], returns):
                if found.setdefault((task, episode), value) != value:
                    raise ValueError(
                        f"parts disagree on task {task} episode {episode}: {found[task, episode]} vs {value}"
                    )
    missing = [(k.task, k.episode) for k in plan if (k.task, k.episode) not in found]
    if missing:
        raise ValueError(f"parts miss these (task, episode)s of the plan: {missing}")
    returns: dict[int, list[float]] = {}
    episodes: dict[int, list[int]] = {}
    for key in plan:
        returns.setdefault(key.task, []).append(found[key.task, key.episode])
        episodes.setdefault(key.task, []).append(key.episode)
    return EvalResult(parts[0].suite, parts[0].split, returns, episodes)


def _in_places(rows: np.ndarray, places: list[int], n: int) -> np.ndarray:
    """``rows`` at rows ``places`` of an ``n``-row array, the other rows copies of the first: a part of
    an evaluation runs the model on the whole call's batch shape, so that each episode's actions are
    computed exactly as in the whole call (a batched forward's rows can differ in the last bits with
    the batch size)."""
    full = np.repeat(rows[:1], n, axis=0)  # (n, ...)
    full[places] = rows
    return full


def evaluate(
    model: Any,
    suite: TaskSuite | str,
    split: str = "test",
    n_episodes: int = 10,
    prompt: PromptSource | None = None,
    seed: int = 0,
    rtg_target: float | None = None,
    vectorization: str = "sync",
    progress_bar: bool = False,
    tasks: list[int] | None = None,
    episodes: Sequence[EpisodeKey] | None = None,
) -> EvalResult:
    """Run ``n_episodes`` episodes on every task of ``split`` together and return their returns.

    :param prompt: as for :class:`~promptrl.wrappers.PromptWrapper` (one prompt per episode, seeded).
        None: the model's own prompts when it makes them (``generate_prompt``: the Prompt Diffuser's
        generated prompts, a baseline's learned ones), else expert windows of each task's dataset.
        A generator draws from its own random state: ``model.set_random_seed(s)`` first repeats its prompts.
    :param vectorization: ``"sync"`` or ``"async"`` (one process per episode).
    :param tasks: evaluate these task indices instead of the whole split.
    :param episodes: run only these episodes of the call's work list (:func:`episode_plan` of the same
        ``suite``, ``split``, ``n_episodes``, ``seed`` and ``tasks``); every episode keeps the prompt and
        reset seed it has in the whole call (prompts are drawn for the whole list, as one call draws
        them, and the model runs on the whole call's batch), so :func:`merge_results` of the parts
        equals the whole call's result; a part saves the environment steps of the other episodes.
    """
    suite = load_suite(suite) if isinstance(suite, str) else suite
    if vectorization not in ("sync", "async"):
        raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    check_fits(model, suite)
    plm = plm_of(model)
    s = plm.settings
    plan = episode_plan(suite, split, n_episodes, seed, tasks)
    tasks = [k.task for k in plan]
    n = len(tasks)
    if episodes is None:
        chosen = list(range(n))
    else:
        index = {k: i for i, k in enumerate(plan)}
        unknown = [k for k in episodes if k not in index]
        if unknown or not episodes:
            raise ValueError(
                f"episodes must be a non-empty part of episode_plan(...) of the same arguments, got {unknown or episodes!r}"
            )
        chosen = sorted({index[EpisodeKey(*k)] for k in episodes})
    rng = np.random.default_rng(seed)
    if s.use_prompt and prompt is None:
        prompt = getattr(model, "generate_prompt", "expert")
    prompts = None
    if s.use_prompt:
        if callable(prompt) and not isinstance(prompt, (str, dict)):  # a generator: one batched call
            prompts = [resolve_prompt(plm, p, rng) for p in generate_prompts(prompt, n, tasks)]
        else:
            prompts = [resolve_prompt(plm, prompt, rng, suite.ref, t) for t in tasks]
        prompt_obs = {f"prompt_{k}": np.stack([p[k] for p in prompts]) for k in prompts[0]}
    whole = len(chosen) == n
    n = len(chosen)
    make = [lambda t=plan[i].task: suite.make_env(t) for i in chosen]
    vec_cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
    envs = vec_cls(make, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    obs, _ = envs.reset(seed=[plan[i].seed for i in chosen])
    history = HistoryBuffer(n, s.context, s.obs_dim, s.act_dim)
    history.reset(np.arange(n), obs, s.rtg_target if rtg_target is None else rtg_target)
    returns, alive = np.zeros(n), np.ones(n, bool)
    bar = tqdm(total=suite.horizon, desc=f"evaluate {suite.name}", disable=not progress_bar)
    while alive.any():
        batch = history.observation()
        if not whole:  # the model sees the whole call's batch, the part's episodes in their places
            batch = {k: _in_places(v, chosen, len(plan)) for k, v in batch.items()}
        if prompts is not None:
            batch.update(prompt_obs)
        action, _ = model.predict(batch, deterministic=True)
        if not whole:
            action = action[chosen]
        obs, reward, term, trunc, _ = envs.step(action)
        returns += reward * alive
        alive &= ~(term | trunc)
        history.push(action, reward.astype(np.float32), obs)
        bar.update()
    bar.close()
    envs.close()
    per_task: dict[int, list[float]] = {}
    indices: dict[int, list[int]] = {}
    for i, r in zip(chosen, returns):
        per_task.setdefault(plan[i].task, []).append(float(r))
        indices.setdefault(plan[i].task, []).append(plan[i].episode)
    return EvalResult(suite.name, split, per_task, indices)


class BestCheckpoint:
    """An ``on_checkpoint`` callback for :func:`~promptrl.methods.plm.train_plm` that selects a checkpoint
    without reading the test split, as Stable-Baselines3's ``EvalCallback`` with ``best_model_save_path``.

    Each call evaluates the model with expert prompts (none for an MT-ORL) on the suite's
    :attr:`~promptrl.suites.TaskSuite.selection_split` (its first ``n_tasks`` tasks when given),
    ``n_episodes`` per task with reset seeds from ``seed``, appends ``step,<split>_return,<split>_std``
    to the CSV ``log``, and saves the model to ``folder`` when its mean return is the highest in the log
    (a tie keeps the earlier step). The saved card's training section is ``model_card(model)`` followed
    by the rule and the chosen step. ``folder`` is replaced atomically, and the choice is read back from
    ``log`` and ``folder``, so a resumed run goes on where a killed one stopped (see :meth:`catch_up`).
    """

    def __init__(
        self,
        suite: TaskSuite | str,
        folder: str | Path,
        log: str | Path,
        n_episodes: int,
        *,
        n_tasks: int | None = None,
        seed: int = 0,
        model_card: Callable[[Any], str] | None = None,
        tensorboard: Any = None,
    ):
        self.suite = load_suite(suite) if isinstance(suite, str) else suite
        if not isinstance(n_episodes, int) or isinstance(n_episodes, bool) or n_episodes < 1:
            raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
        if n_tasks is not None and (not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < 1):
            raise ValueError(f"n_tasks must be a positive integer or None, got {n_tasks!r}")
        self.folder, self.log = Path(folder), Path(log)
        self.split = self.suite.selection_split
        self.tasks = self.suite.split(self.split)[:n_tasks]
        self.n_episodes, self.seed = n_episodes, seed
        self.model_card, self.tensorboard = model_card, tensorboard

    def __call__(self, model: Any) -> EvalResult:
        """Evaluate ``model`` (a checkpoint), log its return and keep it if it is the best so far."""
        result = evaluate(
            model,
            self.suite,
            split=self.split,
            n_episodes=self.n_episodes,
            prompt="expert",
            seed=self.seed,
            tasks=self.tasks,
        )
        step = model.settings.steps_trained
        if self.tensorboard is not None:
            self.tensorboard.add_scalar(f"eval/{self.split}_return", result.mean, step)
        header = ["step", f"{self.split}_return", f"{self.split}_std"]
        rows = list(csv.reader(self.log.open()))[1:] if self.log.is_file() else []
        rows = [r for r in rows if int(r[0]) != step]  # a checkpoint evaluated again replaces its row
        write_text_atomic(self.log, csv_text(header, [*rows, [step, f"{result.mean:.2f}", f"{result.std:.2f}"]]))
        self._keep_if_best(model)
        return result

    def scores(self) -> dict[int, float]:
        """The logged mean return of each evaluated step."""
        if not self.log.is_file():
            return {}
        return {int(r["step"]): float(r[f"{self.split}_return"]) for r in csv.DictReader(self.log.open())}

    @property
    def best_step(self) -> int | None:
        """The step the log ranks first (the earliest among equals), None before any evaluation."""
        return _best_step(self.scores())

    def catch_up(self, model: Any) -> None:
        """For a resumed run's checkpoint ``model``: evaluate it if the log misses its step, and keep it
        if it is the best but a killed run stopped before saving it."""
        if model.settings.steps_trained not in self.scores():
            self(model)
        else:
            self._keep_if_best(model)

    def _keep_if_best(self, model: Any) -> None:
        step, scores = model.settings.steps_trained, self.scores()
        if _best_step(scores) != step or saved_steps(latest_folder(self.folder, CONFIG_NAME)) == step:
            return
        tasks = ", ".join(map(str, self.tasks))
        rule = (
            f"**Selection.** Of the checkpoints evaluated every time one was saved, this is the one with the highest "
            f"mean return with expert prompts on the suite's {self.split} split (tasks {tasks}; {self.n_episodes} "
            f"episode(s) per task, reset seeds from {self.seed}): step {step:,}, mean return {scores[step]:.2f}. "
            f"Every evaluated step's return is in the run's `{self.log.name}`. The test split was not read."
        )
        card = model.settings.model_card
        training = self.model_card(model) if self.model_card is not None else ""
        model.settings.model_card = {"training": f"{training}\n\n{rule}".strip()}
        try:
            with atomic_folder(self.folder) as tmp:
                model.save_pretrained(tmp)
        finally:
            model.settings.model_card = card


def _best_step(scores: dict[int, float]) -> int | None:
    """The step with the highest score, the earliest among equals; None for no scores."""
    return min(scores, key=lambda s: (-scores[s], s)) if scores else None
