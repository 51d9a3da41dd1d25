"""Choices made while training read the validation tasks (or the training tasks), never the test tasks."""

import json
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import promptrl
import promptrl.evaluation
from promptrl.experiments.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "point_robot"


@pytest.fixture
def point_robot(tmp_path, monkeypatch) -> Path:
    for name in ("point-robot.json", "point_robot.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    monkeypatch.delitem(sys.modules, "point_robot", raising=False)
    monkeypatch.delitem(gym.registry, "tutorial/PointRobot-v0", raising=False)
    monkeypatch.setenv("PROMPTRL_HOME", str(tmp_path / "home"))
    return tmp_path / "point-robot.json"


def test_selection_split_is_validation_else_train():
    assert promptrl.load_suite("mw-push").selection_split == "validation"
    assert promptrl.load_suite("cheetah-vel").selection_split == "train"  # no validation tasks


@pytest.mark.parametrize("validation", [[9], []])
def test_train_plm_evaluates_checkpoints_off_the_test_split(point_robot, monkeypatch, validation):
    data = json.loads(point_robot.read_text())
    data["split"] = {**data["split"], "validation": validation}
    point_robot.write_text(json.dumps(data))
    seen = []
    real = promptrl.evaluation.evaluate

    def spy(model, suite, split="test", *args, **kwargs):
        seen.append(promptrl.load_suite(suite).split(split) if kwargs.get("tasks") is None else kwargs["tasks"])
        return real(model, suite, split, *args, **kwargs)

    monkeypatch.setattr(promptrl.evaluation, "evaluate", spy)
    assert main(["data", str(point_robot), "--quality", "expert", "--episodes", "2"]) == 0
    argv = ["train", "plm", str(point_robot), "--steps", "4", "--checkpoint-steps", "2", "--eval-episodes", "1"]
    tiny = ["--embed-dim", "16", "--n-layer", "1", "--context", "5", "--prompt-length", "2", "--batch-per-task", "2"]
    assert main(argv + tiny + ["--threads", "1"]) == 0
    test = set(promptrl.load_suite(point_robot).test_tasks)
    assert len(seen) == 2 and all(tasks and not set(tasks) & test for tasks in seen), seen
    expected = validation or promptrl.load_suite(point_robot).train_tasks
    assert all(tasks == expected for tasks in seen)
    header = (point_robot.parent / "home" / "plm" / "point-robot" / "eval.csv").read_text().splitlines()[0]
    assert header == ("step,validation_return,validation_std" if validation else "step,train_return,train_std")
