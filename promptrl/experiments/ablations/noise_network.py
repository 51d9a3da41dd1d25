"""The noise network's architecture, chosen off the test split (not in the paper)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from promptrl.experiments.ablations.common import (
    context,
    fine_tune_pretrained,
    measure_all,
    pretrain_as_shipped,
    runs_folder,
    selection_table,
    selection_tasks_text,
    shipped_pretraining,
    write_ablation,
)
from promptrl.experiments.ablations.plm_budgets import PLM_BUDGET_ADAPTATION
from promptrl.experiments.executors import Executor
from promptrl.experiments.reproduce import Budget
from promptrl.experiments.tables import HOLDS, paired_check
from promptrl.suites import load_suite
from promptrl.tasks.spec import load_spec

NOISE_NETWORKS: dict[str, dict[str, Any]] = {
    "plain, dropout 0.1": {"residual": False, "dropout": 0.1},
    "plain, dropout 0": {"residual": False, "dropout": 0.0},
    "residual, dropout 0.1": {"residual": True, "dropout": 0.1},
}
"""The noise networks the ``noise-net`` ablation compares (settings of
:class:`~promptrl.methods.diffuser.PromptDiffuserSettings`): Appendix B's 3-layer Mish MLP with Table 4's
dropout after every hidden layer, the same without dropout, and the residual MLP whose dropout sits
inside residual branches."""


def _slug(label: str) -> str:
    return label.replace(", ", "-").replace(" ", "").replace(".", "")


def shipped_verdict(summary: dict[str, dict[str, Any]], shipped: str | None) -> str:
    """Whether the shipped network stays. Replacing it re-trains every generator and re-runs every
    Prompt Diffuser cell, so it stays unless another network is ahead of it by the paired test
    ("holds"); of several that are, the highest mean replaces it. ``shipped``: its label, None if no
    network measured is the shipped one."""
    if shipped not in summary or len(summary) < 2:
        return "**The shipped network**: not decided (it, or every other network, is not measured)."
    ahead = [label for label in summary if label != shipped and paired_check(summary, label, shipped).startswith(HOLDS)]
    if not ahead:
        return (
            "**The shipped network**: kept. Rule: it stays unless another network is ahead of it by the paired "
            "test; none is."
        )
    best = max(ahead, key=lambda label: summary[label]["mean"])
    return (
        f"**The shipped network**: to be replaced by {best}. Rule: it stays unless another network is ahead of it "
        f"by the paired test; {best} is ({paired_check(summary, best, shipped)})."
    )


def noise_network_selection(
    suite_name: str = "ant-dir",
    budget: Budget = PLM_BUDGET_ADAPTATION,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = 3,
    networks: dict[str, dict[str, Any]] | None = None,
    collect: bool = False,
    command: str = "promptrl ablate noise-net ant-dir",
    executor: Executor | None = None,
) -> Path:
    """The Prompt Diffuser's noise network, chosen without the test split. For each of ``networks``
    (default :data:`NOISE_NETWORKS`), a generator is pre-trained on the suite's training tasks exactly
    as the shipped one was (its recipe, settings, steps and seed; only the noise network differs),
    then fine-tuned per task of the suite's :attr:`~promptrl.suites.TaskSuite.selection_split` (its
    validation tasks, else its training tasks; the first ``n_tasks``) as Table 1 fine-tunes, and
    evaluated there. The table gives each network's mean with its 95% CI over (seed, task) units, the
    selected one (the highest mean) and the paired test of it against each other network, marks
    the shipped one and says whether it stays (:func:`shipped_verdict`). Pre-training resumes after a kill; ``collect=True`` trains and runs nothing."""
    from promptrl.methods.diffuser import PRETRAIN_RECIPE

    networks = NOISE_NETWORKS if networks is None else networks
    known = {"residual", "dropout", "hidden", "n_hidden"}
    if not networks or any(not isinstance(v, dict) or not v or set(v) - known for v in networks.values()):
        raise ValueError(f"networks must map labels to non-empty dicts of {sorted(known)}, got {networks!r}")
    suite_ref, suite_name = suite_name, load_spec(suite_name).name
    split = load_suite(suite_ref).selection_split
    ctx = context(suite_ref, budget, hub_root, device, n_tasks, split=split, make_datasets=not collect)
    shipped = shipped_pretraining(ctx)
    steps = int(shipped["steps_trained"])
    runs = runs_folder(Path(out), "noise-net", suite_name, budget, ctx.tasks)
    builds, values = {}, {}
    for label, network in networks.items():
        folder = runs / "models" / f"{_slug(label)}-pretrained-{steps}"
        if not collect:
            pretrain_as_shipped(ctx, folder, **network)
        is_shipped = all(shipped.get(k) == v for k, v in network.items())
        name = f"{label}, pre-trained {steps:,} steps" + (" (shipped)" if is_shipped else "")
        builds[name] = partial(fine_tune_pretrained, pretrained=folder)
        values[name] = label
    measured = measure_all(ctx, builds, runs, collect, executor)
    summary = {label: r for label, r in measured.items() if r is not None}
    table, rows = selection_table("noise network", values, summary)
    table += ["", shipped_verdict(summary, next((name for name in values if name.endswith("(shipped)")), None))]
    body = [
        f"{selection_tasks_text(ctx, split)} Each noise network's generator is pre-trained on the "
        f"{len(ctx.suite.train_tasks)} training tasks as the shipped one was ({steps:,} L_DM steps, learning rate "
        f"{PRETRAIN_RECIPE['learning_rate']:g}, batch {PRETRAIN_RECIPE['batch_size']}, the shipped settings and seed), "
        f"then fine-tuned per task as in Table 1 ({budget.epochs} x {budget.steps_per_epoch} steps on "
        f"{budget.few_shot_episodes} expert episode(s)) and evaluated ({budget.episodes} episodes per task, "
        f'{budget.seeds} seed(s), sampling temperature {shipped.get("temperature", 0.5):g}). "(shipped)" marks the '
        "shipped generator's network; it too is pre-trained here, like the others.\n",
        *table,
    ]
    return write_ablation(
        Path(out),
        f"noise-net-{suite_name}",
        f"The noise network, chosen on the {split} split, {suite_name}",
        command,
        budget,
        body,
        rows,
    )
