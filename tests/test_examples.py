"""The scripts in examples/ run as a user copies them (from a directory of their own: the shipped
models are found wherever promptrl is installed) and print measured returns. mw-reach task 6: the shipped model's card gives 771.0 +- 0.0
there; zero actions give 142.7 and uniform random actions 169.2."""

import re
import runpy
import sys
from pathlib import Path

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
    assert "mw-reach task 6" in out
    episode_return = float(re.search(r"return (-?\d+\.\d)", out).group(1))
    assert episode_return > 400, out


def test_vector_eval(monkeypatch, capsys, tmp_path):
    out = run_example(
        "vector_eval.py", ["--suite", "mw-reach", "--task", "6", "--n-envs", "2"], monkeypatch, capsys, tmp_path
    )
    assert out.startswith("2 episodes of mw-reach task 6")
    mean = float(re.search(r": (-?\d+\.\d) ±", out).group(1))
    assert mean > 400, out


def test_few_shot_adapt_from_one_expert_episode(monkeypatch, capsys, tmp_path):
    create_datasets(promptrl.load_suite("mw-reach"), "expert", tasks=[6], episodes=1)
    out = run_example(
        "few_shot_adapt.py",
        ["--suite", "mw-reach", "--task", "6", "--epochs", "1", "--episodes", "2"],
        monkeypatch,
        capsys,
        tmp_path,
    )
    ours = float(re.search(r"Prompt Diffuser:\s+(-?\d+\.\d)", out).group(1))
    expert = float(re.search(r"Prompt-DT-Expert:\s+(-?\d+\.\d)", out).group(1))
    assert ours > 400 and expert > 400, out
