"""The PLM's training budget (not in the paper)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any

from promptrl.common.files import saved_steps
from promptrl.data.datasets import create_datasets
from promptrl.experiments.ablations.common import (
    Build,
    measure_all,
    runs_folder,
    tabulate_cells,
    write_ablation,
)
from promptrl.experiments.ablations.gradient_rules import build_rule
from promptrl.experiments.executors import Executor
from promptrl.experiments.reproduce import (
    Budget,
    Context,
    Setup,
    build_method,
    cell_on_tasks,
    hub_folder,
)
from promptrl.experiments.tables import mean_and_ci, paired_check
from promptrl.methods.plm import train_plm
from promptrl.suites import load_suite
from promptrl.tasks.spec import load_spec

REFERENCE_PLM_STEPS = 50_000
"""The reference PLM budget (Prompt-DT's): 50,000 steps of 16 sequences per task."""
REFERENCE_BATCH_PER_TASK = 16
PLM_BUDGET_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Fractions of :data:`REFERENCE_PLM_STEPS` the ``plm-budget`` ablation measures by default."""
PLM_BUDGET_COLUMNS: dict[str, Build] = {
    "Prompt-DT-Expert": build_method,
    "Prompt-Tuning DT": build_method,
    "Prompt Diffuser (projection)": partial(build_rule, rule="projection"),
    "Prompt Diffuser (dt)": partial(build_rule, rule="dt"),
}
"""The columns measured with each PLM, and how each adapts (Table 1's adaptation at the ablation's budget)."""
PLM_BUDGET_CHECKS = (
    ("Prompt Diffuser (projection)", "Prompt-Tuning DT"),
    ("Prompt Diffuser (dt)", "Prompt-Tuning DT"),
    ("Prompt-Tuning DT", "Prompt-DT-Expert"),
)
"""The paper's ordering, checked per PLM: Prompt Diffuser (each update rule) ≥ Prompt-Tuning DT ≥ expert prompts."""


PLM_BUDGET_ADAPTATION = Budget(seeds=1, episodes=10, epochs=20, steps_per_epoch=100)
"""The ``plm-budget`` ablation's default budget: Table 4's fine-tuning (2,000 steps), 10 episodes, 1 seed."""


def _build_column(label: str, ctx: Context, task: int, seed: int) -> Any:
    """The column of cell ``label`` (``"<PLM steps> <column>"``) adapted to one test task."""
    column = label.split(" ", 1)[1]
    return PLM_BUDGET_COLUMNS[column](column, ctx, task, seed)


def saved_cells(
    runs: Path, labels: Sequence[str], tasks: Sequence[int], seeds: int
) -> tuple[dict[str, dict[str, Any] | None], str | None]:
    """The rows of ``labels`` from their finished cells under ``runs`` as saved, without the models
    they were measured with at hand, and the fingerprint of those models (None if no cell names one).
    Cells that name different models are an error: they cannot be one row of a table."""
    found: list[tuple[str, int, dict[str, Any]]] = []
    models: dict[str, Path] = {}
    for label in labels:
        for seed in range(seeds):
            path = runs / label.replace(" ", "_") / f"seed{seed}.json"
            saved = json.loads(path.read_text()) if path.is_file() else None
            cell = None if saved is None else cell_on_tasks(saved, tasks)
            if cell is None:
                continue
            found.append((label, seed, cell))
            if saved.get("models") is not None:
                models.setdefault(saved["models"], path)
    if len(models) > 1:
        named = "; ".join(f"{path} ({fingerprint})" for fingerprint, path in models.items())
        raise ValueError(
            f"cells of {list(labels)} were measured with different models ({named}), and their models are not "
            "at hand to tell which are current: measure them again with the PLM present"
        )
    return tabulate_cells(labels, found), next(iter(models), None)


def plm_budget(
    suite_name: str = "cheetah-vel",
    budget: Budget = PLM_BUDGET_ADAPTATION,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    fractions: Sequence[float] = PLM_BUDGET_FRACTIONS,
    batch_per_task: int = REFERENCE_BATCH_PER_TASK,
    collect: bool = False,
    plms_only: bool = False,
    plm_overrides: Mapping[str, Any] | None = None,
    command: str = "promptrl ablate plm-budget cheetah-vel",
    executor: Executor | None = None,
) -> Path:
    """Does the paper's ordering (Prompt Diffuser ≥ Prompt-Tuning DT ≥ expert prompts) appear as the
    PLM's training budget grows, and with which update rule?

    One Prompt-DT is trained with the recipe of the suite's shipped PLM (architecture, learning rate,
    warm-up, prompt window) at ``batch_per_task`` sequences per task, and measured at each fraction of
    :data:`REFERENCE_PLM_STEPS` steps: its learning rate is constant after warm-up, so the run to a
    larger budget passes through the smaller ones, and each budget is a saved copy of it
    (``<out>/runs/plm-budget/<suite>/models/<run>/plm-<steps>``, shared by every adaptation budget and
    set of test tasks; training resumes after a kill). With each PLM, every column of
    :data:`PLM_BUDGET_COLUMNS` adapts per test task as in Table 1, at ``budget`` (Table 4's fine-tuning
    budget by default); both Prompt Diffusers fine-tune the suite's shipped pre-trained generator,
    which was pre-trained with L_DM alone and so never saw a PLM. Nothing is selected: each budget
    takes its PLM at exactly that step, each adaptation its last step, the generator its default
    temperature. Each check of :data:`PLM_BUDGET_CHECKS` is the paired test of Table 1's ordering
    checks over the (seed, test task) units. ``collect=True`` trains and runs nothing: it tabulates the
    finished cells ("not run" for the others); those of a budget whose PLM folder is gone are read as
    saved (:func:`saved_cells`) and the table names the models they were measured with. ``plms_only=True`` trains (or resumes) the PLM to every
    budget and saves each, then tabulates as ``collect`` does: the PLMs can be trained on an
    accelerator and the cells measured later, anywhere the saved PLMs are copied to. ``plm_overrides``:
    fields of :class:`~promptrl.methods.plm.PromptDTSettings` that replace the shipped recipe's (e.g.
    ``{"bf16": False}``, float32 training, faster on CPUs without AMX); they name the run's folder, so
    a run with other overrides is another run."""
    from promptrl.experiments.reproduce import _recipe
    from promptrl.methods.plm import PromptDTSettings

    steps_list = sorted({max(1, round(f * REFERENCE_PLM_STEPS)) for f in fractions})
    if not steps_list or any(not 0 < f <= 10 for f in fractions):
        raise ValueError(
            f"fractions must be numbers in (0, 10] of {REFERENCE_PLM_STEPS:,} steps, got {list(fractions)}"
        )
    if collect and plms_only:
        raise ValueError("collect and plms_only exclude each other: collect trains nothing, plms_only trains the PLMs")
    suite_ref, suite_name = suite_name, load_spec(suite_name).name
    out = Path(out)
    suite = load_suite(suite_ref)
    tasks = suite.test_tasks[:n_tasks] if n_tasks else suite.test_tasks
    hub = hub_folder(suite_name, hub_root)
    config = json.loads((hub / "plm" / "config.json").read_text())
    overrides = dict(plm_overrides or {})
    unknown = sorted(set(overrides) - {f.name for f in fields(PromptDTSettings)})
    if unknown:
        raise ValueError(f"plm_overrides: {unknown} are not PromptDTSettings fields")
    hyper = {**_recipe(config, PromptDTSettings), **overrides, "batch_per_task": batch_per_task}
    shown = {k: "auto" if v is None else v for k, v in sorted(overrides.items())}
    tag = "".join(f"-{k}-{v}" for k, v in shown.items())
    run_name = f"batch{batch_per_task}{tag}"
    runs = runs_folder(out, "plm-budget", suite_name, budget, tasks) / run_name
    models = out / "runs" / "plm-budget" / suite_name / "models" / run_name  # shared by every budget and task set
    head = (
        f"One Prompt-DT trained with the recipe of `{suite_name}`'s shipped PLM at {batch_per_task} sequences per "
        f"task (the reference: {REFERENCE_PLM_STEPS:,} steps of {REFERENCE_BATCH_PER_TASK})"
        + "".join(f", with {k} = {v}" for k, v in shown.items())
        + ", measured at each budget; "
        f"with it, each column adapts per test task {list(tasks)} as in Table 1 ({budget.epochs} x "
        f"{budget.steps_per_epoch} steps on {budget.few_shot_episodes} expert episode(s), {budget.episodes} "
        f"evaluation episodes per task, {budget.seeds} seed(s)). Cells: mean [95% CI over seeds x test tasks]. "
        "Checks: the paired test of Table 1's ordering checks. Nothing is selected (no checkpoint, temperature or "
        "rule choice), so no number here reads a split to make a choice.\n"
    )
    columns = list(PLM_BUDGET_COLUMNS)
    body = [
        head,
        "| PLM steps | % of reference | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    checks = ["", "| PLM steps | " + " | ".join(f"{a} ≥ {b}" for a, b in PLM_BUDGET_CHECKS) + " |"]
    checks.append("|---|" + "---|" * len(PLM_BUDGET_CHECKS))
    rows: list[dict[str, Any]] = []
    if not (collect or plms_only):
        create_datasets(suite, "expert", tasks=tasks, progress_bar=True)
    unkept: list[str] = []
    for steps in steps_list:
        share = 100.0 * steps * batch_per_task / (REFERENCE_PLM_STEPS * REFERENCE_BATCH_PER_TASK)
        plm_folder = models / f"plm-{steps}"
        labels = [f"{steps} {c}" for c in columns]
        if collect and not plm_folder.is_dir():
            measured, fingerprint = saved_cells(runs, labels, tasks, budget.seeds)
            if fingerprint is not None:
                unkept.append(f"{steps:,} (models {fingerprint})")
        else:
            if not (plm_folder / "config.json").is_file():
                run = models / "plm-run"
                reached = max(saved_steps(run / "final"), saved_steps(run / "checkpoint"))
                if reached > steps:  # the run went past this budget without saving it: it cannot go back
                    raise ValueError(
                        f"fractions: the PLM run in {run} is at {reached:,} steps, past {steps:,}, and its "
                        f"{steps:,}-step PLM was not saved ({plm_folder.name}/); give every fraction in the run that "
                        f"trains through it, or remove {run} to train again from step 0"
                    )
                plm = train_plm(suite_ref, run, steps, device=device, checkpoint_steps=500, **hyper)
                plm.save_pretrained(plm_folder)
            setup = Setup(suite.ref, budget, hub, device, tuple(tasks), qualities=("expert",), plm=plm_folder)
            ctx = setup.context(make_datasets=False)
            measured = measure_all(
                ctx,
                dict.fromkeys(labels, _build_column),
                runs,
                collect or plms_only,
                executor,
                other_task_sets=True,  # the PLMs are shared by every task set
            )
        summary = {c: measured[f"{steps} {c}"] for c in columns if measured[f"{steps} {c}"] is not None}
        text = []
        for c in columns:
            if c not in summary:
                text.append("not run")
                continue
            r = summary[c]
            text.append(mean_and_ci(r))
            rows.append(
                {
                    "plm_steps": steps,
                    "column": c,
                    "mean": round(r["mean"], 2),
                    "std": "" if r["std"] is None else round(r["std"], 2),
                }
                | {
                    "ci_low": "" if r["ci"] is None else round(r["ci"][0], 2),
                    "ci_high": "" if r["ci"] is None else round(r["ci"][1], 2),
                }
                | {"seeds": len(r["seeds"])}
            )
        body.append(f"| {steps:,} | {share:.1f}% | " + " | ".join(text) + " |")
        verdicts = [
            paired_check(summary, a, b) if a in summary and b in summary else "not run" for a, b in PLM_BUDGET_CHECKS
        ]
        checks.append(f"| {steps:,} | " + " | ".join(verdicts) + " |")
    if unkept:
        checks += [
            "",
            f"PLMs not in `{models}` for the budgets {', '.join(unkept)}: their cells are read as saved, "
            "each budget's all measured with the one set of models named (the fingerprint of the PLM and the "
            "pre-trained generator), which cannot be checked against the missing PLM.",
        ]
    return write_ablation(
        out,
        f"plm-budget-{suite_name}",
        f"The PLM's training budget and the paper's ordering, {suite_name}",
        command,
        budget,
        body + checks,
        rows,
    )
