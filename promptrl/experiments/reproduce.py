"""Table 1 of the Prompt Diffuser paper, end to end: every method on a suite's test split with the
same frozen PLM, the same few-shot data and the same evaluation.

Per suite: the test tasks' datasets are generated if missing; the shipped PLM, MT-ORL model and
pre-trained prompt generator are loaded from ``hub_models/<suite>/``; then, for every seed and test
task, each method adapts on the task's few-shot data (its first ``few_shot_episodes`` expert
episodes; Prompt-DT-FT-Full: the whole expert dataset) and is evaluated on that task. Each
(method, seed) result is written as JSON as soon as it is done, so an interrupted run resumes.

A (method, seed, test task) is the unit of work (:class:`TaskUnit`): in this process by default,
or spread over local worker processes or a Ray cluster (``promptrl.experiments.executors``,
:func:`run_cells`); each unit seeds itself from its seed, so the cells and tables are the same
wherever and in whichever order the units ran.
The tables are made by :mod:`~promptrl.experiments.tables`, beside the paper's numbers from
:mod:`~promptrl.experiments.paper` (their names are importable from here too).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from promptrl.common.files import CONFIG_NAME, saved_steps, write_text_atomic
from promptrl.common.hub import resolve_model_path
from promptrl.data.datasets import create_datasets
from promptrl.evaluation import evaluate
from promptrl.experiments.executors import Executor
from promptrl.experiments.paper import METHODS, TABLE1_SUITES, VARIANTS, paper_table
from promptrl.experiments.tables import (
    Summary,
    add_statistics,
    hardware,
    measured_dates,
    measured_hardware,
    ordering_checks,
    suite_table,
    table1,
    write_tables,
)
from promptrl.suites import TaskSuite, load_suite

__all__ = [
    "FULL",
    "METHODS",
    "QUICK",
    "TABLE1_SUITES",
    "VARIANTS",
    "Budget",
    "Context",
    "Setup",
    "TaskUnit",
    "build_method",
    "cell_on_tasks",
    "cell_path",
    "ensure_datasets",
    "fine_tuned_generator",
    "finished_cell",
    "fresh_method",
    "hardware",
    "hub_folder",
    "measured_dates",
    "measured_hardware",
    "ordering_checks",
    "paper_table",
    "record_in_card",
    "reproduce_suite",
    "retrain_models",
    "run_cell",
    "run_cells",
    "run_unit",
    "suite_table",
    "table1",
    "task_generators",
    "tasks_path",
    "write_json",
    "write_results",
]

TRAINED_AS = {"Prompt Diffuser (T=0)": "Prompt Diffuser"}
"""Variants that only change inference: they reuse the generators fine-tuned for the named method..."""
INFERENCE = {"Prompt Diffuser (T=0)": {"temperature": 0.0}}
"""...with these settings changed."""


@dataclass(frozen=True)
class Budget:
    """How much adaptation and evaluation each method gets (defaults: the full run, Table 4's budget)."""

    seeds: int = 3
    """Seeds per method; each seed adapts and evaluates on every test task."""
    episodes: int = 10
    """Evaluation episodes per test task."""
    few_shot_episodes: int = 1
    """Expert episodes of a test task a method may adapt on."""
    epochs: int = 20
    """Adaptation epochs."""
    steps_per_epoch: int = 100
    """Gradient steps per adaptation epoch."""
    full_epochs: int = 100
    """Epochs of Prompt-DT-FT-Full (on the whole expert dataset of the task)."""

    def tag(self) -> str:
        """Names the folder of this budget's results (seeds excluded: more seeds extend a run;
        ``full_epochs`` too: it names Prompt-DT-FT-Full's own folder, see :func:`cell_path`)."""
        return f"{self.adaptation_tag()}-episodes{self.episodes}"

    def adaptation_tag(self) -> str:
        """Names the folder of the models this budget's adaptation makes (evaluation excluded)."""
        return f"adapt{self.epochs}x{self.steps_per_epoch}-fewshot{self.few_shot_episodes}"


FULL = Budget()
QUICK = Budget(seeds=1, episodes=3, epochs=1, steps_per_epoch=25, full_epochs=2)
"""``--quick``: one seed, 3 episodes per task, 25 adaptation steps (50 for FT-Full)."""


def hub_folder(suite: str, root: str | Path = "hub_models") -> Path:
    """``<root>/<suite>``; the default root is the shipped models wherever they are installed (see
    :func:`~promptrl.common.hub.resolve_model_path`)."""
    return Path(resolve_model_path(Path(root) / suite))


NOT_MEASURED = ("model_card", "compile")
"""Settings that do not change what a model computes (its card, and whether torch.compile runs it), so a
change of them keeps the cells measured with the model."""


@dataclass
class Context:
    suite: TaskSuite
    budget: Budget
    hub: Path
    device: str
    tasks: list[int]
    """The test tasks evaluated."""
    plm: Any = None
    mt_orl: Any = None
    models: Path | None = None
    """Where fine-tuned prompt generators are kept (``<models>/<fingerprint>/<method>/seed<k>/task<t>/``, see :meth:`fingerprint`), so a rerun
    or an inference-only variant reuses them instead of fine-tuning again; None keeps nothing."""
    setup: Setup | None = None
    """What rebuilds this context in a worker process (None: the context runs in this process only)."""
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False)

    def load_models(self, methods: Sequence[str]) -> None:
        from promptrl.methods.plm import PromptDT

        needed = [self.hub / "plm", self.hub / "pretrained"] + ([self.hub / "mt-orl"] if "MT-ORL" in methods else [])
        missing = [p for p in needed if not (p / "config.json").is_file()]
        if missing == [self.hub / "mt-orl"]:
            raise FileNotFoundError(
                f"{self.hub / 'mt-orl'} not found: {self.suite.name!r} has no MT-ORL model, which the MT-ORL "
                "method needs; leave MT-ORL out of --methods, or train one (`promptrl train plm "
                f"{self.suite.spec.cli_arg} --no-prompt`) and save it there"
            )
        if missing:
            raise FileNotFoundError(
                f"{', '.join(map(str, missing))} not found: the shipped models of {self.suite.name!r} are needed "
                f"(hub_models/{self.suite.name}/plm, mt-orl and pretrained; see `promptrl train plm` / `promptrl train diffuser`)"
            )
        self.plm = PromptDT.from_pretrained(self.hub / "plm", device=self.device)
        if "MT-ORL" in methods:
            self.mt_orl = PromptDT.from_pretrained(self.hub / "mt-orl", device=self.device)

    def few_shot(self, task: int) -> Any:
        return self.suite.dataset(task, "expert", episodes=self.budget.few_shot_episodes)

    def fingerprint(self, name: str) -> str:
        """A short hash of the models method ``name`` is measured with: MT-ORL's model, or else the
        PLM and the pre-trained generator in ``hub`` (weights and settings). Each cell keeps it, so
        that a rerun after a model has changed measures again instead of reusing an old result."""
        key = f"mt-orl {id(self.mt_orl)}" if name == "MT-ORL" else f"plm {id(self.plm)}"
        if key not in self._fingerprints:
            self._fingerprints[key] = self._hash_models(name)
        return self._fingerprints[key]

    def _hash_models(self, name: str) -> str:
        h = hashlib.sha256()
        for model in (self.mt_orl,) if name == "MT-ORL" else (self.plm,):
            if model is not None:
                settings = {k: v for k, v in asdict(model.settings).items() if k not in NOT_MEASURED}
                h.update(json.dumps(settings, sort_keys=True).encode())
                for key, value in sorted(model.network.state_dict().items()):
                    h.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        if name != "MT-ORL":
            for folder in (self.hub / "pretrained", self.hub):
                if (folder / "model.safetensors").is_file():
                    h.update((folder / "model.safetensors").read_bytes())
                    break
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Setup:
    """What a worker needs to build a :class:`Context` (plain, picklable data; the models load in
    the worker). :meth:`context` builds it; in a worker, :func:`run_unit` builds each setup once."""

    suite: str
    """The suite: a built-in one's name or a spec file's path."""
    budget: Budget
    """The adaptation and evaluation budget."""
    hub: Path
    """The suite's shipped models folder (``plm/``, ``mt-orl/``, ``pretrained/``)."""
    device: str
    """The torch device the models run on."""
    tasks: tuple[int, ...]
    """The test tasks."""
    models: Path | None = None
    """Where fine-tuned prompt generators are kept (see :attr:`Context.models`)."""
    methods: tuple[str, ...] = ()
    """The methods whose models load (MT-ORL's model loads only when it is among them)."""
    qualities: tuple[str, ...] = ("expert", "random")
    """The dataset qualities the tasks need; missing datasets are created (seeded, locked)."""
    plm: Path | None = None
    """A PLM folder to use instead of the shipped models (then nothing else loads from ``hub``)."""

    def context(self, make_datasets: bool = True) -> Context:
        """A :class:`Context` with its datasets created (unless ``make_datasets`` is False) and models loaded."""
        from promptrl.methods.plm import PromptDT

        suite = load_suite(self.suite)
        ctx = Context(suite, self.budget, self.hub, self.device, list(self.tasks), models=self.models, setup=self)
        if self.plm is None:
            ctx.load_models(self.methods)
        else:
            ctx.plm = PromptDT.from_pretrained(self.plm, device=self.device)
        if make_datasets:  # after the models: a missing model fails before any data is made
            ensure_datasets(suite, self.tasks, self.qualities)
        return ctx


