"""Table 9: few-shot against zero-shot adaptation."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from promptrl.experiments.ablations.common import (
    DEFAULT_BUDGET,
    context,
    csv_row,
    measure_all,
    ours,
    runs_folder,
    write_ablation,
)
from promptrl.experiments.executors import Executor
from promptrl.experiments.paper import paper
from promptrl.experiments.reproduce import (
    Budget,
    Context,
    build_method,
    fresh_method,
)
from promptrl.experiments.tables import mean_std
from promptrl.tasks.spec import load_spec


def _build_as(_: str, ctx: Context, task: int, seed: int, method: str) -> Any:
    """Table 1's ``method`` (:func:`~promptrl.experiments.reproduce.build_method`) under another label."""
    return build_method(method, ctx, task, seed)


def _prompt_dt_zero(_: str, ctx: Context, task: int, seed: int) -> Any:
    """Prompt-DT with expert prompts of the training tasks the generator was pre-trained on (the same
    information as the zero-shot generator)."""
    trained = sorted(int(t) for t in fresh_method("Prompt Diffuser", ctx, seed).settings.conditions)
    method = fresh_method("Prompt-DT-Expert", ctx, seed).learn(
        [ctx.suite.dataset(t) for t in trained], progress_bar=False
    )
    method.zero_shot = True  # prompts of the test task come from the training tasks
    return method


def _diffuser_zero(_: str, ctx: Context, task: int, seed: int) -> Any:
    """The pre-trained generator, not fine-tuned, conditioned on the suite's target return."""
    pd = fresh_method("Prompt Diffuser", ctx, seed)
    pd.settings.target_rtg = float(ctx.suite.rtg_target)
    pd.zero_shot = True  # conditions of the training tasks, none of the test task
    return pd


def zero_shot(
    suite_name: str = "ant-dir-ood",
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    command: str = "promptrl ablate zero-shot ant-dir-ood",
    executor: Executor | None = None,
) -> Path:
    """Table 9: few-shot methods (one expert episode of the test task) against zero-shot ones: Prompt-DT
    with expert prompts of the training tasks the generator was pre-trained on, and that pre-trained
    generator (no fine-tuning) with its training-task conditions and the suite's target return as
    return-to-go. ``executor`` runs the units on its workers."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    out = Path(out)
    ctx = context(suite_ref, budget, hub_root, device, n_tasks)
    runs = runs_folder(out, "zero-shot", suite_name, budget, ctx.tasks)
    ref = paper("table9_ant_dir_ood") if suite_name == "ant-dir-ood" else {}
    builders = {
        "Prompt-DT few-shot": partial(_build_as, method="Prompt-DT-Expert"),
        "Prompt-Tuning DT few-shot": partial(_build_as, method="Prompt-Tuning DT"),
        "Prompt Diffuser few-shot": partial(_build_as, method="Prompt Diffuser"),
        "Prompt-DT zero-shot": _prompt_dt_zero,
        "Prompt Diffuser zero-shot": _diffuser_zero,
    }
    rows, body = (
        [],
        [
            f"Test tasks {ctx.tasks}; zero-shot prompts come from the training tasks only.\n",
            "| setting | ours | paper |",
            "|---|---|---|",
        ],
    )
    measured = measure_all(ctx, builders, runs, False, executor, other_task_sets=True)
    for label in builders:
        r = measured[label]
        body.append(f"| {label} | {ours(r)} | {mean_std(ref.get(label))} |")
        rows.append(csv_row(r, setting=label) | {"paper": mean_std(ref.get(label))})
    return write_ablation(
        out, f"zero-shot-{suite_name}", f"Zero-shot vs few-shot (Table 9), {suite_name}", command, budget, body, rows
    )
