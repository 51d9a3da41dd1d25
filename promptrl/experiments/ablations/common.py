"""What every ablation shares: the shipped models and datasets of a suite, cells measured and cached
over seeds and test tasks, and the Markdown / CSV / PNG files they write."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from promptrl.common.files import atomic_file, csv_text, write_text_atomic
from promptrl.experiments.executors import Executor
from promptrl.experiments.reproduce import (
    Budget,
    Context,
    Setup,
    adopt_tasks,
    build_method,
    cell_path,
    finished_cell,
    fresh_method,
    hub_folder,
    measured_with_other_models,
    run_cells,
)
from promptrl.experiments.tables import add_statistics, hardware, mean_and_ci, mean_std, paired_check
from promptrl.nn.diffusion import UPDATE_RULES as DIFFUSION_UPDATE_RULES
from promptrl.suites import load_suite

UPDATE_RULES = tuple(sorted(DIFFUSION_UPDATE_RULES, key=("dm", "dt", "sum", "projection").index))
"""The update rules of :data:`promptrl.nn.diffusion.UPDATE_RULES`, in the order of the paper's Fig. 3."""
DEFAULT_BUDGET = Budget(seeds=1, episodes=5, epochs=3, steps_per_epoch=100)
"""The ablations' default budget: 1 seed, 5 evaluation episodes per task, 300 fine-tuning steps."""


def ours(r: dict[str, Any]) -> str:
    """A measured setting as "mean ± std" over its seeds."""
    return mean_std((r["mean"], r["std"]))