def fresh_method(name: str, ctx: Context, seed: int = 0) -> Any:
    """Method ``name`` built on the shipped models, before any adaptation."""
    from promptrl.methods import baselines
    from promptrl.methods.diffuser import PromptDiffuser

    if name == "MT-ORL":
        return baselines.MTORL(ctx.mt_orl)
    if name in ("Prompt-DT-Random", "Prompt-DT-Expert"):
        return baselines.FixedPrompt(ctx.plm, quality="random" if name.endswith("Random") else "expert", seed=seed)
    if name.startswith("Prompt Diffuser"):
        pd = PromptDiffuser.from_pretrained(ctx.hub / "pretrained", plm=ctx.plm, device=ctx.device)
        pd.set_random_seed(seed)
        if name == "Prompt Diffuser (dt)":
            pd.settings.update = "dt"
        return pd
    cls = {
        "Soft Prompt": baselines.SoftPrompt,
        "Adaptor": baselines.Adaptor,
        "Prompt-DT-FT": baselines.FineTune,
        "Prompt-DT-FT-Full": baselines.FineTune,
        "Prompt-Tuning DT": baselines.PromptTuningDT,
    }[name]
    return cls(ctx.plm, seed=seed)


def build_method(name: str, ctx: Context, task: int, seed: int) -> Any:
    """The adapted model of ``name`` for one test task (trained here where the method trains).

    The Prompt Diffuser adapts per task from the shipped pre-trained generator: fine-tuning one
    generator on all test tasks at once does not work, because its conditions (returns-to-go and
    timesteps) barely differ between e.g. cheetah-vel tasks, so it cannot tell them apart."""
    if name.startswith("Prompt Diffuser"):
        return fine_tuned_generator(name, ctx, task, seed)
    method, b = fresh_method(name, ctx, seed), ctx.budget
    if name == "MT-ORL":
        return method
    if name in ("Prompt-DT-Random", "Prompt-DT-Expert"):  # nothing trains: learn stores the prompt windows
        return method.learn(
            ctx.suite.dataset(task, "random") if name.endswith("Random") else ctx.few_shot(task), progress_bar=False
        )
    data, epochs = (
        (ctx.suite.dataset(task, "expert"), b.full_epochs)
        if name == "Prompt-DT-FT-Full"
        else (ctx.few_shot(task), b.epochs)
    )
    return method.learn(data, epochs=epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False)


