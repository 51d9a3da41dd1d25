"""Fault injection: every resumable training job, killed with SIGKILL at a random point and run again,
ends with the same bytes as a run that never stopped (on a CPU, in one process)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from promptrl.experiments.cli import main

KILL_SEEDS = (0, 1)
PLM_ARGS = ["--embed-dim", "16", "--n-layer", "1", "--batch-per-task", "4", "--warmup-steps", "5", "--context", "6"]
PLM_ARGS += ["--threads", "1", "--log-steps", "5"]


def killed_midway(command: list[str], marker: Path, seed: int, timeout: float = 60.0) -> bool:
    """Start ``command``, wait until ``marker`` (a file its first save writes) appears, then SIGKILL it after a
    random delay; True when it was killed before it finished by itself."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(np.random.default_rng(seed).uniform(0.0, 0.3))
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return not finished


def plm_run(out: Path, steps: int, checkpoint_steps: int) -> list[str]:
    return ["train", "plm", "mw-reach", "--steps", str(steps), "--checkpoint-steps", str(checkpoint_steps)] + [
        "--out",
        str(out),
        *PLM_ARGS,
    ]


@pytest.fixture(scope="module")
def reach_root(tmp_path_factory):
    """Expert datasets of mw-reach (1 episode a task), made once for the module."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        assert main(["data", "mw-reach", "--quality", "expert", "--episodes", "1"]) == 0
    return root


@pytest.fixture
def reach_data(minari_root, reach_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(reach_root))


def test_plm_resumes_bit_for_bit(tmp_path, reach_data):
    def weights(out: Path) -> bytes:
        return (out / "final" / "model.safetensors").read_bytes()

    assert main(plm_run(tmp_path / "straight", 80, 9)) == 0
    reference = weights(tmp_path / "straight")
    assert main(plm_run(tmp_path / "other-interval", 80, 1000)) == 0  # chunking does not change the run
    assert weights(tmp_path / "other-interval") == reference

    killed = []
    for seed in KILL_SEEDS:
        out = tmp_path / f"killed{seed}"
        command = [sys.executable, "-m", "promptrl", *plm_run(out, 80, 9)]
        killed.append(killed_midway(command, out / "checkpoint" / "progress.json", seed))
        assert main(plm_run(out, 80, 9)) == 0  # resumes from the last checkpoint
        assert weights(out) == reference, f"kill seed {seed}"
        logged = [int(row.split(",")[0]) for row in (out / "progress.csv").read_text().splitlines()[1:]]
        assert logged == list(range(5, 81, 5))  # rows after the checkpoint resumed from are logged once
    assert any(killed), "no run was killed before it finished: lengthen the runs"

    out = tmp_path / "stop-and-continue"
    assert main(plm_run(out, 40, 1000)) == 0
    assert main(plm_run(out, 80, 1000)) == 0
    assert weights(out) == reference


GENERATOR_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
import promptrl
from promptrl.methods.diffuser import pretrain_generator
from promptrl.methods.plm import PromptDT
plm = PromptDT.from_pretrained(sys.argv[1])
data = promptrl.load_suite("mw-reach").datasets("train", "expert")
pretrain_generator(plm, data, sys.argv[2], int(sys.argv[3]), save_steps=int(sys.argv[4]), progress_bar=False,
                   recipe={"batch_size": 4}, n_steps=4, hidden=16)
"""


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed child runs
    yield
    torch.set_num_threads(threads)


def test_generator_pretraining_resumes_bit_for_bit(tmp_path, reach_data, one_thread):
    from conftest import TINY_PLM

    import promptrl
    from promptrl.methods.diffuser import pretrain_generator
    from promptrl.methods.plm import PromptDT

    suite = promptrl.load_suite("mw-reach")
    data = suite.datasets("train", "expert")
    PromptDT(suite, seed=0, **TINY_PLM).learn(data, total_steps=2, progress_bar=False).save_pretrained(tmp_path / "plm")
    plm = PromptDT.from_pretrained(tmp_path / "plm")

    def run(folder: Path, steps: int, save_steps: int) -> bytes:
        settings = dict(recipe={"batch_size": 4}, n_steps=4, hidden=16, progress_bar=False)
        pretrain_generator(plm, data, folder, steps, save_steps=save_steps, **settings)
        return (folder / "model.safetensors").read_bytes()

    reference = run(tmp_path / "straight", 60, 7)
    assert run(tmp_path / "other-interval", 60, 1000) == reference
    killed = []
    for seed in KILL_SEEDS:
        folder = tmp_path / f"killed{seed}"
        command = [sys.executable, "-c", GENERATOR_SCRIPT, str(tmp_path / "plm"), str(folder), "60", "7"]
        killed.append(killed_midway(command, folder / "training_state.json", seed))
        assert run(folder, 60, 7) == reference, f"kill seed {seed}"
    assert any(killed), "no run was killed before it finished: lengthen the runs"
    run(tmp_path / "stop-and-continue", 30, 1000)
    assert run(tmp_path / "stop-and-continue", 60, 1000) == reference


