"""Table 2: prompt initialization x fine-tuning data quality."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from promptrl.experiments.ablations.common import (
    DEFAULT_BUDGET,
    adapt,
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
    fine_tuned_generator,
)
from promptrl.experiments.tables import mean_std
from promptrl.suites import load_suite
from promptrl.tasks.spec import QUALITIES, load_spec


def _build_init(_: str, ctx: Context, task: int, seed: int, method: str, data_q: str, init_q: str) -> Any:
    """``method`` fine-tuned on ``data_q`` data of the task from ``init_q`` initial prompts. A Prompt
    Diffuser's fine-tuning does not read the initial prompts (they only condition its generation,
    Algorithm 1, line 9), so it is fine-tuned once per data quality, kept in ``ctx.models``, and
    conditioned on each initialization's prompts."""
    fs = ctx.budget.few_shot_episodes
    init = ctx.suite.dataset(task, init_q, episodes=fs)
    if method.startswith("Prompt Diffuser"):
        generator = fine_tuned_generator(method, ctx, task, seed, quality=data_q)
        generator.condition_on(init)
        generator.set_random_seed(seed)
        return generator
    return adapt(method, ctx, task, seed, ctx.suite.dataset(task, data_q, episodes=fs), init)


def prompt_initialization(
    suite_name: str = "cheetah-vel",
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    methods: Sequence[str] = ("Prompt-Tuning DT", "Prompt Diffuser"),
    collect: bool = False,
    command: str = "promptrl ablate init cheetah-vel",
    executor: Executor | None = None,
    table1_out: str | Path = "results",
) -> Path:
    """Table 2: each method fine-tuned on data of each quality from initial prompts of each quality
    (one episode of each, ``few_shot_episodes``), evaluated on the test tasks. ``collect=True`` runs
    nothing and tabulates the finished cells ("not run" for the others); ``executor`` runs the units
    on its workers. Expert data from expert prompts is Table 1's adaptation, so those two cells are
    Table 1's Prompt-Tuning DT and Prompt Diffuser cells of the same budget in ``<table1_out>/runs``
    (shared on all test tasks, adopted per task on fewer: see :func:`measure_all`)."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    out = Path(out)
    test_tasks = load_suite(suite_ref).test_tasks
    runs = runs_folder(out, "init", suite_name, budget, test_tasks[:n_tasks] if n_tasks else test_tasks)
    ctx = context(suite_ref, budget, hub_root, device, n_tasks, qualities=QUALITIES, models=runs / "models")
    ref = paper("table2_cheetah_vel")
    rows, body = (
        [],
        [
            f"Rows: fine-tuning data quality; columns: prompt initialization. Ours mean ± std over seeds "
            f"(paper in parentheses, cheetah-vel). Test tasks {ctx.tasks}.\n"
        ],
    )
    label = "{} data-{} init-{}".format
    measured = measure_all(
        ctx,
        {
            label(method, data_q, init_q): partial(_build_init, method=method, data_q=data_q, init_q=init_q)
            for method in methods
            for data_q in QUALITIES
            for init_q in QUALITIES
        },
        runs,
        collect,
        executor,
        {label(m, "expert", "expert"): m for m in methods if m in ("Prompt-Tuning DT", "Prompt Diffuser")},
        Path(table1_out) / "runs" / suite_name / budget.tag(),
        other_task_sets=True,  # its generators are fine-tuned per (data quality, seed, task), whatever the task set
    )
    for method in methods:
        body += [f"\n## {method}\n", "| data \\ prompt init | " + " | ".join(QUALITIES) + " |", "|---|---|---|---|"]
        for data_q in QUALITIES:
            cells = []
            for init_q in QUALITIES:
                r = measured[label(method, data_q, init_q)]
                theirs = ref[method][data_q][init_q] if suite_name == "cheetah-vel" else None
                cells.append(("not run" if r is None else ours(r)) + f" ({mean_std(theirs)})")
                if r is not None:
                    rows.append(csv_row(r, method=method, data=data_q, init=init_q) | {"paper": mean_std(theirs)})
            body.append(f"| {data_q} | " + " | ".join(cells) + " |")
    return write_ablation(
        out,
        f"init-{suite_name}",
        f"Prompt initialization x data quality (Table 2), {suite_name}",
        command,
        budget,
        body,
        rows,
    )