def fine_tuned_generator(name: str, ctx: Context, task: int, seed: int, quality: str = "expert") -> Any:
    """A Prompt Diffuser variant fine-tuned on the task's few-shot data (of ``quality``; Table 1: expert):
    loaded from ``ctx.models`` when saved there (by this or a run of the method it is trained as), else
    fine-tuned (and saved)."""
    from promptrl.methods.diffuser import PromptDiffuser

    trained_as = TRAINED_AS.get(name, name)

    def fine_tune() -> Any:  # the data is read only when no saved generator is loaded
        data = ctx.suite.dataset(task, quality, episodes=ctx.budget.few_shot_episodes)
        pd = fresh_method(trained_as, ctx, seed)
        return pd.learn(data, epochs=ctx.budget.epochs, steps_per_epoch=ctx.budget.steps_per_epoch, progress_bar=False)

    if ctx.models is None:
        pd = fine_tune()
    else:
        folder = ctx.models / ctx.fingerprint(trained_as) / trained_as.replace(" ", "_")
        folder = (folder if quality == "expert" else folder / f"data-{quality}") / f"seed{seed}" / f"task{task}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(folder.with_name(f".{folder.name}.lock")):  # a worker adapting it for another variant: wait, load
            if (folder / CONFIG_NAME).is_file():
                pd = PromptDiffuser.from_pretrained(folder, plm=ctx.plm, device=ctx.device)
            else:
                pd = fine_tune()
                pd.save_generator(folder)
    for key, value in INFERENCE.get(name, {}).items():
        setattr(pd.settings, key, value)
    pd.set_random_seed(seed)  # evaluation draws the same prompts whether the generator was loaded or trained
    return pd


def task_generators(
    suite_name: str | Path,
    tasks: Sequence[int] | None = None,
    budget: Budget = FULL,
    seed: int = 0,
    out: str | Path = "results",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    settings: dict[str, Any] | None = None,
    progress_bar: bool = True,
) -> Any:
    """The suite's Prompt Diffuser with one generator per test task (or per task of ``tasks``), each
    fine-tuned from ``<hub_root>/<suite>/pretrained`` on the task's first ``budget.few_shot_episodes``
    expert episode(s) for ``budget.epochs x budget.steps_per_epoch`` steps with seed ``seed``: the
    generator of that task's Prompt Diffuser cell in Table 1 (``reproduce_suite`` with this seed).
    The first task's generator is the returned model; the others are its ``task_generators``.

    Fine-tuned generators are kept, and reused, where ``reproduce_suite(out=out)`` keeps them
    (``<out>/models/...``), so a task a reproduce run fine-tuned costs nothing here, and a killed
    run resumes at its next task. ``settings`` (fields of the generator's settings) fine-tune
    differently; then nothing is kept or reused, except when ``temperature`` alone is given (it
    changes sampling only)."""
    from promptrl.methods.diffuser import PromptDiffuser

    suite = load_suite(suite_name)
    tasks = suite.split("test") if tasks is None else suite.spec.check_tasks(tasks)
    if not tasks:
        raise ValueError("tasks must name at least one task")
    settings = dict(settings or {})
    sampling = {k: settings.pop(k) for k in ("temperature",) if k in settings}
    models = None if settings else Path(out) / "models" / suite.name / budget.adaptation_tag()
    ctx = Setup(
        suite.ref, budget, hub_folder(suite.name, hub_root), device, tuple(tasks), models=models, qualities=("expert",)
    ).context()
    built: dict[int, Any] = {}
    for task in tqdm(tasks, desc=f"fine-tune {suite.name} generators", disable=not progress_bar):
        torch.manual_seed(seed)  # as measure_task does before a Table 1 cell's adaptation
        if settings:
            pd = PromptDiffuser.from_pretrained(ctx.hub / "pretrained", plm=ctx.plm, device=ctx.device, **settings)
            pd.set_random_seed(seed)
            pd.learn(
                ctx.few_shot(task), epochs=budget.epochs, steps_per_epoch=budget.steps_per_epoch, progress_bar=False
            )
        else:
            pd = fine_tuned_generator("Prompt Diffuser", ctx, task, seed)
        for key, value in sampling.items():
            setattr(pd.settings, key, value)
        pd.set_random_seed(seed)
        built[task] = pd
    root = built[tasks[0]]
    for task in tasks[1:]:
        root.add_task_generator(task, built[task])
    return root


