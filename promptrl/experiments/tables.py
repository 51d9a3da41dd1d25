"""Tables of the Table 1 reproduction: markdown and CSV of per-suite summaries beside the paper's
numbers, the paper's ordering checked on them, and where and when the cells were measured.

A summary is ``{method: row}`` per suite, as :func:`~promptrl.experiments.reproduce.reproduce_suite`
returns; a row has ``"seeds"`` (each seed's mean test-split return), ``"seed_ids"``, ``"tasks"`` (per
seed, ``{test task: mean return over its evaluation episodes}``), ``"params"``, ``"percentage"``,
``"hardware"``, ``"finished"``, and the statistics :func:`add_statistics` adds: ``"mean"``, ``"std"``
(sample std over seeds, None for one seed), ``"n"`` (the (seed, test task) units) and ``"ci"`` (the
95% confidence interval of the mean over those units, None for fewer than two).
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from promptrl.common.files import csv_text, write_text_atomic
from promptrl.common.statistics import CONFIDENCE, mean_ci, sample_std
from promptrl.experiments.paper import GAP_BAR, METHODS, NOT_ADAPTED, ORDERING, TABLE4_STEPS, VARIANTS, paper_table

Summary = dict[str, dict[str, Any]]
"""One suite's results: per method, its row."""


Unit = tuple[int, str]
"""A (seed, test task) of a row: the unit the confidence intervals and paired tests are over."""


def units(row: dict[str, Any]) -> dict[Unit, float]:
    """A row's (seed, test task) units: each the mean return of a seed's evaluation episodes on one
    test task (a row without ``"tasks"``: each seed's mean, as one unit per seed)."""
    ids = row.get("seed_ids") or list(range(len(row.get("seeds", []))))
    if "tasks" in row:
        return {(seed, str(task)): value for seed, tasks in zip(ids, row["tasks"]) for task, value in tasks.items()}
    return {(seed, "all"): value for seed, value in zip(ids, row.get("seeds", []))}


def add_statistics(row: dict[str, Any]) -> dict[str, Any]:
    """Set a row's ``"mean"`` and ``"std"`` (sample std, None for one seed) over its seeds' means and
    ``"n"`` and ``"ci"`` (:func:`mean_ci`) over its (seed, test task) :func:`units`; returns ``row``."""
    values = list(units(row).values())
    row["mean"] = statistics.fmean(row["seeds"])
    row["std"] = sample_std(row["seeds"])
    row["n"], row["ci"] = len(values), mean_ci(values)
    return row


def mean_std(values: Sequence[float | None] | None) -> str:
    """``"mean ± std"`` of a ``[mean, std]`` pair (one decimal), the mean alone where the std is None
    (one seed), or "—" for None."""
    if values is None:
        return "—"
    return f"{values[0]:.1f}" if values[1] is None else f"{values[0]:.1f} ± {values[1]:.1f}"


def mean_and_ci(row: dict[str, Any]) -> str:
    """``"mean [low, high]"`` of a row (its 95% confidence interval), the mean alone without one."""
    ci = row.get("ci")
    return f"{row['mean']:.1f}" + ("" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]")


def size(n: int) -> str:
    """A parameter count as the paper prints it (``0.24K``, ``13.71M``), "—" for none."""
    return "—" if n == 0 else (f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.2f}K")


def _paper_cell(paper: dict[str, Any], suite_name: str, method: str) -> Sequence[float] | None:
    return (
        paper[suite_name][paper["columns"].index(method)]
        if suite_name in paper and method in paper["columns"]
        else None
    )


