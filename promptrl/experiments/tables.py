"""Tables of the Table 1 reproduction: markdown and CSV of per-suite summaries beside the paper's
numbers, the paper's ordering checked on them, and where and when the cells were measured.

A summary is ``{method: {"seeds": [means], "seed_ids", "mean", "std", "params", "percentage",
"hardware", "finished"}}`` per suite, as :func:`~promptrl.experiments.reproduce.reproduce_suite` returns.
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptrl.common.files import csv_text, write_text_atomic
from promptrl.experiments.paper import GAP_BAR, METHODS, ORDERING, VARIANTS, paper_table

Summary = dict[str, dict[str, Any]]
"""One suite's results: per method, its row."""


def mean_std(values: Sequence[float] | None) -> str:
    """``"mean ± std"`` of a ``[mean, std]`` pair (one decimal), or "—" for None."""
    return "—" if values is None else f"{values[0]:.1f} ± {values[1]:.1f}"


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
    """Markdown: one row per method, ours beside the paper's."""
    paper = paper_table()
    rows = [
        "| method | ours (mean ± std over seeds) | seeds | paper | trainable params | % of PLM |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        rows.append(
            f"| {name} | {mean_std((row['mean'], row['std']))} | {len(row['seeds'])} | "
            f"{mean_std(_paper_cell(paper, suite_name, name))} | {size(row['params'])} | {row['percentage']:.4g}% |"
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


def _shared(summary: Summary, names: Sequence[str]) -> tuple[dict[str, float], str]:
    """The columns' means over the seeds they all have, and a note naming those seeds when some
    column has more (a row without ``seed_ids`` counts with its own mean)."""
    ids = [summary[m]["seed_ids"] for m in names if "seed_ids" in summary[m]]
    shared = sorted(set.intersection(*map(set, ids))) if ids else []
    if ids and not shared:
        return {}, "— (no seed in common)"
    mean = {}
    for m in names:
        row = summary[m]
        by_seed = dict(zip(row.get("seed_ids", []), row.get("seeds", [])))
        mean[m] = float(np.mean([by_seed[s] for s in shared])) if by_seed else row["mean"]
    partial = any(len(i) > len(shared) for i in ids)
    return mean, (f" [seed{'s' if len(shared) > 1 else ''} {', '.join(map(str, shared))}]" if partial else "")


def _holds(summary: Summary, a: str, op: str, b: str) -> str:
    mean, note = _shared(summary, [a, b])
    if not mean:
        return note
    ok = mean[a] >= mean[b] if op == ">=" else mean[a] > mean[b]
    return ("yes" if ok else f"no: {mean[a]:.1f} vs {mean[b]:.1f}") + note


def _gap(summary: Summary, pd: str) -> str:
    mean, note = _shared(summary, [pd, "Prompt-DT-FT-Full", "Prompt-DT-Random"])
    if not mean:
        return note
    span = mean["Prompt-DT-FT-Full"] - mean["Prompt-DT-Random"]
    if span <= 0:
        return "— (FT-Full not above Random)" + note
    gap = (mean["Prompt-DT-FT-Full"] - mean[pd]) / span
    return ("yes: ahead of FT-Full" if gap <= 0 else (f"yes: {gap:.1%}" if gap <= GAP_BAR else f"no: {gap:.1%}")) + note


def ordering_checks(summaries: dict[str, Summary]) -> str:
    """Markdown: the paper's ordering (:data:`~promptrl.experiments.paper.ORDERING`,
    :data:`~promptrl.experiments.paper.GAP_BAR`) checked on each suite's means over the seeds the
    compared columns share ("[seeds ...]" where a column has more; "—" where a column was not run);
    the Prompt Diffuser's variants in parentheses."""
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
        for a, op, b in ORDERING:
            if a == "Prompt Diffuser":
                cells.append(cell(lambda pd, op=op, b=b: _holds(summary, pd, op, b), [b]))
            else:
                cells.append(_holds(summary, a, op, b) if a in summary and b in summary else "—")
        cells.append(cell(lambda pd: _gap(summary, pd), ["Prompt-DT-FT-Full", "Prompt-DT-Random"]))
        rows.append(f"| {suite_name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


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


def write_tables(summaries: dict[str, Summary], path: Path, command: str, budget: Any) -> Path:
    """Write ``<path>.md`` (header, Table 1, the ordering checks, one table per suite) and ``<path>.csv``
    (one row per suite and method); ``budget`` is the dataclass the cells ran under. Returns the
    markdown path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = [
        "# Table 1 (measured)\n",
        f"Command: `{command}`  ",
        f"Date: {measured_dates(summaries)}  ",
        f"Hardware: {measured_hardware(summaries)}  ",
        f"Budget: {json.dumps(asdict(budget))}\n",
        "Cells: ours, mean ± std over seeds of the mean test-split return (paper in parentheses).\n",
        table1(summaries, budget.seeds),
        "",
        "The paper's ordering, checked on the means over the seeds the compared columns share "
        '("[seeds ...]" where a column has more), for the first Prompt Diffuser column that was run '
        "(its variants in parentheses); differences smaller than the seeds' std are not measured orderings:\n",
        ordering_checks(summaries),
        "",
    ]
    for suite_name, summary in summaries.items():
        text += [f"\n## {suite_name}\n", suite_table(suite_name, summary), ""]
    md = path.with_name(f"{path.name}.md")
    write_text_atomic(md, "\n".join(text))
    rows = [
        [
            suite_name,
            m,
            f"{row['mean']:.2f}",
            f"{row['std']:.2f}",
            " ".join(f"{x:.2f}" for x in row["seeds"]),
            " ".join(str(k) for k in row.get("seed_ids", [])),
            row["params"],
            f"{row['percentage']:.6f}",
        ]
        for suite_name, summary in summaries.items()
        for m, row in summary.items()
    ]
    header = ["suite", "method", "mean", "std", "seeds", "seed_ids", "params", "percentage"]
    write_text_atomic(path.with_name(f"{path.name}.csv"), csv_text(header, rows))
    return md
