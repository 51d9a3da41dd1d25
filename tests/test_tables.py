"""The statistics of the Table 1 tables: t quantiles, sample stds, confidence intervals over the
(seed, test task) units, the paired verdicts of the ordering checks and the Prompt Diffuser's gap."""

import csv
import math
import statistics

import numpy as np
import pytest

from promptrl.common.statistics import mean_ci, sample_std
from promptrl.experiments.reproduce import Budget
from promptrl.experiments.tables import (
    ORDERING_TEST,
    add_statistics,
    mean_std,
    ordering_checks,
    paired_verdict,
    relative_gap,
    span_gap,
    suite_table,
    table1,
    units,
    write_tables,
)

# Student t quantiles as printed in statistics tables: (p, degrees of freedom, quantile).
T_TABLE = [
    (0.975, 1, 12.706205),
    (0.975, 2, 4.302653),
    (0.975, 3, 3.182446),
    (0.975, 4, 2.776445),
    (0.975, 5, 2.570582),
    (0.975, 14, 2.144787),
    (0.975, 29, 2.045230),
    (0.95, 5, 2.015048),
    (0.995, 10, 3.169273),
    (0.975, 200, 1.971896),
]


@pytest.mark.parametrize(("p", "df", "expected"), T_TABLE)
def test_mean_ci_uses_the_t_quantile_of_its_level(p, df, expected):
    # values with mean 0 and sample std 1: the interval's half width is t(p, n - 1) / sqrt(n)
    n = df + 1
    values = np.linspace(-1.0, 1.0, n)
    values = values / np.std(values, ddof=1)
    low, high = mean_ci(values.tolist(), level=2 * p - 1)
    assert (high - low) / 2 == pytest.approx(expected / math.sqrt(n), rel=1e-6)
    assert (low + high) / 2 == pytest.approx(0.0, abs=1e-12)


def test_mean_ci_rejects_a_level_outside_0_1():
    for level in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="level"):
            mean_ci([1.0, 2.0], level=level)
        with pytest.raises(ValueError, match="level"):
            mean_ci([1.0], level=level)  # checked before the too-few-values answer


def test_sample_std_has_one_degree_of_freedom_less():
    values = [1.0, 2.0, 3.0, 4.0]
    assert sample_std(values) == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, over n - 1 = 3
    assert sample_std(values) == pytest.approx(np.std(values, ddof=1)) and sample_std(values) > np.std(values)
    assert sample_std([7.0]) is None and sample_std([]) is None


def test_mean_ci_by_hand():
    # mean 3, sample std sqrt(2.5), standard error sqrt(2.5 / 5); t(0.975, 4) = 2.776445
    half = 2.776445 * math.sqrt(2.5 / 5)
    low, high = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (low, high) == (pytest.approx(3 - half, abs=1e-6), pytest.approx(3 + half, abs=1e-6))
    assert (round(low, 3), round(high, 3)) == (1.037, 4.963)
    assert mean_ci([4.0, 4.0, 4.0]) == (4.0, 4.0) and mean_ci([4.0]) is None


def row(per_seed: dict[int, dict[str, float]], **extra) -> dict:
    """A summary row of seeds (``{seed: {task: mean return}}``) with its statistics, as reproduce_suite makes it."""
    return add_statistics(
        {
            "seeds": [statistics.fmean(t.values()) for t in per_seed.values()],
            "seed_ids": list(per_seed),
            "tasks": list(per_seed.values()),
            "params": 0,
            "percentage": 0.0,
            **extra,
        }
    )


def test_row_statistics_over_seeds_and_units():
    """std over the seeds' means (ddof 1); the CI of the mean over the (seed, test task) units."""
    r = row({0: {"a": 1.0, "b": 3.0}, 1: {"a": 2.0, "b": 6.0}})
    assert units(r) == {(0, "a"): 1.0, (0, "b"): 3.0, (1, "a"): 2.0, (1, "b"): 6.0}
    assert r["mean"] == 3.0 and r["std"] == pytest.approx(math.sqrt(2))  # seeds' means 2 and 4
    # units 1, 3, 2, 6: mean 3, sum of squares 14, sample variance 14 / 3; t(0.975, 3) = 3.182446
    half = 3.182446 * math.sqrt(14 / 3) / 2
    assert r["n"] == 4 and r["ci"] == (pytest.approx(3 - half, abs=1e-5), pytest.approx(3 + half, abs=1e-5))
    # a row without per-task returns has one unit per seed
    assert units({"seeds": [5.0, 7.0], "seed_ids": [3, 4]}) == {(3, "all"): 5.0, (4, "all"): 7.0}