def suite_table(suite_name: str, summary: Summary) -> str:
    """Markdown: one row per method, ours (mean and its 95% confidence interval over the (seed, test
    task) units) beside the paper's, then the sample std over seeds, the seeds and the units."""
    paper = paper_table()
    rows = [
        "| method | ours: mean [95% CI] | paper | std over seeds | seeds | n | trainable params | % of PLM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        std = "—" if row["std"] is None else f"{row['std']:.1f}"
        rows.append(
            f"| {name} | {mean_and_ci(row)} | {mean_std(_paper_cell(paper, suite_name, name))} | {std} | "
            f"{len(row['seeds'])} | {row.get('n', '—')} | {size(row['params'])} | {row['percentage']:.4g}% |"
        )
    return "\n".join(rows)


def _seed_note(row: dict[str, Any], seeds: int | None) -> str:
    """ " [seeds 0, 1]" when a row has fewer than ``seeds`` seeds (e.g. a run in progress), else ""."""
    ids = row.get("seed_ids", [])
    if seeds is None or len(row["seeds"]) >= seeds:
        return ""
    return (
        f" [seed{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}]"
        if ids
        else f" [{len(row['seeds'])} of {seeds} seeds]"
    )


def table1(summaries: dict[str, Summary], seeds: int | None = None) -> str:
    """Markdown in the paper's Table 1 layout: suites as rows, methods as columns, ours (paper); a cell
    with fewer than ``seeds`` seeds names the ones it has ("[seeds 0, 1]")."""
    paper = paper_table()
    methods = [m for m in METHODS + VARIANTS if any(m in s for s in summaries.values())]
    rows = ["| suite | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for suite_name, summary in summaries.items():
        cells = []
        for m in methods:
            ours = summary.get(m)
            mine = "—" if ours is None else mean_std((ours["mean"], ours["std"])) + _seed_note(ours, seeds)
            cells.append(f"{mine} ({mean_std(_paper_cell(paper, suite_name, m))})")
        rows.append(f"| {suite_name} | " + " | ".join(cells) + " |")
    # Sizes depend on the suite's spaces (one row in the paper): the range over the suites where they differ.
    rows.append("| Sizes | " + " | ".join(_span(summaries, m, "params", size) for m in methods) + " |")
    rows.append(
        "| Percentage | " + " | ".join(_span(summaries, m, "percentage", lambda v: f"{v:.4g}%") for m in methods) + " |"
    )
    return "\n".join(rows)


def _span(summaries: dict[str, Summary], method: str, key: str, fmt: Callable[[Any], str]) -> str:
    """``fmt`` of a method's ``key`` over the suites that ran it: one value, or "low–high" where they print differently."""
    values = [s[method][key] for s in summaries.values() if method in s]
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low}–{high}"


HOLDS, FAILS, WITHIN_NOISE = "holds", "fails", "within noise"
"""The verdicts of an ordering check (:func:`paired_verdict`)."""


def paired_verdict(differences: Sequence[float], level: float = CONFIDENCE) -> tuple[str, tuple[float, float] | None]:
    """The verdict on the claim that the mean of paired ``differences`` is positive, and its confidence
    interval (:func:`mean_ci`): "holds" where the interval lies above 0, "fails" where it lies below,
    "within noise" where it contains 0 (or is undefined: fewer than two differences)."""
    ci = mean_ci(differences, level)
    if ci is None or ci[0] <= 0.0 <= ci[1]:
        return WITHIN_NOISE, ci
    return (HOLDS if ci[0] > 0.0 else FAILS), ci


def _shared(summary: Summary, names: Sequence[str]) -> tuple[dict[str, list[float]], str]:
    """The columns' values on the (seed, test task) units they all have, in one order, and a note naming
    the seeds of those units when some column has more."""
    by_name = {m: units(summary[m]) for m in names}
    shared = sorted(set.intersection(*(set(u) for u in by_name.values())))
    if not shared:
        return {}, "— (no seed in common)"
    seeds = sorted({seed for seed, _ in shared})
    partial = any(len(u) > len(shared) for u in by_name.values())
    note = f" [seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}]" if partial else ""
    return {m: [by_name[m][k] for k in shared] for m in names}, note


def _interval(ci: tuple[float, float] | None, n: int, fmt: str = ".1f", label: str = "") -> str:
    """``"<label>[low, high]"``, or the number of units where there is no interval (fewer than two)."""
    return f"{label}[{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci is not None else f"{n} unit{'s' if n != 1 else ''}"


def paired_check(summary: Summary, a: str, b: str) -> str:
    """Column ``a`` above column ``b``: the paired test over their shared units, their means, and
    the confidence interval of the mean difference."""
    values, note = _shared(summary, [a, b])
    if not values:
        return note
    verdict, ci = paired_verdict([x - y for x, y in zip(values[a], values[b])])
    mean_a, mean_b = statistics.fmean(values[a]), statistics.fmean(values[b])
    return f"{verdict}: {mean_a:.1f} vs {mean_b:.1f}, {_interval(ci, len(values[a]), label='Δ ')}{note}"


def relative_gap(pd: float, full: float) -> float:
    """The Prompt Diffuser's distance to Prompt-DT-FT-Full relative to FT-Full: ``|pd - full| / |full|``."""
    return abs(pd - full) / abs(full)


def span_gap(pd: float, full: float, random: float) -> float | None:
    """The Prompt Diffuser's shortfall from Prompt-DT-FT-Full as a share of the Prompt-DT-Random ->
    FT-Full span, ``(full - pd) / (full - random)`` (negative: ahead); None where FT-Full is not above Random."""
    return (full - pd) / (full - random) if full > random else None


def _gap(summary: Summary, pd: str) -> str:
    """The Prompt Diffuser within :data:`GAP_BAR` of FT-Full: the relative gap (:func:`relative_gap`)
    with the paired test of the relative shortfall against the bar and its confidence interval, and
    the span-based gap (:func:`span_gap`) beside it."""
    full, random = "Prompt-DT-FT-Full", "Prompt-DT-Random"
    values, note = _shared(summary, [pd, full, random])
    if not values:
        return note
    mean = {m: statistics.fmean(v) for m, v in values.items()}
    if mean[full] == 0:
        return "— (FT-Full's mean is 0)" + note
    shortfall = [(f - p) / abs(mean[full]) for f, p in zip(values[full], values[pd])]
    verdict, _ = paired_verdict([GAP_BAR - s for s in shortfall])
    ci = mean_ci(shortfall)
    interval = _interval(ci, len(shortfall), ".1%")
    span = span_gap(mean[pd], mean[full], mean[random])
    return (
        f"{verdict}: relative {relative_gap(mean[pd], mean[full]):.1%}{' ahead' if mean[pd] > mean[full] else ''} "
        + (interval if ci is not None else f"({interval})")
        + ", "
        + ("FT-Full not above Random" if span is None else f"{span:.1%} of the Random→FT-Full span")
        + note
    )


def ordering_checks(summaries: dict[str, Summary]) -> str:
    """Markdown: the paper's ordering (:data:`~promptrl.experiments.paper.ORDERING`,
    :data:`~promptrl.experiments.paper.GAP_BAR`) checked on each suite by a paired test over the
    (seed, test task) units the compared columns share (:func:`paired_verdict`; "[seeds ...]" where a
    column has more; "—" where a column was not run), with the columns' means; the Prompt Diffuser's
    variants in parentheses."""
    head = [f"{a} {op} {b}" for a, op, b in ORDERING] + [f"Prompt Diffuser within {GAP_BAR:.0%} of FT-Full"]
    rows = ["| suite | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for suite_name, summary in summaries.items():
        pds = [m for m in ("Prompt Diffuser", *VARIANTS) if m in summary]

        def cell(check: Callable[[str], str], needs: Sequence[str]) -> str:
            if not pds or any(m not in summary for m in needs):
                return "—"
            extra = [f"{m.removeprefix('Prompt Diffuser ').strip('()')}: {check(m)}" for m in pds[1:]]
            return check(pds[0]) + (f" ({'; '.join(extra)})" if extra else "")

        cells = []
        for a, _, b in ORDERING:
            if a == "Prompt Diffuser":
                cells.append(cell(lambda pd, b=b: paired_check(summary, pd, b), [b]))
            else:
                cells.append(paired_check(summary, a, b) if a in summary and b in summary else "—")
        cells.append(cell(lambda pd: _gap(summary, pd), ["Prompt-DT-FT-Full", "Prompt-DT-Random"]))
        rows.append(f"| {suite_name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


ORDERING_TEST = (
    "Each check is a paired comparison over the (seed, test task) units the compared columns share (a unit: the "
    "mean return of a seed's evaluation episodes on one test task; the numbers are the columns' means over those "
    'units, "[seeds ...]" where a column has more; the first Prompt Diffuser column that was run, its variants in '
    "parentheses): it holds where the 95% confidence interval of the mean paired difference (t distribution, "
    'Δ [low, high]) excludes 0 in the claimed direction, fails where it excludes 0 in the other, and is "within '
    f'noise" where it contains 0; the within-{GAP_BAR:.0%} check takes the relative gap |PD − FT-Full| / |FT-Full| '
    "and applies the same test to the paired relative shortfall (FT-Full − PD) / |mean FT-Full| against "
    f"{GAP_BAR:.0%} (its 95% interval in brackets), with the shortfall as a share of the Random→FT-Full span beside it."
)
"""The test behind :func:`ordering_checks`, in words (printed under its table)."""


def _per_cell(summaries: dict[str, Summary], key: str, default: list) -> list:
    """Every row's per-cell list ``key`` (``default`` for a row without it), in one list."""
    return [value for summary in summaries.values() for row in summary.values() for value in row.get(key, default)]


def measured_dates(summaries: dict[str, Summary]) -> str:
    """When the tabulated cells were measured: today, and the span of the cells' finish dates when
    they were measured earlier (a ``--collect`` of cells from several runs) or some are undated.
    Dates are UTC, as the cells' ``finished`` times are."""
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    finished = _per_cell(summaries, "finished", [None])
    dates = sorted(f[:10] for f in finished if f)
    undated = len(finished) - len(dates)
    if not undated and set(dates) <= {today}:
        return today
    parts = [f"{undated} undated cell(s)"] if undated else []
    if dates:
        parts.insert(0, f"cells finished {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else ""))
    return f"{today} (tabulated; " + ", ".join(parts) + ")"


def measured_hardware(summaries: dict[str, Summary]) -> str:
    """The machines the tabulated cells were measured on (this one when the cells do not say)."""
    return "; ".join(dict.fromkeys(h for h in _per_cell(summaries, "hardware", []) if h)) or hardware()


def hardware() -> str:
    """The machine a result was measured on, in words (processor, torch threads, GPU)."""
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, " + (
        torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    )


def budget_note(budget: Any) -> str:
    """What a budget below Table 4's does to the columns (empty at Table 4's budget or above): ``budget``
    has ``epochs``, ``steps_per_epoch`` and ``full_epochs``."""
    steps, full = budget.epochs * budget.steps_per_epoch, budget.full_epochs * budget.steps_per_epoch
    if steps >= TABLE4_STEPS["adaptation"] and full >= TABLE4_STEPS["full"]:
        return ""
    return (
        f"**Budget below the paper's.** The adapted columns ran {steps:,} adaptation steps (Table 4: "
        f"{TABLE4_STEPS['adaptation']:,}) and Prompt-DT-FT-Full {full:,} steps (Table 4: {TABLE4_STEPS['full']:,}): "
        "they show where each method starts, not its strength. Only "
        + ", ".join(NOT_ADAPTED)
        + " train nothing on the test task and read as at the full budget (up to evaluation noise); "
        "the full-budget table is `results/table1.md`."
    )


def write_tables(summaries: dict[str, Summary], path: Path, command: str, budget: Any) -> Path:
    """Write ``<path>.md`` (header, Table 1, the ordering checks, one table per suite) and ``<path>.csv``
    (one row per suite and method: mean, sample std over seeds, the 95% confidence interval of the mean
    over the ``n`` (seed, test task) units, each seed's mean); ``budget`` is the dataclass the cells ran under. Returns the
    markdown path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = [
        "# Table 1 (measured)\n",
        f"Command: `{command}`  ",
        f"Date: {measured_dates(summaries)}  ",
        f"Hardware: {measured_hardware(summaries)}  ",
        f"Budget: {json.dumps(asdict(budget))}\n",
        "Cells: ours, mean ± sample std (ddof 1) over seeds of the mean test-split return, the mean alone for "
        "one seed (paper in parentheses).\n",
        table1(summaries, budget.seeds),
        "",
        *([budget_note(budget), ""] if budget_note(budget) else []),
        "The paper's ordering, checked on each suite:\n",
        ordering_checks(summaries),
        "",
        ORDERING_TEST,
        "",
    ]
    for suite_name, summary in summaries.items():
        text += [
            f"\n## {suite_name}\n",
            "Ours: the mean and its 95% confidence interval (t distribution) over the n (seed, test task) units, "
            "each the mean return of a seed's evaluation episodes on one test task; std: the sample std (ddof 1) "
            "of the seeds' means.\n",
            suite_table(suite_name, summary),
            "",
        ]
    md = path.with_name(f"{path.name}.md")
    write_text_atomic(md, "\n".join(text))
    rows = [
        [
            suite_name,
            m,
            f"{row['mean']:.2f}",
            "" if row["std"] is None else f"{row['std']:.2f}",
            *(("", "") if row.get("ci") is None else (f"{row['ci'][0]:.2f}", f"{row['ci'][1]:.2f}")),
            row.get("n", ""),
            " ".join(f"{x:.2f}" for x in row["seeds"]),
            " ".join(str(k) for k in row.get("seed_ids", [])),
            row["params"],
            f"{row['percentage']:.6f}",
        ]
        for suite_name, summary in summaries.items()
        for m, row in summary.items()
    ]
    header = ["suite", "method", "mean", "std", "ci_low", "ci_high", "n", "seeds", "seed_ids", "params", "percentage"]
    write_text_atomic(path.with_name(f"{path.name}.csv"), csv_text(header, rows))
    return md
