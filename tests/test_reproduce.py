"""The reproduce pipeline's plumbing on a tiny slice: one mw-reach task, tiny shipped-style models."""

import csv
import dataclasses
import datetime
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_hub

import promptrl
from promptrl.data.datasets import create_datasets
from promptrl.experiments.cli import main
from promptrl.experiments.reproduce import (
    FULL,
    METHODS,
    TABLE1_SUITES,
    Budget,
    cell_path,
    hardware,
    measured_dates,
    measured_hardware,
    reproduce_suite,
    suite_table,
    table1,
    write_results,
)
from promptrl.methods.plm import PromptDT


def utc_today() -> str:
    """Today's date in UTC, the zone of the cells' ``finished`` times."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


TINY_BUDGET = Budget(seeds=1, episodes=1, few_shot_episodes=1, epochs=1, steps_per_epoch=2, full_epochs=1)


@pytest.fixture
def hub(tmp_path):
    """hub_models/mw-reach laid out as shipped: plm/, mt-orl/, pretrained/ (generator only)."""
    return make_tiny_hub(tmp_path / "hub", "mw-reach", [6, 9])


def test_every_method_runs_and_resumes(hub, tmp_path):
    out = tmp_path / "results"
    summary = reproduce_suite("mw-reach", TINY_BUDGET, METHODS, out, hub, tasks=[6])
    assert list(summary) == list(METHODS)
    for name, row in summary.items():
        assert len(row["seeds"]) == 1 and row["params"] >= 0, name
        cell = json.loads(cell_path(out / "runs" / "mw-reach" / TINY_BUDGET.tag(), name, 0, TINY_BUDGET).read_text())
        assert list(cell["returns"]) == ["6"] and len(cell["returns"]["6"]) == 1
        assert cell["seconds"]["adapt"] >= 0 and cell["seconds"]["evaluate"] > 0 and cell["hardware"]
        assert cell["finished"][:10] == utc_today() and row["hardware"] == [cell["hardware"]]
        # one seed, one task: the mean alone (no std over seeds, no confidence interval from one unit)
        assert row["tasks"] == [{"6": pytest.approx(cell["mean"])}] and row["n"] == 1
        assert row["std"] is None and row["ci"] is None
    assert summary["Prompt-DT-Expert"]["params"] == 0 and summary["Prompt-DT-FT"]["percentage"] == pytest.approx(100)
    assert summary["Prompt Diffuser"]["params"] > 0 and 0 < summary["Soft Prompt"]["percentage"] < 100
    # A finished cell is read back, not redone: a marker value survives a rerun.
    path = out / "runs" / "mw-reach" / TINY_BUDGET.tag() / "MT-ORL" / "seed0.json"
    cell = json.loads(path.read_text())
    cell["mean"] = 12345.0
    path.write_text(json.dumps(cell))
    again = reproduce_suite("mw-reach", TINY_BUDGET, ["MT-ORL"], out, hub, tasks=[6])
    assert again["MT-ORL"]["mean"] == 12345.0
    # ... while the models are the same: after MT-ORL's weights change its cell is measured again
    # (with a warning), and --collect leaves the old one out; the other cells stay.
    mt_orl = PromptDT.from_pretrained(hub / "mw-reach" / "mt-orl")
    with torch.no_grad():
        next(mt_orl.network.parameters()).add_(1.0)
    mt_orl.save_pretrained(hub / "mw-reach" / "mt-orl")
    with pytest.warns(UserWarning, match="measured with other models"):
        assert "MT-ORL" not in reproduce_suite("mw-reach", TINY_BUDGET, ["MT-ORL"], out, hub, tasks=[6], collect=True)
    with pytest.warns(UserWarning, match="measured with other models"):
        again = reproduce_suite("mw-reach", TINY_BUDGET, ["MT-ORL", "Prompt-DT-Expert"], out, hub, tasks=[6])
    assert again["MT-ORL"]["mean"] != 12345.0 and json.loads(path.read_text())["models"] != cell["models"]
    assert again["Prompt-DT-Expert"]["seeds"] == summary["Prompt-DT-Expert"]["seeds"]
    # FT-Full's cells are kept per full-data budget: another --full-epochs does not reuse them.
    longer = dataclasses.replace(TINY_BUDGET, full_epochs=2)
    assert longer.tag() == TINY_BUDGET.tag()
    assert cell_path(out, "Prompt-DT-FT-Full", 0, longer) != cell_path(out, "Prompt-DT-FT-Full", 0, TINY_BUDGET)
    assert cell_path(out, "Prompt-DT-FT", 0, longer) == cell_path(out, "Prompt-DT-FT", 0, TINY_BUDGET)
    md = write_results({"mw-reach": summary}, out, "promptrl reproduce mw-reach", TINY_BUDGET)
    text = md.read_text()
    assert (
        "| mw-reach |" in text and "(555.7 ± 6.8)" in text and "| Prompt Diffuser |" in suite_table("mw-reach", summary)
    )
    # One suite never replaces the four-suite table1.md, nor a budget other than the full (or quick) one the full run's.
    assert md.name == f"table1-mw-reach_{TINY_BUDGET.tag()}.md"
    with open(md.with_suffix(".csv"), newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(METHODS) and {r["seed_ids"] for r in csv_rows} == {"0"}
    assert {(r["std"], r["ci_low"], r["ci_high"], r["n"]) for r in csv_rows} == {("", "", "", "1")}
    assert float(csv_rows[0]["seeds"]) == pytest.approx(summary[csv_rows[0]["method"]]["seeds"][0], abs=0.01)
    one = table1({"mw-reach": summary}).split("\n")
    pd_col = one[0].split(" | ").index("Prompt Diffuser")
    pd_size = next(r for r in one if r.startswith("| Sizes |")).split(" | ")[pd_col]
    assert "–" not in pd_size
    # Suites whose spaces differ give a method a range of sizes, not the first suite's alone.
    bigger = {m: dict(r, params=r["params"] * 2, percentage=r["percentage"] * 2) for m, r in summary.items()}
    two = table1({"mw-reach": summary, "cheetah-vel": bigger}).split("\n")
    row = next(r for r in two if r.startswith("| Sizes |")).split(" | ")
    assert row[pd_col].startswith(pd_size + "–") and row[pd_col] != pd_size
    assert md.with_name("table1-mw-reach.md") == write_results({"mw-reach": summary}, out, "promptrl reproduce", FULL)
    # A run of some methods (e.g. --collect of a few columns) never replaces the table of all of them.
    some = {name: summary[name] for name in ("Prompt-DT-Expert", "Prompt Diffuser")}
    named = write_results({s: some for s in TABLE1_SUITES}, out, "promptrl reproduce", FULL).name
    assert named == "table1-" + "_".join(TABLE1_SUITES) + "_prompt-dt-expert+prompt-diffuser.md"
    # A cell with fewer seeds than the budget's names the seeds it has.
    assert "[seed 0] (555.7 ± 6.8)" in table1({"mw-reach": summary}, seeds=3) and "[seed" not in table1(
        {"mw-reach": summary}, 1
    )
    assert "The paper's ordering" in text and "| Prompt Diffuser >= Prompt-Tuning DT |" in text
    assert f"Date: {utc_today()}  " in text and f"Hardware: {hardware()}  " in text


def test_a_seed_list_run_tabulates_every_finished_seed(hub, tmp_path):
    """A process running some seeds (``--seed-list``) writes a table that also holds the seeds other
    processes finished; ``collect`` with a seed list keeps to those seeds."""
    out, budget = tmp_path / "results", dataclasses.replace(TINY_BUDGET, seeds=3)
    methods = ["Prompt-DT-Expert", "MT-ORL"]
    first = reproduce_suite("mw-reach", budget, methods, out, hub, tasks=[6], seed_list=[1])
    assert {m: r["seed_ids"] for m, r in first.items()} == {m: [1] for m in methods}
    second = reproduce_suite("mw-reach", budget, methods, out, hub, tasks=[6], seed_list=[2, 0])
    for name in methods:
        assert second[name]["seed_ids"] == [0, 1, 2]
        assert second[name]["seeds"][1] == first[name]["seeds"][0]  # seed 1's cell, read back
    only = reproduce_suite("mw-reach", budget, methods, out, hub, tasks=[6], seed_list=[0], collect=True)
    assert only["MT-ORL"]["seed_ids"] == [0]


def test_table_header_dates_the_cells():
    """A table of cells measured earlier (or undated, from before cells were dated) says so."""
    today = utc_today()
    dated = {
        "s": {
            "A": {"finished": ["2026-01-02T10:00:00+00:00", "2026-01-05T09:00:00+00:00"], "hardware": ["cpu A"]},
            "B": {"finished": [None], "hardware": ["cpu B", "cpu A"]},
        }
    }
    assert measured_dates(dated) == f"{today} (tabulated; cells finished 2026-01-02 to 2026-01-05, 1 undated cell(s))"
    assert measured_dates({"s": {"A": {"finished": [f"{today}T01:00:00+00:00"]}}}) == today
    assert measured_hardware(dated) == "cpu A; cpu B" and measured_hardware({"s": {"A": {}}}) == hardware()


def test_ordering_checks():
    """The paper's ordering is checked by a paired test over the (seed, test task) units; variants in
    parentheses; missing columns are "—"."""
    from promptrl.experiments.reproduce import ordering_checks
    from promptrl.experiments.tables import add_statistics

    offsets = (0.0, 1.0, -1.0, 2.0, -2.0, 0.0)  # a seed and task effect every column shares

    def row(value: float) -> dict:
        tasks = [{"0": value + offsets[2 * s], "1": value + offsets[2 * s + 1]} for s in range(3)]
        return add_statistics({"seeds": [sum(t.values()) / 2 for t in tasks], "seed_ids": [0, 1, 2], "tasks": tasks})

    means = {
        "Prompt-DT-Random": 0.0,
        "Prompt-DT-Expert": 80.0,
        "MT-ORL": -10.0,
        "Prompt-Tuning DT": 85.0,
        "Prompt Diffuser": 95.0,
        "Prompt-DT-FT-Full": 100.0,
        "Prompt Diffuser (T=0)": 80.0,
    }
    summary = {m: row(v) for m, v in means.items()}
    text = ordering_checks({"cheetah-vel": summary, "ant-dir": {m: summary[m] for m in ("Prompt-DT-Expert", "MT-ORL")}})
    header, _, vel, ant = text.splitlines()
    assert header.count("|") == 7 and "within 10% of FT-Full" in header
    # every paired difference is the same, so each interval is a point
    assert vel == (
        "| cheetah-vel | holds: 95.0 vs 85.0, Δ [10.0, 10.0] (T=0: fails: 80.0 vs 85.0, Δ [-5.0, -5.0]) "
        "| holds: 85.0 vs 80.0, Δ [5.0, 5.0] | holds: 80.0 vs 0.0, Δ [80.0, 80.0] | holds: 0.0 vs -10.0, Δ [10.0, 10.0] "
        "| holds: relative 5.0% [5.0%, 5.0%], 5.0% of the Random→FT-Full span (T=0: fails: relative 20.0% "
        "[20.0%, 20.0%], 20.0% of the Random→FT-Full span) |"
    )
    assert ant == "| ant-dir | — | — | — | — | — |"
    summary["Prompt Diffuser"] = row(101.0)
    summary["MT-ORL"] = row(0.0)  # no difference at all: within noise
    assert "| within noise: 0.0 vs 0.0, Δ [0.0, 0.0] | holds: relative 1.0% ahead [-1.0%, -1.0%]" in ordering_checks(
        {"cheetah-vel": summary}
    )


def test_ordering_checks_compare_columns_on_the_seeds_they_share():
    """A column with more seeds is compared on the seeds the other column has, and the note names them."""
    from promptrl.experiments.reproduce import ordering_checks

    def row(**by_seed):
        ids, values = [int(k[1:]) for k in by_seed], list(by_seed.values())
        return {"seeds": values, "seed_ids": ids, "tasks": [{"0": v} for v in values], "mean": sum(values) / 2}

    # Over all seeds Random (-10) > MT-ORL (-15), but on seed 0, the only one MT-ORL has, it is not.
    summary = {
        "Prompt-DT-Random": row(s0=-20.0, s1=0.0),
        "MT-ORL": row(s0=-15.0),
        "Prompt-DT-Expert": row(s0=50.0, s1=60.0),
        "Prompt-Tuning DT": row(s1=70.0),
        "Prompt Diffuser": row(s0=90.0, s1=100.0),
        "Prompt-DT-FT-Full": row(s0=100.0, s1=100.0),
    }
    vel = ordering_checks({"cheetah-vel": summary}).splitlines()[2]
    cells = [c.strip() for c in vel.split("|")[2:-1]]
    # PD vs PTDT and PTDT vs Expert on seed 1 alone: one unit, no interval, no verdict either way.
    assert cells[:2] == ["within noise: 100.0 vs 70.0, 1 unit [seed 1]", "within noise: 70.0 vs 60.0, 1 unit [seed 1]"]
    # Expert vs Random on both seeds: differences 70 and 60, mean 65, standard error 5, t(0.975, 1) = 12.706
    assert cells[2] == f"holds: 55.0 vs -10.0, Δ [{65 - 12.706205 * 5:.1f}, {65 + 12.706205 * 5:.1f}]"
    assert cells[3] == "within noise: -20.0 vs -15.0, 1 unit [seed 0]"
    # all three columns share both seeds: relative shortfalls 10% and 0%; the span gap (100 - 95) / (100 - -10)
    half = 12.706205 * 0.05
    assert (
        cells[4]
        == f"within noise: relative 5.0% [{0.05 - half:.1%}, {0.05 + half:.1%}], 4.5% of the Random→FT-Full span"
    )
    summary["MT-ORL"] = row(s2=-30.0)
    assert "| — (no seed in common) |" in ordering_checks({"cheetah-vel": summary})


def test_an_interrupted_cell_resumes_at_its_next_task(hub, tmp_path):
    """Each finished task of a cell is saved at once: after an interruption the rerun adapts only the
    tasks left and gives the cell an uninterrupted run gives; the tasks file goes once the cell is written."""
    from promptrl.experiments.reproduce import Context, build_method, ensure_datasets, hub_folder, run_cell, tasks_path

    suite = promptrl.load_suite("mw-reach")
    ensure_datasets(suite, [6, 9])
    ctx = Context(suite, TINY_BUDGET, hub_folder("mw-reach", hub), "cpu", [6, 9])
    ctx.load_models(["Soft Prompt"])
    whole = run_cell("Soft Prompt", ctx, 0, tmp_path / "whole" / "seed0.json")
    built = []

    def interrupted_at_9(name, ctx, task, seed):
        built.append(task)
        if task == 9:
            raise KeyboardInterrupt
        return build_method(name, ctx, task, seed)

    path = tmp_path / "resumed" / "seed0.json"
    with pytest.raises(KeyboardInterrupt):
        run_cell("Soft Prompt", ctx, 0, path, interrupted_at_9)
    assert not path.exists() and list(json.loads(tasks_path(path).read_text())["tasks"]) == ["6"]
    built.clear()
    resumed = run_cell("Soft Prompt", ctx, 0, path, lambda *a: built.append(a[2]) or build_method(*a))
    assert built == [9] and resumed["returns"] == whole["returns"] and resumed["mean"] == whole["mean"]
    assert not tasks_path(path).exists() and json.loads(path.read_text())["returns"] == whole["returns"]
    # tasks measured with other models are measured again, with a warning
    path.unlink()
    tasks_path(path).write_text(json.dumps({"models": "0" * 16, "tasks": {"6": whole["returns"]["6"]}}))
    built.clear()
    with pytest.warns(UserWarning, match="measured with other models"):
        run_cell("Soft Prompt", ctx, 0, path, lambda *a: built.append(a[2]) or build_method(*a))
    assert built == [6, 9]


def test_a_cell_serves_only_the_tasks_it_holds(hub, tmp_path):
    """A cell measured on some test tasks is not reused as a cell of others: a run on more tasks
    measures only the missing ones (keeping the held ones), and a run on fewer reads the tasks it asks
    for, with their mean."""
    from promptrl.experiments.reproduce import Context, build_method, ensure_datasets, hub_folder, run_cell

    suite = promptrl.load_suite("mw-reach")
    ensure_datasets(suite, [6, 9])
    built = []

    def build(*a):
        built.append(a[2])
        return build_method(*a)

    def context(tasks):
        ctx = Context(suite, TINY_BUDGET, hub_folder("mw-reach", hub), "cpu", tasks)
        ctx.load_models(["Soft Prompt"])
        return ctx

    whole = run_cell("Soft Prompt", context([6, 9]), 0, tmp_path / "whole" / "seed0.json")
    path = tmp_path / "grown" / "seed0.json"
    first = run_cell("Soft Prompt", context([6]), 0, path, build)
    assert built == [6] and list(first["returns"]) == ["6"]
    grown = run_cell("Soft Prompt", context([6, 9]), 0, path, build)
    assert built == [6, 9] and grown["returns"] == whole["returns"] and grown["mean"] == whole["mean"]
    assert json.loads(path.read_text())["returns"] == whole["returns"]
    part = run_cell("Soft Prompt", context([9]), 0, path, build)
    assert built == [6, 9] and part["returns"] == {"9": whole["returns"]["9"]}
    assert part["mean"] == pytest.approx(float(np.mean(whole["returns"]["9"])))
    assert json.loads(path.read_text())["returns"] == whole["returns"]  # the saved cell keeps every task


def test_fine_tuned_generators_are_kept_and_reused(hub, tmp_path, monkeypatch):
    """A Prompt Diffuser fine-tuned for a cell is saved; a rerun and the temperature-0 variant load it
    instead of fine-tuning again, and a rerun gives the same returns as the first run."""
    from promptrl.methods.diffuser import PromptDiffuser

    first = reproduce_suite("mw-reach", TINY_BUDGET, ["Prompt Diffuser"], tmp_path, hub, tasks=[6])
    kept = tmp_path / "models" / "mw-reach" / TINY_BUDGET.adaptation_tag()
    (fingerprint,) = [d.name for d in kept.iterdir()]  # kept per models: another PLM or generator does not reuse them
    saved = kept / fingerprint / "Prompt_Diffuser" / "seed0" / "task6"
    assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file()
    monkeypatch.setattr(PromptDiffuser, "learn", lambda *a, **k: pytest.fail("fine-tuned again instead of loading"))
    cold = reproduce_suite("mw-reach", TINY_BUDGET, ["Prompt Diffuser (T=0)"], tmp_path, hub, tasks=[6])
    assert cold["Prompt Diffuser (T=0)"]["params"] == first["Prompt Diffuser"]["params"]
    cell = cell_path(tmp_path / "runs" / "mw-reach" / TINY_BUDGET.tag(), "Prompt Diffuser", 0, TINY_BUDGET)
    cell.unlink()
    again = reproduce_suite("mw-reach", TINY_BUDGET, ["Prompt Diffuser"], tmp_path, hub, tasks=[6])
    assert again["Prompt Diffuser"]["seeds"] == first["Prompt Diffuser"]["seeds"]
    # more evaluation episodes: a new results folder, the same kept generators
    longer = reproduce_suite(
        "mw-reach", dataclasses.replace(TINY_BUDGET, episodes=2), ["Prompt Diffuser"], tmp_path, hub, tasks=[6]
    )
    assert len(longer["Prompt Diffuser"]["seeds"]) == 1


def test_l_dt_only_variant(hub, tmp_path):
    from promptrl.experiments.reproduce import Context, fresh_method, hub_folder

    summary = reproduce_suite("mw-reach", TINY_BUDGET, ["Prompt Diffuser (dt)"], tmp_path, hub, tasks=[6])
    assert summary["Prompt Diffuser (dt)"]["params"] > 0
    assert "| Prompt Diffuser (dt) |" in suite_table("mw-reach", summary) and "(dt) |" in table1({"mw-reach": summary})
    ctx = Context(promptrl.load_suite("mw-reach"), TINY_BUDGET, hub_folder("mw-reach", hub), "cpu", [6])
    ctx.load_models(["Prompt Diffuser"])
    assert fresh_method("Prompt Diffuser (dt)", ctx).settings.update == "dt"
    assert fresh_method("Prompt Diffuser", ctx).settings.update == "projection"


def test_missing_models_and_bad_method(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        reproduce_suite("mw-reach", TINY_BUDGET, ["Prompt-DT-Best"], tmp_path, tmp_path, tasks=[6])
    create_datasets(promptrl.load_suite("mw-reach"), "expert", tasks=[6], episodes=1)
    create_datasets(promptrl.load_suite("mw-reach"), "random", tasks=[6], episodes=1)
    with pytest.raises(FileNotFoundError, match="hub_models/mw-reach"):
        reproduce_suite("mw-reach", TINY_BUDGET, ["MT-ORL"], tmp_path, tmp_path, tasks=[6])


def test_shipped_models_without_mt_orl_serve_the_other_methods(hub, tmp_path, capsys, monkeypatch):
    """A shipped folder without mt-orl/ (as ant-dir-ood's) is still the suite's models: the CLI measures
    the other methods with them instead of training new models under <out>/hub, and MT-ORL says what is
    missing and how to go on."""
    import shutil

    import promptrl.experiments.reproduce as r

    shutil.rmtree(hub / "mw-reach" / "mt-orl")
    real = r.reproduce_suite
    monkeypatch.setattr(r, "reproduce_suite", lambda *a, **k: real(*a, **k, tasks=[6]))
    monkeypatch.setattr(r, "QUICK", TINY_BUDGET)
    args = ["reproduce", "mw-reach", "--quick", "--hub", str(hub), "--out", str(tmp_path / "q"), "--threads", "1"]
    assert main([*args, "--methods", "Prompt-DT-Expert"]) == 0
    assert "| Prompt-DT-Expert |" in capsys.readouterr().out and not (tmp_path / "q" / "hub").exists()
    assert main([*args, "--methods", "MT-ORL"]) == 2
    err = capsys.readouterr().err
    assert "mt-orl not found" in err and "leave MT-ORL out of --methods" in err and "--no-prompt" in err


def test_cli_quick_path_reports_a_table(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("promptrl.experiments.reproduce.QUICK", TINY_BUDGET)
    monkeypatch.setattr("promptrl.experiments.reproduce.TABLE1_SUITES", ("mw-reach",))
    import promptrl.experiments.reproduce as r

    real = r.reproduce_suite
    monkeypatch.setattr(r, "reproduce_suite", lambda *a, **k: real(*a, **k, tasks=[6]))
    assert (
        main(
            [
                "reproduce",
                "all",
                "--quick",
                "--hub",
                str(hub),
                "--out",
                str(tmp_path / "q"),
                "--threads",
                "1",
                "--methods",
                "Prompt-DT-Expert",
                "Prompt Diffuser",
                "--record",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    table = tmp_path / "q" / "table1-mw-reach_prompt-dt-expert+prompt-diffuser.md"  # some methods: not table1.md
    assert "| Prompt Diffuser |" in out and table.is_file() and not (tmp_path / "q" / "table1.md").exists()
    # a budget below Table 4's says so, on the console and on the table itself
    assert "Budget below the paper's" in out and "Budget below the paper's" in table.read_text()
    # --record: the table goes into the hub Prompt Diffuser's card, and `evaluate --record` keeps it
    card = (hub / "mw-reach" / "README.md").read_text()
    section = card.split("### Across the test split")[1]
    assert (
        "promptrl reproduce all --quick" in section
        and "| Prompt Diffuser |" in section
        and "| Prompt-DT-Expert |" in section
    )
    assert main(["evaluate", str(hub / "mw-reach"), "mw-reach", "--tasks", "6", "--episodes", "1", "--record"]) == 0
    card = (hub / "mw-reach" / "README.md").read_text()
    assert card.index("## Results") < card.index("| generated |") < card.index("### Across the test split")


def test_retrain_follows_the_shipped_recipes_apart_from_the_shipped_models(tmp_path, capsys, monkeypatch):
    """--retrain trains PLM, MT-ORL and generator again as the shipped ones were (their architecture
    and step counts), into <out>/retrained/, runs Table 1 with them, resumes, and leaves hub_models alone."""
    import promptrl.experiments.reproduce as r

    hub = make_tiny_hub(tmp_path / "hub", "cheetah-dir", [0, 1])  # cheetah-dir trains and tests on tasks 0 and 1
    shipped = {p: p.read_bytes() for p in (hub / "cheetah-dir").rglob("*") if p.is_file()}
    monkeypatch.setattr("promptrl.experiments.reproduce.QUICK", TINY_BUDGET)
    real = r.reproduce_suite
    monkeypatch.setattr(r, "reproduce_suite", lambda *a, **k: real(*a, **k, tasks=[0]))
    argv = [
        "reproduce",
        "cheetah-dir",
        "--quick",
        "--retrain",
        "--hub",
        str(hub),
        "--out",
        str(tmp_path / "q"),
        "--threads",
        "1",
        "--methods",
        "Prompt-DT-Expert",
        "MT-ORL",
        "Prompt Diffuser",
    ]
    assert main(argv) == 0
    assert "| Prompt Diffuser |" in capsys.readouterr().out
    retrained = tmp_path / "q" / "retrained" / "hub" / "cheetah-dir"
    for sub, keys in (
        ("plm", ("embed_dim", "n_layer", "context", "batch_per_task", "use_prompt", "steps_trained")),
        ("mt-orl", ("embed_dim", "use_prompt", "prompt_length", "steps_trained")),
        ("pretrained", ("n_steps", "hidden", "batch_size", "update", "learning_rate", "steps_trained")),
    ):
        ours = json.loads((retrained / sub / "config.json").read_text())
        theirs = json.loads((hub / "cheetah-dir" / sub / "config.json").read_text())
        assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}, sub
    assert (tmp_path / "q" / "retrained" / "table1-cheetah-dir_prompt-dt-expert+mt-orl+prompt-diffuser.md").is_file()
    assert not list((tmp_path / "q").glob("table1*"))
    assert {p: p.read_bytes() for p in (hub / "cheetah-dir").rglob("*") if p.is_file()} == shipped
    weights = {p: p.stat().st_mtime_ns for p in retrained.rglob("model.safetensors")}
    assert main(argv) == 0  # a rerun trains nothing again
    assert {p: p.stat().st_mtime_ns for p in retrained.rglob("model.safetensors")} == weights


def test_readme_table1_is_the_measured_one():
    """README's full-budget Table 1 and ordering checks are copies of results/table1.md's rows."""
    root = Path(__file__).resolve().parents[1]
    section = (root / "README.md").read_text().split("### Measured Table 1")[1].split("\n## ")[0].split("\n### ")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    measured = (root / "results" / "table1.md").read_text().split("\n## ")[0].splitlines()
    assert len(rows) >= 8 and all(row in measured for row in rows), [r[:60] for r in rows if r not in measured]


NEW_FAMILIES_TABLE = (
    "table1-mw-push_mw-pick-place_prompt-dt-random+prompt-dt-expert+mt-orl+prompt-tuning-dt+prompt-diffuser"
    "+prompt-dt-ft-full.md"
)


def test_readme_new_families_are_their_measured_tables():
    """README's table of the spec-file families gives, per family and method, the "mean [95% CI]" of
    that family's section of their measured table (results/table1-mw-push_mw-pick-place_...md)."""
    root = Path(__file__).resolve().parents[1]

    def cells(text: str) -> list[list[str]]:
        return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]

    section = (root / "README.md").read_text().split("### New task families")[1].split("\n## ")[0]
    header, _, *rows = cells(section)
    assert header[0] == "family" and len(rows) == 2
    families = {
        part.split("\n", 1)[0]: part for part in (root / "results" / NEW_FAMILIES_TABLE).read_text().split("\n## ")
    }
    for family, *means in rows:
        measured = {row[0]: row[1] for row in cells(families[family])}
        assert dict(zip(header[1:], means)) == {method: measured[method] for method in header[1:]}, family


def test_committed_table1_cells_hold_every_test_task():
    """Each committed Table 1 cell (results/**/runs/<suite>/<budget>/<method>/seed<k>.json) holds the
    returns of exactly its suite's test tasks, so no table averages over a partial cell."""
    root = Path(__file__).resolve().parents[1] / "results"
    cells = [p for p in root.glob("**/runs/*/*/*/seed[0-9].json") if "ablations" not in p.parts]
    assert len(cells) > 400
    tasks = {}
    for path in cells:
        suite = path.parts[-4]
        tasks.setdefault(suite, sorted(str(t) for t in promptrl.load_suite(suite).test_tasks))
        assert sorted(json.loads(path.read_text())["returns"]) == tasks[suite], path
