"""Choices made while training read the validation tasks (or the training tasks), never the test tasks."""

import json

import pytest

import promptrl
import promptrl.evaluation
from promptrl.experiments.cli import main


def test_selection_split_is_validation_else_train():
    assert promptrl.load_suite("mw-push").selection_split == "validation"
    assert promptrl.load_suite("cheetah-vel").selection_split == "train"  # no validation tasks
    with pytest.warns(UserWarning, match=r"its train tasks \[0, 1\] are also test tasks"):
        assert promptrl.load_suite("cheetah-dir").selection_split == "train"  # both tasks are train and test


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


TINY = ["--embed-dim", "16", "--n-layer", "1", "--context", "5", "--prompt-length", "2", "--batch-per-task", "2"]


@pytest.mark.parametrize("prompt", ["--prompt", "--no-prompt"])  # Prompt-DT and MT-ORL
def test_train_plm_keeps_the_checkpoint_best_on_the_selection_split(point_robot, prompt):
    assert main(["data", str(point_robot), "--quality", "expert", "--episodes", "2"]) == 0
    argv = ["train", "plm", str(point_robot), "--steps", "6", "--checkpoint-steps", "2", "--eval-episodes", "2"]
    assert main(argv + ["--eval-tasks", "1", prompt, *TINY, "--threads", "1"]) == 0
    run = point_robot.parent / "home" / "plm" / "point-robot"
    suite = promptrl.load_suite(point_robot)
    rows = [line.split(",") for line in (run / "eval.csv").read_text().splitlines()[1:]]
    scores = {int(step): float(ret) for step, ret, _ in rows}
    assert sorted(scores) == [2, 4, 6]
    best = min(scores, key=lambda s: (-scores[s], s))
    chosen = promptrl.PromptDT.from_pretrained(run / "best")
    assert chosen.settings.steps_trained == best and chosen.settings.use_prompt == (prompt == "--prompt")
    card = (run / "best" / "README.md").read_text()
    first = suite.split(suite.selection_split)[0]
    assert "**Selection.**" in card and f"{suite.selection_split} split (tasks {first};" in card
    assert f"step {best:,}, mean return {scores[best]:.2f}." in card
    assert "The checkpoint chosen on the" in (run / "final" / "README.md").read_text()


def test_evaluating_checkpoints_leaves_the_training_unchanged(point_robot):
    """Training to a step without --eval-episodes gives the weights a selection run had at that step
    (evaluation draws from its own random streams), so a selected step can be trained again alone."""
    assert main(["data", str(point_robot), "--quality", "expert", "--episodes", "2"]) == 0
    runs = point_robot.parent / "runs"
    argv = ["train", "plm", str(point_robot), "--steps", "6", "--checkpoint-steps", "2", *TINY, "--threads", "1"]
    assert main(argv + ["--eval-episodes", "2", "--out", str(runs / "selected")]) == 0
    assert main(argv + ["--out", str(runs / "plain")]) == 0
    weights = [(runs / run / "final" / "model.safetensors").read_bytes() for run in ("selected", "plain")]
    assert weights[0] == weights[1]


def test_best_checkpoint_ranks_by_return_and_recovers_from_a_kill(point_robot, tmp_path, monkeypatch):
    from promptrl.evaluation import BestCheckpoint, EvalResult

    suite = promptrl.load_suite(point_robot)
    plm = promptrl.PromptDT(suite, embed_dim=16, n_layer=1, context=5, prompt_length=2)
    scores = {2: 5.0, 4: 7.0, 6: 7.0, 8: 3.0}  # a tie at 4 and 6 keeps the earlier step
    monkeypatch.setattr(
        promptrl.evaluation,
        "evaluate",
        lambda model, suite, split, **kw: EvalResult(suite.name, split, {0: [scores[model.settings.steps_trained]]}),
    )
    selector = BestCheckpoint(suite, tmp_path / "best", tmp_path / "eval.csv", 1)
    for step in (2, 4):
        plm.settings.steps_trained = step
        selector(plm)
    assert selector.best_step == 4 and promptrl.PromptDT.from_pretrained(tmp_path / "best").settings.steps_trained == 4
    plm.settings.steps_trained = 6
    selector(plm)
    assert promptrl.PromptDT.from_pretrained(tmp_path / "best").settings.steps_trained == 4
    # a run killed after logging step 8 as the best, before saving it: the resumed run saves it
    scores[8] = 9.0
    log = tmp_path / "eval.csv"
    log.write_text(log.read_text() + "8,9.00,0.00\n")
    plm.settings.steps_trained = 8
    selector.catch_up(plm)
    assert promptrl.PromptDT.from_pretrained(tmp_path / "best").settings.steps_trained == 8
    # a checkpoint the log misses is evaluated on resume
    plm.settings.steps_trained, scores[10] = 10, 1.0
    selector.catch_up(plm)
    assert selector.scores() == {2: 5.0, 4: 7.0, 6: 7.0, 8: 9.0, 10: 1.0}
    with pytest.raises(ValueError, match="n_episodes must be a positive integer"):
        BestCheckpoint(suite, tmp_path / "b", tmp_path / "e.csv", 0)
