"""The scripts in examples/ run as a user copies them (from a directory of their own: the shipped
models are found wherever promptrl is installed) and print measured returns. mw-reach task 6: the shipped model's card gives 771.0 +- 0.0
there; zero actions give 142.7 and uniform random actions 169.2."""

import re
import runpy
import sys
from pathlib import Path

import numpy as np

import promptrl
from promptrl.data.datasets import create_datasets

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, args: list[str], monkeypatch, capsys, workdir: Path) -> str:
    monkeypatch.chdir(workdir)  # not the project root: hub_models/<suite> resolves to the shipped copy
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    return capsys.readouterr().out


def test_run_pretrained_in_a_plain_gymnasium_loop(monkeypatch, capsys, tmp_path):
    out = run_example("run_pretrained.py", ["--suite", "mw-reach", "--task", "6"], monkeypatch, capsys, tmp_path)
    found = re.fullmatch(r"mw-reach task 6 \(goal \[([^\]]*)\]\): return (-?\d+\.\d)\n", out)
    assert found, out
    goal = np.array(found.group(1).split(), dtype=float)  # the goal of task 6, as the env reports it
    np.testing.assert_allclose(goal, promptrl.load_suite("mw-reach").make_env(6).reset(seed=0)[1]["goal"], atol=1e-6)
    assert float(found.group(2)) > 400, out


def test_vector_eval(monkeypatch, capsys, tmp_path):
    out = run_example(
        "vector_eval.py", ["--suite", "mw-reach", "--task", "6", "--n-envs", "2"], monkeypatch, capsys, tmp_path
    )
    found = re.fullmatch(r"2 episodes of mw-reach task 6: (-?\d+\.\d) ± (\d+\.\d)\n", out)
    assert found, out
    mean, std = float(found.group(1)), float(found.group(2))
    assert mean > 400 and std < 0.1 * mean, out  # Meta-World's episodes barely differ between seeds


def test_few_shot_adapt_from_one_expert_episode(monkeypatch, capsys, tmp_path):
    create_datasets(promptrl.load_suite("mw-reach"), "expert", tasks=[6], episodes=1)
    out = run_example(
        "few_shot_adapt.py",
        ["--suite", "mw-reach", "--task", "6", "--epochs", "1", "--episodes", "2"],
        monkeypatch,
        capsys,
        tmp_path,
    )
    found = re.search(r"^Prompt Diffuser:  (-?\d+\.\d)\nPrompt-DT-Expert: (-?\d+\.\d)\n\Z", out, re.M)
    assert found, out
    ours, expert = float(found.group(1)), float(found.group(2))
    assert ours > 400 and expert > 400, out


def test_train_plm_from_scratch(monkeypatch, capsys, tmp_path):
    """The example makes every missing dataset (here all made first, one episode each), trains and
    saves a PLM, and prints its test-split table with expert and random prompts."""
    suite = promptrl.load_suite("mw-reach")
    for quality in ("expert", "random"):
        create_datasets(suite, quality, episodes=1)
    out = run_example("train_plm.py", ["--suite", "mw-reach", "--steps", "2"], monkeypatch, capsys, tmp_path)
    plm = promptrl.PromptDT.from_pretrained(tmp_path / "plm-out")
    assert plm.settings.steps_trained == 2 and plm.settings.batch_per_task == 4
    for prompt in ("expert", "random"):
        table = out.split(f"{prompt} prompts: mw-reach (test):\n")[1]
        rows = re.findall(r"^\| (\d+) \| (-?\d+\.\d) \| \d+\.\d \| \[.*?\] \| 5 \|$", table, re.M)[
            : len(suite.test_tasks)
        ]
        assert [int(t) for t, _ in rows] == suite.test_tasks, out
