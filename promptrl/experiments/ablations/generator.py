"""Table 5: the diffusion generator against a conditional VAE."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from promptrl.experiments.ablations.common import (
    context,
    fine_tune_pretrained,
    measure_all,
    pretrain_as_shipped,
    runs_folder,
    shipped_pretraining,
    write_ablation,
)
from promptrl.experiments.executors import Executor
from promptrl.experiments.paper import paper
from promptrl.experiments.reproduce import (
    FULL,
    Budget,
    build_method,
)
from promptrl.experiments.tables import mean_and_ci, mean_std, paired_check
from promptrl.tasks.spec import load_spec


def generative_models(
    suites: Sequence[str],
    budget: Budget = FULL,
    out: str | Path = "results/ablations",
    hub_root: str | Path = "hub_models",
    device: str = "cpu",
    n_tasks: int | None = None,
    table1_out: str | Path = "results",
    collect: bool = False,
    command: str = "promptrl ablate generator all",
    executor: Executor | None = None,
) -> Path:
    """Table 5: the diffusion generator (DM) against a conditional VAE in its place, everything else the
    same. Per suite, a VAE generator (:class:`~promptrl.methods.baselines.vae.VAEPromptGenerator`, the
    width and depth of the shipped noise network) is pre-trained on the training tasks exactly as the
    shipped diffusion generator was (:data:`~promptrl.methods.diffuser.PRETRAIN_RECIPE`, the same
    number of steps) and saved with the shipped generator's fine-tuning settings; then both fine-tune
    per test task as in Table 1 and are evaluated. The DM row is Table 1's Prompt Diffuser: on all
    test tasks its cells are those of ``<table1_out>/runs`` (shared: a finished Table 1 cell is
    reused, a new one completes Table 1 too). Each suite's "DM ≥ VAE" is the paired test of Table 1's
    ordering checks. ``collect=True`` trains and runs nothing."""
    from promptrl.methods.baselines.vae import VAEPromptGenerator

    out = Path(out)
    ref = paper("table5_generator")
    body = [
        f"DM: Table 1's Prompt Diffuser; VAE: a conditional VAE pre-trained and fine-tuned the same way "
        f"({budget.epochs} x {budget.steps_per_epoch} fine-tuning steps on {budget.few_shot_episodes} expert "
        f"episode(s), {budget.episodes} evaluation episodes per task, {budget.seeds} seed(s)). Cells: mean [95% CI "
        "over seeds x test tasks] (paper: mean ± std over seeds).\n",
        "| suite | test tasks | DM | VAE | DM ≥ VAE | paper DM | paper VAE |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[dict[str, Any]] = []
    for suite_ref in suites:
        ctx = context(
            suite_ref, budget, hub_root, device, n_tasks, methods=("Prompt Diffuser",), make_datasets=not collect
        )
        suite_name = ctx.suite.name
        steps = int(shipped_pretraining(ctx)["steps_trained"])
        runs = runs_folder(out, "generator", suite_name, budget, ctx.tasks)
        vae_folder = runs / "models" / f"vae-pretrained-{steps}"
        if not collect:
            pretrain_as_shipped(ctx, vae_folder, VAEPromptGenerator)
        vae = f"VAE-pretrained-{steps}"
        builds = {
            "Prompt Diffuser": build_method,
            vae: partial(fine_tune_pretrained, pretrained=vae_folder, generator_class=VAEPromptGenerator),
        }
        table1 = Path(table1_out) / "runs" / suite_name / budget.tag()
        measured = measure_all(ctx, builds, runs, collect, executor, {"Prompt Diffuser": "Prompt Diffuser"}, table1)
        summary = {key: measured[label] for key, label in (("DM", "Prompt Diffuser"), ("VAE", vae)) if measured[label]}
        text = {}
        for key in ("DM", "VAE"):
            if key not in summary:
                text[key] = "not run"
                continue
            r = summary[key]
            text[key] = mean_and_ci(r)
            rows.append(
                {"suite": suite_name, "generator": key, "mean": round(r["mean"], 2), "n": r["n"]}
                | {"seeds": len(r["seeds"]), "paper": mean_std(ref[key].get(suite_name))}
            )
        check = paired_check(summary, "DM", "VAE") if len(summary) == 2 else "not run"
        body.append(
            f"| {suite_name} | {ctx.tasks} | {text['DM']} | {text['VAE']} | {check} | "
            f"{mean_std(ref['DM'].get(suite_name))} | {mean_std(ref['VAE'].get(suite_name))} |"
        )
    stem = "generator-" + ("all" if len(suites) > 1 else load_spec(suites[0]).name)
    return write_ablation(out, stem, "Diffusion vs VAE prompt generator (Table 5)", command, budget, body, rows)