Builder = Callable[[str, Context, int, int], Any]


def finished_cell(name: str, ctx: Context, path: Path) -> dict[str, Any] | None:
    """The cell saved at ``path`` if it was measured with the current models (a cell without a
    :meth:`Context.fingerprint` counts as current) on every test task of ``ctx``, else None, with a
    warning when it was measured with other models. A cell holding more tasks than ``ctx`` has is
    returned for ``ctx``'s tasks only, its mean taken over them; one holding fewer is unfinished for
    ``ctx`` (:func:`run_cell` keeps its tasks and measures the others)."""
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    current = ctx.fingerprint(name)
    if cell.get("models", current) != current:
        warnings.warn(
            f"{path} was measured with other models (fingerprint {cell['models']}, now {current}): not reused",
            stacklevel=2,
        )
        return None
    return cell_on_tasks(cell, ctx.tasks)


def cell_on_tasks(cell: dict[str, Any], tasks: Sequence[int]) -> dict[str, Any] | None:
    """A saved cell restricted to ``tasks`` (its mean taken over them), None if it lacks any of them; a
    cell that is not per task (no ``"returns"``) is returned as it is."""
    if "returns" not in cell:
        return cell
    held = cell["returns"]
    if any(str(t) not in held for t in tasks):
        return None
    if len(held) == len(tasks):
        return cell
    returns = {str(t): held[str(t)] for t in tasks}
    return cell | {"returns": returns, "mean": float(np.mean([np.mean(r) for r in returns.values()]))}


def measured_with_other_models(name: str, ctx: Context, path: Path) -> bool:
    """Whether the cell at ``path``, finished or not (its tasks file), holds results of models other
    than those ``ctx`` measures ``name`` with."""
    current = ctx.fingerprint(name)
    for saved in (path, tasks_path(path)):
        if saved.is_file() and json.loads(saved.read_text()).get("models", current) != current:
            return True
    return False