def test_one_seed_rows_show_no_std(tmp_path):
    summary = {"Prompt Diffuser": row({0: {"2": 770.0, "7": 776.0}}), "MT-ORL": row({0: {"2": 584.0}})}
    assert summary["Prompt Diffuser"]["std"] is None and summary["Prompt Diffuser"]["n"] == 2
    assert mean_std((773.0, None)) == "773.0" and mean_std((773.0, 6.8)) == "773.0 ± 6.8" and mean_std(None) == "—"
    cells = [c.strip(" |") for c in table1({"mw-reach": summary}).splitlines()[2].split(" | ")]
    assert cells[1:3] == ["584.0 (264.1 ± 9.6)", "773.0 (555.7 ± 6.8)"]  # ours alone, the paper's with its std
    table = suite_table("mw-reach", summary).splitlines()
    assert table[0].startswith("| method | ours: mean [95% CI] | paper | std over seeds | seeds | n |")
    pd = table[2].split(" | ")
    half = 12.706205 * 3.0  # t(0.975, 1) times the standard error of 770 and 776
    assert pd[1] == f"773.0 [{773 - half:.1f}, {773 + half:.1f}]" and pd[2:6] == ["555.7 ± 6.8", "—", "1", "2"]
    assert table[3].split(" | ")[1:6] == ["584.0", "264.1 ± 9.6", "—", "1", "1"]  # one unit: no interval
    md = write_tables({"mw-reach": summary}, tmp_path / "t", "promptrl reproduce mw-reach", Budget(seeds=1))
    with open(md.with_suffix(".csv"), newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert rows["MT-ORL"]["std"] == "" and rows["MT-ORL"]["ci_low"] == rows["MT-ORL"]["ci_high"] == ""
    assert rows["Prompt Diffuser"]["n"] == "2" and float(rows["Prompt Diffuser"]["ci_low"]) == pytest.approx(
        773 - half, abs=0.01
    )
    assert "±" not in md.read_text().split("| mw-reach |")[1].split("\n")[0].split("(")[0]
    assert ORDERING_TEST in md.read_text()


def test_paired_verdicts():
    assert paired_verdict([1.0, 1.2, 0.9]) == ("holds", mean_ci([1.0, 1.2, 0.9]))
    assert paired_verdict([-1.0, -1.2, -0.9])[0] == "fails"
    # all three differences are positive, but three are too few to tell a mean of 2 from 0 at this spread
    assert paired_verdict([1.0, 2.0, 3.0])[0] == "within noise" and mean_ci([1.0, 2.0, 3.0])[0] < 0
    assert paired_verdict([-1.0, 1.0, 0.5])[0] == "within noise"
    assert paired_verdict([0.0, 0.0]) == ("within noise", (0.0, 0.0))
    assert paired_verdict([5.0]) == ("within noise", None)  # one unit: no interval, no verdict either way


def _suite(random, expert, mt_orl, ptdt, pd, full, offsets=(0.0, 30.0, -30.0, 60.0, -60.0, 0.0)) -> dict:
    """A summary of three seeds x two test tasks; each column is its values plus the same per-unit
    ``offsets`` (a task and seed effect shared by all columns) and a column's own small noise."""
    noise = {"r": (0.4, -0.4, 0.2, -0.2, 0.1, -0.1), "e": (-0.3, 0.3, 0.1, -0.1, 0.2, -0.2)}
    columns = {
        "Prompt-DT-Random": (random, "r"),
        "Prompt-DT-Expert": (expert, "e"),
        "MT-ORL": (mt_orl, "e"),
        "Prompt-Tuning DT": (ptdt, "r"),
        "Prompt Diffuser": (pd, "e"),
        "Prompt-DT-FT-Full": (full, "r"),
    }
    summary = {}
    for name, (value, key) in columns.items():
        per_unit = [value + o + n for o, n in zip(offsets, noise[key])]
        summary[name] = row({s: {"0": per_unit[2 * s], "1": per_unit[2 * s + 1]} for s in range(3)})
    return summary


def test_the_three_verdicts_on_constructed_summaries():
    """Expert 20 above Random on every unit: holds although the per-task spread (±60) makes the two
    columns' own intervals overlap; Random 20 below MT-ORL: fails; Prompt Diffuser 0.1 above
    Prompt-Tuning DT with noise of ±0.5: within noise."""
    summary = _suite(random=100.0, expert=120.0, mt_orl=120.0, ptdt=130.0, pd=130.1, full=140.0)
    low, high = summary["Prompt-DT-Expert"]["ci"]
    assert low < summary["Prompt-DT-Random"]["mean"] < high  # unpaired, the difference is lost in the spread
    header, _, vel = ordering_checks({"cheetah-vel": summary}).splitlines()
    cells = [c.strip() for c in vel.split("|")[2:-1]]
    assert header.count("|") == 7 and "within 10% of FT-Full" in header
    assert cells[0].startswith("within noise: 130.1 vs 130.0, Δ [")
    assert cells[1].startswith("holds: 130.0 vs 120.0, Δ [")
    assert cells[2].startswith("holds: 120.0 vs 100.0, Δ [")
    assert cells[3].startswith("fails: 100.0 vs 120.0, Δ [")
    d = [float(x) for x in cells[3].split("Δ [")[1].rstrip("]").split(", ")]
    assert d[0] < d[1] < 0
    # the gap: 9.9 short of 140 (7.1%), well below the 10% bar with this little noise
    assert cells[4].startswith("holds: relative 7.1% [")


def test_relative_gap_and_span_gap_disagree():
    """cheetah-vel's case: FT-Full -24.5, Prompt Diffuser -28.0, Random -177.5: 14.3% of FT-Full but
    only 2.3% of the Random -> FT-Full span; the within-10% check goes by the relative gap."""
    assert relative_gap(-28.0, -24.5) == pytest.approx(3.5 / 24.5)
    assert span_gap(-28.0, -24.5, -177.5) == pytest.approx(3.5 / 153.0)
    assert span_gap(1.0, 1.0, 2.0) is None and span_gap(105.0, 100.0, 0.0) == pytest.approx(-0.05)  # ahead
    summary = _suite(random=-177.5, expert=-26.0, mt_orl=-160.0, ptdt=-25.0, pd=-28.0, full=-24.5, offsets=(0,) * 6)
    gap = ordering_checks({"cheetah-vel": summary}).splitlines()[2].split(" | ")[-1]
    assert gap.startswith("fails: relative 14.3% [") and gap.endswith(", 2.3% of the Random→FT-Full span |")
    # ... and the other way round: 5% of FT-Full holds while it is half the span
    summary = _suite(random=900.0, expert=950.0, mt_orl=0.0, ptdt=950.0, pd=950.0, full=1000.0, offsets=(0,) * 6)
    gap = ordering_checks({"cheetah-dir": summary}).splitlines()[2].split(" | ")[-1]
    assert gap.startswith("holds: relative 5.0% [") and "50.0% of the Random→FT-Full span" in gap
    summary["Prompt Diffuser"] = row({s: {"0": 1010.0, "1": 1010.0} for s in range(3)})
    gap = ordering_checks({"cheetah-dir": summary}).splitlines()[2].split(" | ")[-1]
    assert gap.startswith("holds: relative 1.0% ahead [-1.0%, -1.0%], -10.0% of the Random→FT-Full span")


def test_budget_note_says_what_a_short_budget_does():
    from promptrl.experiments.reproduce import FULL, QUICK
    from promptrl.experiments.tables import budget_note

    assert budget_note(FULL) == ""
    note = budget_note(QUICK)
    assert "25 adaptation steps (Table 4: 2,000)" in note and "Prompt-DT-FT-Full 50 steps (Table 4: 10,000)" in note
    assert "Prompt-DT-Random, Prompt-DT-Expert, MT-ORL train nothing" in note