def csv_row(r: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """A CSV row of a measured setting: ``keys``, then its mean, sample std (empty for one seed) and number of seeds."""
    std = "" if r["std"] is None else round(r["std"], 2)
    return {**keys, "mean": round(r["mean"], 2), "std": std, "seeds": len(r["seeds"])}


def context(
    suite_name: str,
    budget: Budget,
    hub_root: str | Path,
    device: str,
    n_tasks: int | None,
    qualities: Sequence[str] = ("expert",),
    methods: Sequence[str] = (),
    split: str = "test",
    models: Path | None = None,
    make_datasets: bool = True,
) -> Context:
    """The shipped models of a suite (a name or a spec file's path) loaded from ``<hub_root>/<name>``, and
    the datasets of the first ``n_tasks`` tasks of ``split`` (its test tasks by default) made (unless
    ``make_datasets`` is False); ``models``: where fine-tuned generators are kept (see :class:`Context`)."""
    suite = load_suite(suite_name)
    tasks = suite.split(split)[:n_tasks] if n_tasks else suite.split(split)
    hub = hub_folder(suite.name, hub_root)
    setup = Setup(
        suite.ref, budget, hub, device, tuple(tasks), models=models, methods=tuple(methods), qualities=tuple(qualities)
    )
    return setup.context(make_datasets)


Build = Callable[[str, Context, int, int], Any]


def measure(
    ctx: Context, label: str, build: Build, runs: Path, collect: bool = False, executor: Executor | None = None
) -> dict[str, Any] | None:
    """Mean ± std over the budget's seeds of ``build``'s test return (cells cached under ``runs``).
    ``collect=True`` runs nothing: the finished seeds only, None if there are none."""
    return measure_all(ctx, {label: build}, runs, collect, executor)[label]


def measure_all(
    ctx: Context,
    builds: dict[str, Build],
    runs: Path,
    collect: bool = False,
    executor: Executor | None = None,
    table1: dict[str, str] | None = None,
    table1_runs: Path | None = None,
    other_task_sets: bool = False,
) -> dict[str, dict[str, Any] | None]:
    """:func:`measure` of every ``label: build`` at once: with an ``executor`` all their (seed, test task)
    units run side by side (``build`` must then pickle: a module-level function or a ``partial`` of one).
    Each measured label's row holds ``"seeds"`` (each seed's mean), ``"seed_ids"``, ``"tasks"`` (per
    seed, each task's mean) and the statistics of :func:`~promptrl.experiments.tables.add_statistics`.

    ``table1`` maps labels that compute exactly a Table 1 method (``{label: method}``) to it: where the
    context's tasks are all of the suite's test tasks, those cells are Table 1's own, in
    ``table1_runs`` (``<out>/runs/<suite>/<budget tag>`` of ``promptrl reproduce``), read when
    finished and written there when not. A Table 1 cell measured with other models than the context's
    (e.g. an ablation run with another ``--hub``) is left as it is, and the label measured in ``runs``.

    Before measuring, each cell adopts (:func:`~promptrl.experiments.reproduce.adopt_tasks`) the test
    tasks that Table 1's cell holds (``table1`` labels) and, with ``other_task_sets``, that the same
    cell holds under another set of test tasks (``--tasks``), and measures only the rest. Pass
    ``other_task_sets`` only where the fingerprint covers every model a cell uses: not where the
    ablation pre-trains models inside its task set's folder."""
    table1 = table1 if table1 and table1_runs is not None else {}
    everything = ctx.tasks == list(ctx.suite.test_tasks)
    labels, cells = [], []
    for label, build in builds.items():
        for seed in range(ctx.budget.seeds):
            labels.append(label)
            own = runs / label.replace(" ", "_") / f"seed{seed}.json"
            table1_cell = None if label not in table1 else cell_path(table1_runs, table1[label], seed, ctx.budget)
            sources = [own, *(in_other_task_sets(own) if other_task_sets else [])]
            sources += [table1_cell] if table1_cell is not None else []
            if (
                everything
                and table1_cell is not None
                and not measured_with_other_models(table1[label], ctx, table1_cell)
            ):
                cells.append((table1[label], seed, table1_cell, build_method))
            else:
                cells.append((label, seed, own, build))
            if not collect:
                adopt_tasks(cells[-1][0], ctx, cells[-1][2], sources)
    if collect:
        kept = [finished_cell(c[0], ctx, c[2]) is not None for c in cells]
        labels, cells = [x for x, k in zip(labels, kept) if k], [c for c, k in zip(cells, kept) if k]
    measured = run_cells(cells, ctx, executor, desc=f"{ctx.suite.name} cells")
    return tabulate_cells(
        builds, ((label, seed, cell) for label, (_, seed, _, _), cell in zip(labels, cells, measured))
    )


def tabulate_cells(
    labels: Iterable[str], cells: Iterable[tuple[str, int, dict[str, Any]]]
) -> dict[str, dict[str, Any] | None]:
    """Each label's row (:func:`measure_all`'s) from its finished ``(label, seed, cell)`` cells; None
    for a label without any."""
    rows: dict[str, dict[str, Any]] = {}
    for label, seed, cell in cells:
        row = rows.setdefault(label, {"seeds": [], "seed_ids": [], "tasks": []})
        row["seeds"].append(cell["mean"])
        row["seed_ids"].append(seed)
        row["tasks"].append({t: float(np.mean(r)) for t, r in cell["returns"].items()})
    return {label: add_statistics(rows[label]) if label in rows else None for label in labels}


def fine_tune_pretrained(
    _: str, ctx: Context, task: int, seed: int, pretrained: Path, generator_class: type | None = None
) -> Any:
    """The generator pre-trained in ``pretrained`` (a :class:`~promptrl.methods.diffuser.PromptDiffuser`
    unless ``generator_class`` says otherwise), fine-tuned on the task's few-shot data as Table 1
    fine-tunes the shipped one, and reseeded for evaluation as it is."""
    from promptrl.methods.diffuser import PromptDiffuser

    generator = (generator_class or PromptDiffuser).from_pretrained(pretrained, plm=ctx.plm, device=ctx.device)
    generator.set_random_seed(seed)
    b = ctx.budget
    generator.learn(ctx.few_shot(task), epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False)
    generator.set_random_seed(seed)
    return generator


def shipped_pretraining(ctx: Context) -> dict[str, Any]:
    """The saved settings of the suite's shipped pre-trained generator (``<hub>/pretrained/config.json``)."""
    return json.loads((ctx.hub / "pretrained" / "config.json").read_text())


def pretrain_as_shipped(ctx: Context, folder: Path, generator_class: type | None = None, **overrides: Any) -> None:
    """Pre-train a generator in ``folder`` (resuming there) on the suite's training tasks exactly as the
    shipped one was: :data:`~promptrl.methods.diffuser.PRETRAIN_RECIPE`, its number of steps, its seed
    and its saved settings, but for ``overrides``. ``generator_class``: e.g. the VAE of Table 5
    (default :class:`~promptrl.methods.diffuser.PromptDiffuser`)."""
    from promptrl.data.datasets import create_datasets
    from promptrl.experiments.reproduce import _recipe
    from promptrl.methods.diffuser import PRETRAIN_RECIPE, PromptDiffuser, pretrain_generator

    cls = generator_class or PromptDiffuser
    shipped = shipped_pretraining(ctx)
    create_datasets(ctx.suite, "expert", tasks=ctx.suite.train_tasks, progress_bar=True)  # seeded, idempotent
    pretrain_generator(
        ctx.plm,
        ctx.suite.datasets("train", "expert"),
        folder,
        int(shipped["steps_trained"]),
        recipe=PRETRAIN_RECIPE,
        save_steps=1000,
        seed=int(shipped.get("seed", 0)),
        generator_class=cls,
        **{**_recipe(shipped, cls.settings_class), **overrides},
    )


def selection_tasks_text(ctx: Context, split: str) -> str:
    """Which tasks a choice is made on, and whether any of them is a test task (cheetah-dir's are)."""
    overlap = sorted(set(ctx.tasks) & set(ctx.suite.test_tasks))
    kind = "validation" if split == "validation" else "training"
    also = "" if not overlap else f"; tasks {overlap} are test tasks too, as every task of this suite is"
    read = "the test tasks are not read" if not overlap else "no task outside the test split exists to choose on"
    return f"Selection tasks: the {split} tasks {list(ctx.tasks)} ({kind} split{also}); {read}."


def selection_table(
    option: str, values: dict[str, Any], summary: dict[str, dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """A choice among options measured on selection tasks: the Markdown lines (each option's mean with
    its 95% CI over (seed, task) units and its per-task means for the first seed; the selected option,
    the highest mean; the paired test of it against each other option, so that a choice within noise
    says so) and the CSV rows. ``values``: each option's label and its value in the CSV's ``option``
    column; ``summary``: the measured labels (:func:`measure_all`'s rows)."""
    body = [f"| {option} | mean [95% CI over seeds x tasks] | per task (first seed) |", "|---|---|---|"]
    rows: list[dict[str, Any]] = []
    for label, value in values.items():
        if label not in summary:
            body.append(f"| {label} | not run | |")
            continue
        r = summary[label]
        per_task = ", ".join(f"{t}: {v:.1f}" for t, v in r["tasks"][0].items())
        body.append(f"| {label} | {mean_and_ci(r)} | {per_task} |")
        rows.append(
            {option.replace(" ", "_"): value, "mean": round(r["mean"], 2), "n": r["n"]}
            | {
                "ci_low": "" if r["ci"] is None else round(r["ci"][0], 2),
                "ci_high": "" if r["ci"] is None else round(r["ci"][1], 2),
            }
        )
    if summary:
        best = max(summary, key=lambda label: summary[label]["mean"])
        body += ["", f"**Selected: {best}** (the highest mean on the selection tasks).", ""]
        body += [f"| against | paired test of the selected {option} ≥ it |", "|---|---|"]
        body += [f"| {label} | {paired_check(summary, best, label)} |" for label in summary if label != best]
    return body, rows


def runs_folder(out: Path, name: str, suite: str, budget: Budget, tasks: Sequence[int]) -> Path:
    """Where the cells of one ablation, suite, budget and set of test tasks are cached."""
    return out / "runs" / name / suite / budget.tag() / ("tasks-" + "-".join(map(str, tasks)))


def in_other_task_sets(cell: Path) -> list[Path]:
    """The cell at ``cell`` (inside a :func:`runs_folder`) under the other sets of test tasks measured
    beside it; none when ``cell`` is not inside a runs folder."""
    marks = [i for i, part in enumerate(cell.parts) if part.startswith("tasks-")]
    if not marks:
        return []
    base, name, rest = Path(*cell.parts[: marks[-1]]), cell.parts[marks[-1]], Path(*cell.parts[marks[-1] + 1 :])
    return [folder / rest for folder in sorted(base.glob("tasks-*")) if folder.name != name]


def save_png(fig: Any, path: Path, dpi: int) -> None:
    """Save a matplotlib figure as PNG atomically (temp file, then rename)."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def write_ablation(
    out: Path, stem: str, title: str, command: str, budget: Budget | None, body: list[str], rows: list[dict[str, Any]]
) -> Path:
    """``<stem>.md`` (header, body) and ``<stem>.csv`` (rows) under ``out``; returns the markdown path."""
    import datetime

    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    head = [
        f"# {title}\n",
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Hardware: {hardware()}  ",
    ] + ([f"Budget: {json.dumps(asdict(budget))}\n"] if budget else [""])
    write_text_atomic(md, "\n".join(head + body) + "\n")
    if rows:
        write_text_atomic(out / f"{stem}.csv", csv_text(list(rows[0]), [list(r.values()) for r in rows]))
    return md


def adapt(method: str, ctx: Context, task: int, seed: int, data: Any, prompt_data: Any = None, **settings: Any) -> Any:
    """``method`` built from the shipped models, settings overridden, adapted on ``data`` with the budget.
    A Prompt Diffuser is reseeded after training, as in Table 1, so its evaluation draws the same prompts
    in every ablation that runs it."""
    model = fresh_method(method, ctx, seed)
    model.settings = replace(model.settings, **settings)
    b = ctx.budget
    model.learn(data, epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False, prompt_data=prompt_data)
    if method.startswith("Prompt Diffuser"):
        model.set_random_seed(seed)
    return model


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError('plots need matplotlib: pip install "promptrl[plots]"') from err
    return plt
