import importlib.util
import math
import re

import minari
import numpy as np
import pytest
import torch

from promptrl.experiments.cli import main


def test_suites_table(capsys):
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    assert "| cheetah-vel | promptrl/CheetahVel-v0 | 40 | 35 | — | [2, 7, 15, 23, 26] | 200 |" in out
    assert "| mw-push | promptrl/MetaWorld-v0 | 23 | 15 | [0, 21, 22] | [6, 9, 15, 16, 20] | 100 | 750 / 750 |" in out


def test_a_closed_stdout_ends_the_command_quietly():
    """``promptrl suites | head -1``: when the reader has closed the pipe, the command stops with status 1
    and no traceback."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    try:
        done = subprocess.run(
            [sys.executable, "-m", "promptrl", "suites"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=300
        )
    finally:
        os.close(write)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr


def test_data_command_is_idempotent(capsys):
    assert main(["data", "mw-reach", "--quality", "random", "--episodes", "1", "--tasks", "6"]) == 0
    assert "1 dataset(s) created, 0 reused" in capsys.readouterr().out
    assert minari.load_dataset("promptrl/mw-reach/task06-random-v0").total_episodes == 1
    assert main(["data", "mw-reach", "--quality", "random", "--episodes", "1", "--tasks", "6"]) == 0
    assert "0 dataset(s) created, 1 reused" in capsys.readouterr().out


def test_bad_arguments(capsys):
    # task ids are checked against the suite before any model, dataset or env is touched
    for argv in (
        ["data", "mw-reach", "--tasks", "6", "21", "-1"],
        ["evaluate", "no-such-folder", "mw-reach", "--tasks", "6", "21", "-1"],
        ["train", "diffuser", "mw-reach", "--stage", "finetune", "--tasks", "6", "21", "-1"],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert "--tasks: suite 'mw-reach' has tasks 0 to 20, got [21, -1] outside them" in captured.err, argv
        assert "fine-tuning" not in captured.out
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "cheetah-run"])
    assert exit_info.value.code == 2
    assert "argument suite: unknown suite 'cheetah-run'; choose one of" in capsys.readouterr().err
    # counts are checked when parsed, before anything is created or printed
    for argv, message in (
        (["data", "mw-reach", "--episodes", "0", "--tasks", "6"], "--episodes: expected a positive integer, got 0"),
        (["train", "plm", "mw-reach", "--steps", "-3"], "--steps: expected a positive integer, got -3"),
        (["reproduce", "mw-reach", "--seeds", "two"], "--seeds: expected a positive integer, got 'two'"),
        (["evaluate", "folder", "mw-reach", "--seed", "-1"], "--seed: expected a non-negative integer, got -1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""


def test_train_plm_checkpoints_and_resumes(tmp_path, capsys):
    from promptrl.methods.plm import PromptDT

    assert main(["data", "mw-reach", "--quality", "expert", "--episodes", "1"]) == 0
    out = tmp_path / "plm"
    args = [
        "train",
        "plm",
        "mw-reach",
        "--steps",
        "4",
        "--checkpoint-steps",
        "2",
        "--out",
        str(out),
        "--threads",
        "1",
        "--log-steps",
        "2",
    ]
    assert main(args) == 0
    rows = (out / "progress.csv").read_text().splitlines()
    assert rows[0] == "step,loss,seconds" and [r.split(",")[0] for r in rows[1:]] == ["2", "4"]
    first = PromptDT.load_checkpoint(out / "checkpoint")
    assert first.settings.steps_trained == 4 and (out / "final" / "model.safetensors").is_file()
    assert not (out / "checkpoint.tmp").exists()
    assert main(args[:3] + ["--steps", "6"] + args[5:]) == 0  # resumes from step 4
    assert "4/6 steps done" in capsys.readouterr().out
    assert PromptDT.load_checkpoint(out / "checkpoint").settings.steps_trained == 6
    rows = [r.split(",") for r in (out / "progress.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["2", "4", "6"]  # appended, no header or step written twice
    assert all(math.isfinite(float(loss)) and float(loss) > 0 for _, loss, _ in rows)
    seconds = [float(r[2]) for r in rows]
    assert seconds == sorted(seconds)  # the resumed run's clock goes on from where the first stopped
    final = PromptDT.from_pretrained(out / "final")
    assert final.settings.steps_trained == 6
    card = (out / "final" / "README.md").read_text()
    assert "Command: `promptrl train plm mw-reach --steps 6 --checkpoint-steps 2 --threads 1 --log-steps 2`" in card
    assert "Multi-task, prompt-augmented training on the expert datasets" in card and ": 6 steps of " in card
    assert "(1 episode each, made by `promptrl data mw-reach`)" in card  # the datasets' own episode count
    assert str(tmp_path) not in card  # --out is left out of the recorded command
    if importlib.util.find_spec("tensorboard") is not None:  # a dev dependency; optional for users
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(out / "tensorboard")).Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    assert main(["evaluate", str(out / "final"), "mw-reach", "--episodes", "1", "--prompt", "expert", "--record"]) == 0
    printed = capsys.readouterr().out
    # one row per test task, one episode each, and the mean of the per-task means
    per_task = {
        int(t): float(m) for t, m in re.findall(r"^\| (\d+) \| (-?\d+\.\d) \| 0\.0 \| — \| 1 \|$", printed, re.M)
    }
    assert sorted(per_task) == [6, 9, 15, 16, 20], printed
    mean = float(re.search(r"^\| \*\*mean\*\* \| \*\*(-?\d+\.\d)\*\* \|", printed, re.M).group(1))
    assert mean == pytest.approx(np.mean(list(per_task.values())), abs=0.06)
    card = (out / "final" / "README.md").read_text()
    assert ": 6 steps of " in card  # the training section survives --record
    row = re.search(r"^\| expert \| (-?\d+\.\d) ± (\d+\.\d) \| (.*) \|$", card, re.M)
    assert row and float(row.group(1)) == mean, card
    assert row.group(3) == ", ".join(f"{t}: {m:.1f}" for t, m in per_task.items())
    assert re.search(r"^Command: `promptrl evaluate final mw-reach --episodes 1 --prompt expert --record`", card, re.M)
    assert str(tmp_path) not in card  # the model folder is recorded by its name, not its absolute path


def test_train_plm_without_data_names_the_command(tmp_path, capsys):
    assert main(["train", "plm", "cheetah-vel", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "promptrl data cheetah-vel" in capsys.readouterr().err


def test_evaluate_given_tasks_records_into_the_card(tmp_path, capsys):
    from conftest import make_tiny_hub

    hub = make_tiny_hub(tmp_path / "hub", "mw-reach", [6, 9])
    folder = hub / "mw-reach"
    assert main(["evaluate", str(folder), "mw-reach", "--tasks", "6", "--episodes", "1", "--record"]) == 0
    card = (folder / "README.md").read_text()
    assert "tasks [6] return (mean ± std over episodes)" in card
    capability = torch.backends.cpu.get_cpu_capability()  # with the threads, what the returns' last bits depend on
    assert f"(1 episode per task, seed 0, 1 torch thread, {capability} CPU kernels; sample std" in card
    rows = dict(re.findall(r"^\| (generated|expert \(the frozen PLM\)) \| (.*) \|$", card, re.M))
    assert list(rows) == ["generated", "expert (the frozen PLM)"], card
    for cells in rows.values():  # one task, one episode: the per-task column is that episode's return, std 0
        mean, per_task = cells.split(" | ")
        assert mean.endswith(" ± 0.0") and per_task == f"6: {mean.split(' ± ')[0]}"
    # the same numbers as the card's model-index, which the Hub shows as evaluation results
    from huggingface_hub import ModelCard

    index = ModelCard.load(folder / "README.md").data.eval_results
    assert [r.metric_name for r in index] == [
        "mean_reward (generated prompts)",
        "mean_reward (the frozen PLM with expert prompts)",
    ]
    for r, label in zip(index, ["generated", "expert (the frozen PLM)"]):
        # the index keeps 2 decimals and the table 1, each rounded from the measured value
        mean, std = (float(x) for x in r.metric_value.split(" +/- "))
        shown_mean, shown_std = (float(x) for x in rows[label].split(" | ")[0].split(" ± "))
        assert abs(shown_mean - mean) <= 0.0501 and abs(shown_std - std) <= 0.0501, (rows[label], r.metric_value)
        assert (
            r.task_type == "reinforcement-learning"
            and r.dataset_name == "mw-reach (tasks 6)"
            and r.dataset_type == "promptrl/MetaWorldReach-v0"
        )
    capsys.readouterr()
    assert main(["evaluate", str(folder), "mw-reach", "--tasks", "8", "--episodes", "1"]) == 2  # not learned
    assert (
        "--tasks: the model holds generators or few-shot data of tasks [6] only, not of [8]" in capsys.readouterr().err
    )
    assert main(["evaluate", str(folder), "mw-reach", "--tasks", "8", "--episodes", "1", "--zero-shot"]) == 0
    out = capsys.readouterr().out  # no dataset of task 8
    assert "no expert datasets for tasks [8]" in out and "prompt: generated" in out and "prompt: expert" not in out
    # the generator before fine-tuning, with the PLM it was pre-trained for, zero-shot on a test task
    pretrained = ["evaluate", str(folder / "pretrained"), "mw-reach", "--plm", str(folder / "plm"), "--tasks", "8"]
    assert main([*pretrained, "--episodes", "1"]) == 2
    assert "only, not of [8]" in capsys.readouterr().err
    assert main([*pretrained, "--episodes", "1", "--zero-shot"]) == 0
    assert "prompt: generated" in capsys.readouterr().out
    assert main([*pretrained, "--record"]) == 2
    assert "--record writes into a model folder that holds its PLM" in capsys.readouterr().err
    assert main(["evaluate", str(folder), "mw-reach", "--tasks", "99"]) == 2
    assert "--tasks: suite 'mw-reach' has tasks 0 to 20, got [99] outside them" in capsys.readouterr().err
    # a model of another suite: its sizes are named before its task ids are read as the suite's
    assert main(["evaluate", str(folder), "cheetah-vel", "--tasks", "2"]) == 2
    assert (
        "model (trained on suite 'mw-reach', observation size 39, action size 4) does not fit suite 'cheetah-vel'"
        in (capsys.readouterr().err)
    )


def test_train_diffuser_finetunes_one_generator_per_task_as_table1(tmp_path, capsys):
    """``--stage finetune`` fine-tunes each task's generator exactly as that task's Prompt Diffuser cell
    of Table 1 (same weights), and saves them as one model that serves every task."""
    from conftest import make_tiny_hub
    from safetensors.torch import load_file

    from promptrl.experiments.reproduce import Budget, reproduce_suite
    from promptrl.methods.diffuser import PromptDiffuser

    hub = make_tiny_hub(tmp_path / "hub", "mw-reach", [6, 9])
    args = ["train", "diffuser", "mw-reach", "--stage", "finetune", "--tasks", "6", "9", "--epochs", "1"]
    args += ["--temperature", "0", "--hub", str(hub), "--out", str(tmp_path / "work")]
    assert main(args) == 0
    assert "evaluate" in capsys.readouterr().out
    pd = PromptDiffuser.from_pretrained(hub / "mw-reach")
    pretrained = PromptDiffuser.from_pretrained(hub / "mw-reach" / "pretrained", plm=pd.plm)
    assert pd.own_tasks() == [6] and pd.served_tasks() == [6, 9]
    for g in (pd, pd.task_generators[9]):
        assert g.settings.temperature == 0.0 and g.settings.steps_trained == pretrained.settings.steps_trained + 100
    assert pretrained.settings.temperature == 0.5
    card = (hub / "mw-reach" / "README.md").read_text()
    assert "--temperature 0" in card and "fine-tuned once per task [6, 9]" in card and "tasks/<task>/" in card
    assert "--out" not in card
    assert (
        "**Selection.** Each generator is the last step" in card
        and "temperature 0 (given with `--temperature`)" in card
    )

    budget = Budget(seeds=1, episodes=1, epochs=1)
    reproduce_suite("mw-reach", budget, ["Prompt Diffuser"], tmp_path / "table1", hub, tasks=[6, 9])
    kept = {f.parent.name: f for f in (tmp_path / "table1" / "models").rglob("model.safetensors")}
    assert sorted(kept) == ["task6", "task9"]
    for folder, name in ((hub / "mw-reach", "task6"), (hub / "mw-reach" / "tasks" / "9", "task9")):
        ours, cell = load_file(folder / "model.safetensors"), load_file(kept[name])
        assert ours.keys() == cell.keys() and all(torch.equal(ours[k], cell[k]) for k in ours)

    capsys.readouterr()
    assert main(args[:-4] + ["--hub", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'missing' / 'mw-reach' / 'plm'}, " in err and "not found" in err


def test_command_line_leaves_out_where_files_live():
    """Cards record the command without --out and --hub (folders of the machine that ran it)."""
    import argparse

    from promptrl.cli import command_line

    argv = [
        "train",
        "diffuser",
        "ant-dir",
        "--hub",
        "/somewhere/hub",
        "--stage",
        "pretrain",
        "--out=/x",
        "--threads",
        "1",
    ]
    assert command_line(argparse.Namespace(argv=argv)) == "promptrl train diffuser ant-dir --stage pretrain --threads 1"
