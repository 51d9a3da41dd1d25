"""The "Bring your own tasks" tutorial runs as written: the ```bash block of ``docs/own-tasks.md``, line by
line, in a folder holding a copy of ``examples/point_robot/``, ends in a Table 1 of the point robot's tasks.

Each ``promptrl ...`` line runs through the ``promptrl`` entry point in this process, with flags appended
that shrink its budget to seconds (a later flag overrides the page's): the page's commands and their
order are tested, not the step counts a real run wants. Datasets and runs stay in the test's folder
(``MINARI_DATASETS_PATH`` and ``PROMPTRL_HOME`` point into it)."""

import math
import re
import shlex
import shutil
import sys
from pathlib import Path

import gymnasium as gym

from promptrl.experiments.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "own-tasks.md"
EXAMPLE = ROOT / "examples" / "point_robot"
METHODS = ["Prompt-DT-Expert", "Prompt Diffuser"]
"""The Table 1 methods the test's ``reproduce`` runs."""
BUDGET = {
    "suites": [],
    # 3 episodes per task and quality instead of the spec's 20
    "data": shlex.split("--episodes 3"),
    # 20 steps of a one-layer, 16-wide model with a 6-step history
    "train plm": shlex.split(
        "--steps 20 --embed-dim 16 --n-layer 1 --context 6 --batch-per-task 4 --warmup-steps 5 --threads 1"
    ),
    # one episode per task
    "evaluate": shlex.split("--episodes 1"),
    # 10 training steps of each model it trains, two methods; --out is the page's results/quick/, spelled out
    "reproduce": shlex.split("--plm-steps 10 --generator-steps 10 --threads 1 --out results/quick --methods") + METHODS,
}
"""Flags appended to each subcommand of the page (``train plm`` by its two words)."""


def bash_commands(text: str) -> list[str]:
    """The ``promptrl`` lines of the page's only ```bash block."""
    blocks = re.findall(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S)
    assert len(blocks) == 1, f"expected one ```bash block in {PAGE.name}, found {len(blocks)}"
    return [line.strip() for line in blocks[0].splitlines() if line.strip().startswith("promptrl ")]


def subcommand(argv: list[str]) -> str:
    return " ".join(argv[:2]) if argv[0] == "train" else argv[0]


def option(argv: list[str], name: str) -> str | None:
    """The value of the last ``name`` option in ``argv``."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
    return values[-1] if values else None


def test_bash_commands_are_found():
    text = (
        "intro\n```bash\n# a comment\npromptrl suites a.json\n\npromptrl data a.json\n```\n```text\npromptrl x\n```\n"
    )
    assert bash_commands(text) == ["promptrl suites a.json", "promptrl data a.json"]


def test_the_tutorial_commands_make_a_table1(tmp_path, monkeypatch, minari_root, capsys):
    commands = bash_commands(PAGE.read_text(encoding="utf-8"))
    assert [subcommand(shlex.split(c)[1:]) for c in commands] == [
        "suites",
        "data",
        "train plm",
        "evaluate",
        "reproduce",
    ]
    for file in EXAMPLE.iterdir():
        if file.suffix in (".json", ".py"):
            shutil.copy(file, tmp_path / file.name)
    monkeypatch.setenv("PROMPTRL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    # the example's module and env id as if this were a new process (other tests load other copies)
    monkeypatch.delitem(sys.modules, "point_robot", raising=False)
    monkeypatch.delitem(gym.registry, "tutorial/PointRobot-v0", raising=False)
    argvs = []
    for line in commands:
        argv = shlex.split(line)[1:]
        argv += BUDGET[subcommand(argv)]
        argvs.append(argv)
        status = main(argv)
        out, err = capsys.readouterr()
        assert status == 0, f"`{line}` (run with {BUDGET[subcommand(argv)]}) failed:\n{err[-3000:]}"
        if argv[0] == "suites":
            assert "| point-robot | tutorial/PointRobot-v0 | 10 | 6 | [9] | [1, 4, 7] |" in out
        if argv[0] == "evaluate":
            assert "prompt: expert" in out and "prompt: random" in out

    assert len(list(minari_root.glob("tutorial/point-robot/task*-v0"))) == 30, "a dataset per task and quality"
    plm_run = next(a for a in argvs if subcommand(a) == "train plm")
    plm_folder = tmp_path / (option(plm_run, "--out") or "home/plm/point-robot")  # its --out, or its default
    assert (plm_folder / "final" / "config.json").is_file(), "the PLM of train plm"
    results = tmp_path / "results" / "quick"
    for model in ("plm", "mt-orl", "pretrained"):
        assert (results / "hub" / "point-robot" / model / "config.json").is_file(), f"reproduce's {model}"
    # the page's table1-point-robot.md holds every method; this budget's two name theirs
    table = (results / "table1-point-robot_prompt-dt-expert+prompt-diffuser.md").read_text()
    for method in METHODS:
        row = re.search(rf"^\| {re.escape(method)} \| (\S+)(?: \[\S+, \S+\])? \|", table, re.M)
        assert row is not None, f"no row of {method} in the table:\n{table}"
        assert math.isfinite(float(row.group(1))), row.group(0)