SAC_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from collections.abc import Callable
from pathlib import Path
from promptrl.experiments.sac import SACConfig, SACTrainer
config = SACConfig(total_updates=int(sys.argv[3]), n_envs=2, batch_size=16, hidden=16, buffer_size=2000,
                   learning_starts=60, eval_every=10**6, checkpoint_minutes=0.0)
SACTrainer(sys.argv[1], Path(sys.argv[2]), config).run()
"""


@pytest.mark.parametrize("suite", ["cheetah-dir", "ant-dir"])
def test_expert_training_resumes_bit_for_bit(tmp_path, suite, one_thread):
    from promptrl.experiments.sac import SACConfig, SACTrainer

    def run(out: Path, updates: int, minutes: float = 0.0) -> bytes:
        config = SACConfig(
            total_updates=updates,
            n_envs=2,
            batch_size=16,
            hidden=16,
            buffer_size=2000,
            learning_starts=60,
            eval_every=10**6,
            checkpoint_minutes=minutes,
        )
        SACTrainer(suite, out, config).run()
        return (out / "checkpoint" / "state.safetensors").read_bytes()

    reference = run(tmp_path / "straight", 200, 1.0)  # saves once, at the end
    out = tmp_path / "killed"
    command = [sys.executable, "-c", SAC_SCRIPT, suite, str(out), "200"]  # saves after every update
    assert killed_midway(command, out / "checkpoint" / "progress.json", KILL_SEEDS[len(suite) % 2])
    assert run(out, 200) == reference
    run(tmp_path / "stop-and-continue", 90)  # stops mid-episode
    assert run(tmp_path / "stop-and-continue", 200) == reference


REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("seconds", "finished")
"""Keys of a result cell that say when and how fast it was measured, not what was measured."""


def killed_after(args: list[str], ready, seed: int, longest: float, log: Path, timeout: float = 60.0) -> bool:
    """Run ``python -m promptrl <args>`` (stdout into ``log``), wait until ``ready()``, then SIGKILL it after a
    random delay of up to ``longest`` seconds; True when it was killed before it finished by itself."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "promptrl", *args], env=env, stdout=stdout, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(np.random.default_rng(seed).uniform(0.0, longest))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return not finished


@pytest.fixture(scope="module")
def dir_hub(tmp_path_factory):
    """A tiny cheetah-dir hub (its two tasks are both its training and its test tasks) and its datasets'
    root, made once for the module."""
    from conftest import make_tiny_hub

    root = tmp_path_factory.mktemp("dir-hub")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        make_tiny_hub(root / "hub", "cheetah-dir", [0, 1])
    return root


@pytest.fixture
def hub(dir_hub, monkeypatch, one_thread):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(dir_hub / "minari"))
    return dir_hub / "hub"


def measured(out: Path, runs: str) -> dict[str, object]:
    """Every result cell under ``out/<runs>`` without its timing keys, and the tables' rows (markdown rows,
    not the date and hardware lines above them; whole CSVs) and fine-tuned weights written under ``out``."""
    cells = {
        str(p.relative_to(out)): {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING_KEYS}
        for p in sorted((out / runs).rglob("*.json"))
    }
    tables = {
        p.name: [line for line in p.read_text().splitlines() if line.startswith("|")] for p in sorted(out.glob("*.md"))
    }
    csvs = {p.name: p.read_text() for p in sorted(out.glob("*.csv"))}
    weights = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("model.safetensors"))}
    return {"cells": cells, "tables": tables, "csvs": csvs, "weights": weights}


