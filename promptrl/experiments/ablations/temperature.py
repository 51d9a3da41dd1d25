"""The sampling temperature, chosen off the test split (not in the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from promptrl.experiments.ablations.common import (
    context,
    measure_all,
    runs_folder,
    selection_table,
    selection_tasks_text,
    write_ablation,
)
from promptrl.experiments.ablations.plm_budgets import PLM_BUDGET_ADAPTATION
from promptrl.experiments.executors import Executor
from promptrl.experiments.reproduce import (
    Budget,
    Context,
    fine_tuned_generator,
)
from promptrl.suites import load_suite
from promptrl.tasks.spec import load_spec

TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The sampling temperatures the ``temperature`` ablation compares by default."""


def _build_temperature(_: str, ctx: Context, task: int, seed: int, temperature: float) -> Any:
    """The Prompt Diffuser fine-tuned on the task's few-shot data as in Table 1 (once per task and
    seed: kept in ``ctx.models`` and reused by every temperature), sampling at ``temperature``."""
    pd = fine_tuned_generator("Prompt Diffuser", ctx, task, seed)
    pd.settings.temperature = temperature
    return pd


def temperature_selection(
    suite_name: str = "cheetah-vel",
    budget: Budget = PLM_BUDGET_ADAPTATION,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = 3,
    temperatures: Sequence[float] = TEMPERATURES,
    collect: bool = False,
    command: str = "promptrl ablate temperature cheetah-vel",
    executor: Executor | None = None,
) -> Path:
    """The Prompt Diffuser's sampling temperature, chosen without the test split: on the suite's
    :attr:`~promptrl.suites.TaskSuite.selection_split` (its validation tasks, else its training
    tasks; the first ``n_tasks``), the shipped pre-trained generator is fine-tuned per task as in
    Table 1 (once per task and seed) and evaluated at each temperature. The table gives each
    temperature's mean with its 95% CI over (seed, task) units and the selected one: the highest
    mean, with the paired test against each other temperature, so a choice within noise says so.
    For a suite whose test tasks are also training tasks (cheetah-dir), the selection tasks are test
    tasks too, and the table says so."""
    if not temperatures or any(not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0 for t in temperatures):
        raise ValueError(f"temperatures must be numbers in [0, 1], got {list(temperatures)}")
    suite_ref, suite_name = suite_name, load_spec(suite_name).name
    suite = load_suite(suite_ref)
    split = suite.selection_split
    tasks = suite.split(split)[:n_tasks] if n_tasks else suite.split(split)
    runs = runs_folder(Path(out), "temperature", suite_name, budget, tasks)
    ctx = context(
        suite_ref, budget, hub_root, device, n_tasks, split=split, models=runs / "models", make_datasets=not collect
    )
    labels = {f"T={t:g}": partial(_build_temperature, temperature=float(t)) for t in temperatures}
    measured = measure_all(ctx, labels, runs, collect, executor)
    summary = {label: r for label, r in measured.items() if r is not None}
    table, rows = selection_table("temperature", {label: label[2:] for label in labels}, summary)
    body = [
        f"{selection_tasks_text(ctx, split)} Each task's generator is fine-tuned once per seed as in Table 1 "
        f"({budget.epochs} x {budget.steps_per_epoch} steps on {budget.few_shot_episodes} expert episode(s)) and "
        f"evaluated at every temperature ({budget.episodes} episodes per task, {budget.seeds} seed(s)).\n",
        *table,
    ]
    return write_ablation(
        Path(out),
        f"temperature-{suite_name}",
        f"The sampling temperature, chosen on the {split} split, {suite_name}",
        command,
        budget,
        body,
        rows,
    )
