"""Fig. 3: the Prompt Diffuser's gradient update rules."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from promptrl.experiments.ablations.common import (
    DEFAULT_BUDGET,
    UPDATE_RULES,
    adapt,
    context,
    csv_row,
    measure_all,
    ours,
    pyplot,
    runs_folder,
    save_png,
    write_ablation,
)
from promptrl.experiments.executors import Executor
from promptrl.experiments.paper import paper
from promptrl.experiments.reproduce import (
    Budget,
    Context,
)
from promptrl.tasks.spec import load_spec

TABLE1_RULES = {"projection": "Prompt Diffuser", "dt": "Prompt Diffuser (dt)"}
"""The update rules whose fine-tuning is a Table 1 column's (the default rule, and the dt variant)."""


def build_rule(_: str, ctx: Context, task: int, seed: int, rule: str) -> Any:
    """The Prompt Diffuser fine-tuned on the task's few-shot data with update rule ``rule``."""
    return adapt("Prompt Diffuser", ctx, task, seed, ctx.few_shot(task), update=rule)


def update_rules(
    suites: Sequence[str],
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    command: str = "promptrl ablate update-rules",
    executor: Executor | None = None,
    table1_out: str | Path = "results",
) -> Path:
    """Fig. 3: the Prompt Diffuser fine-tuned with each update rule; change relative to dm (Eq. 18).
    ``executor`` runs the units on its workers. On all of a suite's test tasks, the projection and
    dt rules are Table 1's "Prompt Diffuser" and "Prompt Diffuser (dt)" cells of the same budget
    (in ``<table1_out>/runs``, shared: see :func:`measure_all`)."""
    out = Path(out)
    rows, body = (
        [],
        [
            "Relative change = (return - return_dm) / |return_dm|, in percent (the paper plots performance "
            f"relative to dm). Paper: {paper('fig3_update_rules')}\n",
            "| suite | test tasks | " + " | ".join(UPDATE_RULES) + " |",
            "|---|---|" + "---|" * len(UPDATE_RULES),
        ],
    )
    for suite_ref in suites:
        ctx = context(suite_ref, budget, hub_root, device, n_tasks)
        suite_name = ctx.suite.name
        runs = runs_folder(out, "update-rules", suite_name, budget, ctx.tasks)
        results = measure_all(
            ctx,
            {rule: partial(build_rule, rule=rule) for rule in UPDATE_RULES},
            runs,
            False,
            executor,
            TABLE1_RULES,
            Path(table1_out) / "runs" / suite_name / budget.tag(),
            other_task_sets=True,
        )
        base = results["dm"]["mean"]
        cells = []
        for rule, r in results.items():
            rel = 100.0 * (r["mean"] - base) / max(abs(base), 1e-8)
            cells.append(f"{ours(r)} ({rel:+.1f}%)")
            rows.append(csv_row(r, suite=suite_name, rule=rule) | {"relative_to_dm_percent": round(rel, 2)})
        body.append(f"| {suite_name} | {ctx.tasks} | " + " | ".join(cells) + " |")
    stem = "update-rules-" + ("all" if len(suites) > 1 else load_spec(suites[0]).name)
    md = write_ablation(out, stem, "Update rules of the Prompt Diffuser (Fig. 3)", command, budget, body, rows)
    _plot_update_rules(rows, out / f"{stem}.png")
    return md


def _plot_update_rules(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(suites), 3.2))
    width = 0.8 / len(UPDATE_RULES)
    for i, rule in enumerate(UPDATE_RULES):
        vals = [
            next(r["relative_to_dm_percent"] for r in rows if r["suite"] == s and r["rule"] == rule) for s in suites
        ]
        ax.bar(np.arange(len(suites)) + (i - 1.5) * width, vals, width, label=rule)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(suites)), suites)
    ax.set_ylabel("return relative to dm (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)