def reproduce_run(hub: Path, out: Path) -> list[str]:
    return ["reproduce", "cheetah-dir", "--hub", str(hub), "--out", str(out), "--seeds", "1", "--episodes", "1"] + [
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--full-epochs",
        "1",
        "--methods",
        "Prompt Diffuser",
        "Prompt-DT-Expert",
        "--threads",
        "1",
    ]


def assert_killed_runs_resume(
    run: Callable[[Path], list[str]],
    ready: Callable[[Path], bool],
    delay: float,
    reference: dict,
    tmp_path: Path,
    finished: Callable[[Path], None] | None = None,
) -> None:
    """For every kill seed: start ``run(out)``, kill it once ``ready(out)`` (after up to ``delay`` s more),
    rerun it to the end and check its results equal ``reference`` (and ``finished(out)``); at least one
    run must have been killed before it finished."""
    killed = []
    for seed in KILL_SEEDS:
        out = tmp_path / f"killed{seed}"
        killed.append(killed_after(run(out), lambda out=out: ready(out), seed, delay, tmp_path / f"log{seed}"))
        assert main(run(out)) == 0  # resumes at the next unfinished unit
        assert measured(out, "runs") == reference, f"kill seed {seed}"
        if finished is not None:
            finished(out)
    assert any(killed), "no run was killed before it finished: lengthen the runs"


def test_reproduce_cells_resume_to_the_same_results(tmp_path, hub):
    assert main(reproduce_run(hub, tmp_path / "straight")) == 0
    reference = measured(tmp_path / "straight", "runs")
    assert len(reference["cells"]) == 2 and len(reference["weights"]) == 2 and reference["tables"]
    assert all(list(cell["returns"]) == ["0", "1"] for cell in reference["cells"].values())

    def ready(out: Path) -> bool:  # the first fine-tuned generator is kept
        return (out / "models").is_dir() and any((out / "models").rglob("config.json"))

    def finished(out: Path) -> None:  # every cell finished: no tasks file left
        assert not list(out.rglob("*-tasks.json"))

    assert_killed_runs_resume(lambda out: reproduce_run(hub, out), ready, 0.25, reference, tmp_path, finished)


def ablation_run(hub: Path, out: Path) -> list[str]:
    return ["ablate", "update-rules", "cheetah-dir", "--hub", str(hub), "--out", str(out), "--seeds", "1"] + [
        "--episodes",
        "1",
        "--epochs",
        "1",
        "--tasks",
        "1",
        "--threads",
        "1",
    ]


def test_ablation_cells_resume_to_the_same_results(tmp_path, hub):
    from promptrl.experiments.ablations import UPDATE_RULES

    assert main(ablation_run(hub, tmp_path / "straight")) == 0
    reference = measured(tmp_path / "straight", "runs")
    assert sorted(cell["method"] for cell in reference["cells"].values()) == sorted(UPDATE_RULES)
    assert len(reference["tables"]["update-rules-cheetah-dir.md"]) == 3
    ready = lambda out: (out / "runs").exists()  # the first cell is written
    assert_killed_runs_resume(lambda out: ablation_run(hub, out), ready, 2.5, reference, tmp_path)


def finetune_run(hub: Path) -> list[str]:
    return ["train", "diffuser", "cheetah-dir", "--stage", "finetune", "--epochs", "1", "--hub", str(hub)] + [
        "--threads",
        "1",
    ]


def test_generator_finetuning_reruns_bit_for_bit(tmp_path, hub):
    import shutil

    def weights(copy: Path) -> bytes:
        return (copy / "cheetah-dir" / "model.safetensors").read_bytes()

    straight = shutil.copytree(hub, tmp_path / "straight")  # fine-tuning writes into <hub>/<suite>
    shipped = weights(straight)
    assert main(finetune_run(straight)) == 0
    reference = weights(straight)
    assert reference != shipped
    killed = []
    for seed in KILL_SEEDS:
        copy = shutil.copytree(hub, tmp_path / f"killed{seed}")
        log = tmp_path / f"log{seed}"
        ready = lambda log=log: "fine-tuning on" in log.read_text()  # printed before the first step
        killed.append(killed_after(finetune_run(copy), ready, seed, 0.5, log))
        assert main(finetune_run(copy)) == 0
        assert weights(copy) == reference, f"kill seed {seed}"
    assert any(killed), "no run was killed before it finished: lengthen the runs"