def run_cell(
    name: str,
    ctx: Context,
    seed: int,
    path: Path,
    build: Builder = build_method,
    on_task: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One (method, seed): adapt (``build(name, ctx, task, seed)``) and evaluate on every test task;
    the JSON at ``path`` (returns per task, their mean, wall seconds spent adapting and evaluating,
    the hardware, the models' fingerprint) makes it resumable: a rerun reuses it while the models
    are the same.

    Each finished task is saved at once beside it (``<path stem>-tasks.json``, see
    :func:`tasks_path`), so an interrupted cell resumes at its next task: every task starts from the
    same seeds, so the resumed cell equals an uninterrupted one. The file goes once the cell is written.
    ``on_task(task)`` is called before each task is adapted (progress display)."""
    cell = finished_cell(name, ctx, path)
    if cell is not None:
        return cell
    done = _finished_tasks(name, ctx, path)
    for task in ctx.tasks:
        if str(task) in done["tasks"]:
            continue
        if on_task is not None:
            on_task(task)
        done["tasks"][str(task)] = measure_task(name, ctx, seed, task, build)
        write_json(tasks_path(path), done)
    return _write_cell(name, ctx, seed, path, done)


def measure_task(name: str, ctx: Context, seed: int, task: int, build: Builder = build_method) -> dict[str, Any]:
    """One (method, seed, test task): ``{"returns": [one per episode], "adapt": s, "evaluate": s}``.
    Seeds torch from ``seed`` first (and the method and evaluation seed themselves from it), so the
    result does not depend on what ran before in the process."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build(name, ctx, task, seed)
    adapted = time.perf_counter()
    result = evaluate(model, ctx.suite, tasks=[task], n_episodes=ctx.budget.episodes, prompt=None, seed=seed)
    return {"returns": result.returns[task], "adapt": adapted - start, "evaluate": time.perf_counter() - adapted}


def _finished_tasks(name: str, ctx: Context, path: Path) -> dict[str, Any]:
    """The tasks file of the unfinished cell ``path``: ``{"models": fingerprint, "tasks": {task: result}}``,
    only the tasks of ``ctx`` measured with the current models (else measured again, with a warning)."""
    current = ctx.fingerprint(name)
    partial_path = tasks_path(path)
    done = json.loads(partial_path.read_text()) if partial_path.is_file() else {}
    if done and done.get("models") != current:
        warnings.warn(f"{partial_path} was measured with other models: its tasks are measured again", stacklevel=3)
        done = {}
    tasks = {t: v for t, v in done.get("tasks", {}).items() if int(t) in ctx.tasks}
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("models") == current:  # a cell finished on other tasks: its tasks hold
        for t, entry in _task_entries(saved, path.name).items():
            if int(t) in ctx.tasks and t not in tasks:
                tasks[t] = entry
    return {"models": current, "tasks": tasks}


def _task_entries(saved: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """The per-task results held by the saved JSON ``saved`` of the file ``name``: a tasks file's
    entries as they are (an adopted one keeps its ``"from"``); a finished cell's returns, each marked
    ``"from"`` the cell it was measured in, relative to the file's folder (``name`` itself, or the
    source its ``"adopted"`` map names)."""
    if "tasks" in saved:
        return saved["tasks"]
    adopted = saved.get("adopted", {})
    return {t: {"returns": r, "from": adopted.get(t, name)} for t, r in saved.get("returns", {}).items()}


def adopt_tasks(name: str, ctx: Context, path: Path, sources: Sequence[Path]) -> int:
    """Give the unfinished cell ``path`` (method ``name``) the results of its test tasks that the cells
    ``sources`` (finished, or their tasks files) already hold for the same seed, budget and models;
    returns how many tasks it adopted.

    A task's result does not depend on which other tasks a cell measures (:func:`measure_task` seeds
    everything from the seed), so a cell over other test tasks (e.g. an ablation's ``--tasks 2`` run
    beside a ``--tasks 5`` one) holds exactly what this cell would measure for the tasks they share.
    Adopted tasks go into the cell's tasks file, marked with the cell they came from (``"from"``, a path
    relative to the cell's folder); :func:`run_cell` then measures only the others. Sources measured
    with other models, or without a fingerprint, are skipped."""
    if not measured_with_other_models(name, ctx, path) and finished_cell(name, ctx, path) is not None:
        return 0
    done = _finished_tasks(name, ctx, path)
    adopted = 0
    for source in sources:
        for saved in (source, tasks_path(source)):
            if not saved.is_file() or saved.resolve() in (path.resolve(), tasks_path(path).resolve()):
                continue
            data = json.loads(saved.read_text())
            if data.get("models") != done["models"]:
                continue
            for task, result in _task_entries(data, saved.name).items():
                if int(task) in ctx.tasks and task not in done["tasks"]:
                    origin = saved.parent / result["from"] if "from" in result else saved
                    done["tasks"][task] = {**result, "from": Path(os.path.relpath(origin, path.parent)).as_posix()}
                    adopted += 1
    if adopted:
        write_json(tasks_path(path), done)
    return adopted


def _write_cell(name: str, ctx: Context, seed: int, path: Path, done: dict[str, Any]) -> dict[str, Any]:
    """Write the cell of the finished tasks ``done`` at ``path`` and remove its tasks file. Its
    ``seconds`` are those spent on the tasks measured for it; adopted tasks are listed under
    ``"adopted"`` with the cell each came from (see :func:`adopt_tasks`; a cell that grew from one
    finished on fewer tasks names its own file)."""
    results = {str(t): done["tasks"][str(t)] for t in ctx.tasks}
    returns = {t: r["returns"] for t, r in results.items()}
    measured = [r for r in results.values() if "from" not in r]
    seconds = {k: round(sum(r[k] for r in measured), 1) for k in ("adapt", "evaluate")}
    adopted = {t: r["from"] for t, r in results.items() if "from" in r}
    cell = {
        "method": name,
        "seed": seed,
        "returns": returns,
        "mean": float(np.mean([np.mean(r) for r in returns.values()])),
        "seconds": seconds,
        "hardware": hardware(),
        "models": done["models"],
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    } | ({"adopted": adopted} if adopted else {})
    write_json(path, cell)
    tasks_path(path).unlink(missing_ok=True)
    return cell


@dataclass(frozen=True)
class TaskUnit:
    """One (method, seed, test task) of a grid, as a worker runs it (:func:`run_unit`)."""

    setup: Setup
    """Builds the worker's :class:`Context`."""
    name: str
    """The method (or an ablation's setting label)."""
    seed: int
    """The seed."""
    task: int
    """The test task."""
    build: Builder = build_method
    """Adapts the method: a module-level function or a ``functools.partial`` of one (it is pickled)."""


_WORKER_CONTEXTS: dict[Setup, Context] = {}
"""The contexts a worker process has built, so its units load each setup's models once."""


def run_unit(unit: TaskUnit) -> dict[str, Any]:
    """Measure one unit (:func:`measure_task`) in the worker's context of ``unit.setup``; the result
    also holds the fingerprint of the models it was measured with (``"models"``)."""
    ctx = _WORKER_CONTEXTS.get(unit.setup)
    if ctx is None:
        ctx = _WORKER_CONTEXTS[unit.setup] = unit.setup.context()
    return {**measure_task(unit.name, ctx, unit.seed, unit.task, unit.build), "models": ctx.fingerprint(unit.name)}


CellJob = tuple[str, int, Path, Builder]
"""A cell of a grid: (method or setting label, seed, result path, builder)."""


def run_cells(
    cells: Sequence[CellJob], ctx: Context, executor: Executor | None = None, desc: str = "cells"
) -> list[dict[str, Any]]:
    """Run the (method, seed) ``cells`` of one context and return their results (:func:`run_cell`'s), in order.

    With ``executor`` None each cell runs here with :func:`run_cell`. Otherwise every unfinished
    (cell, test task) is a :class:`TaskUnit` mapped over the executor's workers (``ctx.setup`` rebuilds
    the context there); this process writes each result into the cell's tasks file as it comes
    and the cell once all its tasks are in: the same files, resumable the same way, and the same
    returns as a run here. A unit measured with other models than this process's raises ``RuntimeError``."""
    if executor is None:
        bar = tqdm(cells, desc=desc)
        return [
            run_cell(
                name,
                ctx,
                seed,
                path,
                build,
                on_task=lambda task, name=name, seed=seed: bar.set_postfix_str(
                    f"{name}, seed {seed}, task {task} ({ctx.tasks.index(task) + 1}/{len(ctx.tasks)})"
                ),
            )
            for name, seed, path, build in bar
        ]
    if ctx.setup is None:
        raise ValueError("ctx.setup is None: a context run on workers needs the Setup that rebuilds it there")
    results: dict[int, dict[str, Any]] = {}
    partial: dict[int, dict[str, Any]] = {}
    units: list[tuple[int, TaskUnit]] = []
    for i, (name, seed, path, build) in enumerate(cells):
        cell = finished_cell(name, ctx, path)
        if cell is not None:
            results[i] = cell
            continue
        partial[i] = _finished_tasks(name, ctx, path)
        todo = [t for t in ctx.tasks if str(t) not in partial[i]["tasks"]]
        if not todo:
            results[i] = _write_cell(name, ctx, seed, path, partial[i])
        units += [(i, TaskUnit(ctx.setup, name, seed, task, build)) for task in todo]
    by_unit = {unit: i for i, unit in units}
    bar = tqdm(total=len(units), desc=desc)
    for unit, result in executor.map_unordered(run_unit, [unit for _, unit in units]):
        i = by_unit[unit]
        name, seed, path, _ = cells[i]
        done = partial[i]
        if result.pop("models") != done["models"]:
            raise RuntimeError(
                f"{name}, seed {seed}, task {unit.task} was measured on a worker with other models than this "
                f"process's (fingerprint {done['models']}): the workers must see the same model folders"
            )
        done["tasks"][str(unit.task)] = result
        write_json(tasks_path(path), done)
        if all(str(t) in done["tasks"] for t in ctx.tasks):
            results[i] = _write_cell(name, ctx, seed, path, done)
        bar.update()
    bar.close()
    return [results[i] for i in range(len(cells))]


def tasks_path(path: Path) -> Path:
    """Where :func:`run_cell` keeps the finished tasks of the unfinished cell ``path``."""
    return path.with_name(f"{path.stem}-tasks.json")


def cell_path(runs: Path, name: str, seed: int, budget: Budget) -> Path:
    """Where the result of (method ``name``, ``seed``) under ``budget`` is kept inside ``runs``."""
    folder = name.replace(" ", "_") + (f"-full{budget.full_epochs}" if name == "Prompt-DT-FT-Full" else "")
    return runs / folder / f"seed{seed}.json"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temp file, then rename)."""
    write_text_atomic(path, json.dumps(data, indent=1))


def ensure_datasets(suite: TaskSuite, tasks: Sequence[int], qualities: Sequence[str] = ("expert", "random")) -> None:
    """Create the tasks' datasets of these qualities that are missing (seeded, atomic)."""
    for quality in qualities:
        create_datasets(suite, quality, tasks=list(tasks), progress_bar=True)


RETRAINED = "retrained"
"""Subfolder of the results folder that a ``--retrain`` run keeps to itself: its models in
``hub/<suite>/`` and its cells and tables, apart from those of the shipped models."""
NOT_RECIPE = (
    "suite",
    "obs_dim",
    "act_dim",
    "state_mean",
    "state_std",
    "steps_trained",
    "model_card",
    "seed",
    "x_min",
    "x_max",
    "conditions",
    "bf16",
    "rtg_target",
    "rtg_scale",
    "max_ep_len",
    "target_rtg",
)
"""Config fields of a shipped model that are outcomes of its training, given apart or set by its suite
(return-to-go settings, episode length), not its recipe;
``bf16`` (autocast) is a speed setting chosen per machine (see :func:`~promptrl.methods.plm.bf16_is_fast`)."""


def _recipe(config: dict[str, Any], settings_class: type) -> dict[str, Any]:
    names = {f.name for f in fields(settings_class)} - set(NOT_RECIPE)
    return {k: v for k, v in config.items() if k in names}


RECIPE_SUITE = "mw-reach"
"""The shipped models whose recipes train the models of a suite that has none (a user's spec)."""
QUICK_TRAINING_STEPS = {"plm": 200, "generator": 200}
"""``reproduce --quick``: training steps of the PLM, MT-ORL and generator of a suite without shipped models."""


def has_models(folder: str | Path, mt_orl: bool = True) -> bool:
    """``folder`` holds a suite's PLM and pre-trained generator (``plm/``, ``pretrained/``) and, with
    ``mt_orl``, its MT-ORL (``mt-orl/``)."""
    subs = ("plm", "pretrained") + (("mt-orl",) if mt_orl else ())
    return all((Path(folder) / sub / CONFIG_NAME).is_file() for sub in subs)


def retrain_models(
    suite_name: str | Path,
    shipped: str | Path,
    folder: str | Path,
    device: str = "cpu",
    plm_steps: int | None = None,
    generator_steps: int | None = None,
    seed: int = 0,
) -> Path:
    """Train a suite's (a name or a spec file's path) PLM, MT-ORL and pre-trained prompt generator from its
    training tasks' expert datasets, laid out in ``folder`` as in ``hub_models/<suite>/`` (``plm/``,
    ``mt-orl/``, ``pretrained/``); returns ``folder``.

    Each follows the recipe of the shipped model in ``shipped`` (another suite's for a suite without
    shipped models: :data:`RECIPE_SUITE`'s) (architecture, batch, learning rate,
    warm-up and step count from its ``config.json``; the generator: its settings, pre-trained with
    :data:`~promptrl.methods.diffuser.PRETRAIN_RECIPE`), with
    ``plm_steps`` / ``generator_steps`` replacing the step counts (e.g. the reference 50,000 on a
    GPU). Training checkpoints under ``folder/runs/`` and resumes after a kill; a finished model is
    not trained again (more steps continue it). The shipped folder is only read."""
    from promptrl.methods.diffuser import PRETRAIN_RECIPE, PromptDiffuserSettings, pretrain_generator
    from promptrl.methods.plm import PromptDT, PromptDTSettings, train_plm

    suite, shipped, folder = load_suite(suite_name), Path(shipped), Path(folder)
    suite_name = suite.name
    if not has_models(shipped):
        raise FileNotFoundError(
            f"{shipped} does not hold plm/, mt-orl/ and pretrained/: retraining follows the recipes of shipped "
            f"models (hub_models/{suite_name}/, or hub_models/{RECIPE_SUITE}/ for a suite without any)"
        )
    ensure_datasets(suite, suite.train_tasks, qualities=("expert",))
    for sub in ("plm", "mt-orl"):
        config = json.loads((shipped / sub / CONFIG_NAME).read_text())
        steps = plm_steps or config["steps_trained"]
        if saved_steps(folder / sub) >= steps:
            continue
        hyper = _recipe(config, PromptDTSettings)
        print(f"training {suite_name} {sub} with the recipe of {shipped.name}/{sub}: {steps:,} steps, {hyper}")
        model = train_plm(
            suite,
            folder / "runs" / sub,
            steps,
            device=device,
            seed=seed,
            model_card=lambda m: (
                f"Trained by `promptrl reproduce` with the recipe of the shipped model {shipped.name}/{sub}: {m.settings.steps_trained:,} "
                f"steps on the expert datasets of the {len(suite.train_tasks)} training tasks of `{suite_name}`, seed {seed}."
            ),
            **hyper,
        )
        model.save_pretrained(folder / sub)
    config = json.loads((shipped / "pretrained" / CONFIG_NAME).read_text())
    steps = generator_steps or config["steps_trained"]
    print(
        f"training the {suite_name} prompt generator with the recipe of {shipped.name}/pretrained: {steps:,} steps, {PRETRAIN_RECIPE}"
    )
    pretrain_generator(
        PromptDT.from_pretrained(folder / "plm", device=device),
        suite.datasets("train", "expert"),
        folder / "pretrained",
        steps,
        seed=seed,
        model_card=lambda pd: (
            f"Pre-trained by `promptrl reproduce` ({PRETRAIN_RECIPE}): {pd.settings.steps_trained:,} "
            f"steps on the expert datasets of the training tasks of `{suite_name}`, seed {seed}."
        ),
        **_recipe(config, PromptDiffuserSettings),
    )
    return folder


def reproduce_suite(
    suite_name: str | Path,
    budget: Budget = FULL,
    methods: Sequence[str] = METHODS,
    out: str | Path = "results",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    tasks: Sequence[int] | None = None,
    collect: bool = False,
    seed_list: Sequence[int] | None = None,
    executor: Executor | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every method on one suite's test tasks (or ``tasks``); returns
    ``{method: {"seeds": [means], "seed_ids", "tasks", "mean", "std", "n", "ci", "params", "percentage"}}``
    (``"tasks"``: per seed, each test task's mean return over its episodes; ``"std"``: the sample std
    over seeds, None for one seed; ``"ci"``: the 95% confidence interval of the mean over the ``"n"``
    (seed, test task) units, see :func:`~promptrl.experiments.tables.add_statistics`).

    ``collect=True`` runs nothing: it gathers the finished cells of this budget (any seeds among
    the first ``budget.seeds``), e.g. to tabulate methods that were run with different seed counts.
    ``seed_list`` runs only these seeds (e.g. to spread seeds over processes); unless ``collect``, the
    summary also holds the finished cells of the budget's other seeds, so that the process that
    finishes last tabulates every seed. ``executor`` runs the
    (method, seed, test task) units on its workers (:func:`run_cells`; None: here). Each row also
    lists its cells' ``hardware`` and ``finished`` times (None where a cell does not have them)."""
    unknown = [m for m in methods if m not in METHODS + VARIANTS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS + VARIANTS)}")
    suite = load_suite(suite_name)
    suite_name = suite.name  # names the folders; the setup keeps what loads it (a spec file's path)
    tasks = suite.split("test") if tasks is None else suite.spec.check_tasks(tasks)
    setup = Setup(
        suite.ref,
        budget,
        hub_folder(suite_name, hub_root),
        device,
        tuple(tasks),
        models=Path(out) / "models" / suite_name / budget.adaptation_tag(),
        methods=tuple(methods),
    )
    ctx = setup.context(make_datasets=not collect)
    runs = Path(out) / "runs" / suite_name / budget.tag()  # a cell is reused only under the same budget
    to_run = [] if collect else list(range(budget.seeds) if seed_list is None else seed_list)
    seeds = seed_list if collect and seed_list is not None else sorted(set(to_run) | set(range(budget.seeds)))
    cells = [  # the seeds to run, and the other seeds' cells that are finished
        (m, s, cell_path(runs, m, s, budget), build_method)
        for m in methods
        for s in seeds
        if s in to_run or finished_cell(m, ctx, cell_path(runs, m, s, budget)) is not None
    ]
    summary: dict[str, dict[str, Any]] = {}
    for (name, seed, _, _), cell in zip(cells, run_cells(cells, ctx, executor, desc=f"reproduce {suite_name}")):
        row = summary.setdefault(name, {"seeds": [], "seed_ids": [], "tasks": [], "hardware": [], "finished": []})
        row["seeds"].append(cell["mean"])
        row["seed_ids"].append(seed)
        row["tasks"].append({task: float(np.mean(r)) for task, r in cell.get("returns", {}).items()})
        row["hardware"].append(cell.get("hardware"))
        row["finished"].append(cell.get("finished"))  # None for an undated cell
    plm_params = ctx.plm.num_parameters()
    for name, row in summary.items():
        add_statistics(row)  # mean and sample std over seeds, 95% CI over the (seed, test task) units
        row["params"] = fresh_method(name, ctx).num_parameters()
        row["percentage"] = 100.0 * row["params"] / plm_params
    return summary


def record_in_card(
    folder: str | Path, suite_name: str, summary: dict[str, dict[str, Any]], budget: Budget, command: str
) -> Path:
    """Write a run's table for one suite (ours beside the paper's) into the model card of the Prompt
    Diffuser folder ``folder`` (e.g. ``hub_models/<suite>``), as its "Across the test split"
    section; the rest of the card stays. Returns the card's path."""
    from promptrl.methods.diffuser import PromptDiffuser

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{folder / CONFIG_NAME} not found: record writes into the model card of a Prompt Diffuser "
            f"folder (hub_models/<suite>, with plm/ inside)"
        )
    pd = PromptDiffuser.from_pretrained(folder)
    pretrained = (
        json.loads((folder / "pretrained" / CONFIG_NAME).read_text())
        if (folder / "pretrained" / CONFIG_NAME).is_file()
        else {}
    )
    text = (
        f"Command: `{command}` ({measured_hardware({suite_name: summary})})."
        + (
            " `--collect` tabulates the cells that runs of the same command without it made (e.g. one process per "
            "seed with `--seed-list`)."
            if "--collect" in command.split()
            else ""
        )
        + f" Every method adapts per test task on its first {budget.few_shot_episodes} expert episode(s) for "
        f"{budget.epochs} x {budget.steps_per_epoch} steps (the Prompt Diffuser from this folder's `pretrained/` "
        f"generator, one generator per task, sampling at its temperature {pretrained.get('temperature', '—')}"
        + ("; the (T=0) row at 0" if "Prompt Diffuser (T=0)" in summary else "")
        + f") and is evaluated for {budget.episodes} episodes per task; the mean test-split return with its 95% "
        f"confidence interval over seeds x test tasks.\n\n" + suite_table(suite_name, summary)
    )
    pd.settings.model_card = {**(pd.settings.model_card or {}), "test_split": text}
    pd.save_pretrained(folder)
    return folder / "README.md"


def write_results(summaries: dict[str, Summary], out: str | Path, command: str, budget: Budget) -> Path:
    """Write ``table1.md`` and ``table1.csv`` under ``out`` (``table1-<suite>[_<suite>...]`` when the
    run leaves out a Table 1 suite, so that a one-suite run never replaces the whole table;
    ``..._<methods>`` when it leaves out a Table 1 method, so that a run of some methods never replaces
    the table of all; and ``..._<budget tag>`` for a budget other than the full or the quick one, so
    that a run at another budget never replaces the full run's table); returns the markdown path."""
    all_suites = set(TABLE1_SUITES) <= set(summaries)
    all_methods = all(set(METHODS) <= set(summary) for summary in summaries.values())
    name = "table1" if all_suites and all_methods else "table1-" + "_".join(summaries)
    if not all_methods:
        methods = dict.fromkeys(m for summary in summaries.values() for m in summary)
        name += "_" + "+".join(m.lower().replace(" ", "-").replace("(", "").replace(")", "") for m in methods)
    if budget.tag() not in (FULL.tag(), QUICK.tag()):
        name += f"_{budget.tag()}"
    return write_tables(summaries, Path(out) / name, command, budget)
