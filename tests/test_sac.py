import numpy as np
import torch

from promptrl.data.experts import load_actor
from promptrl.experiments.sac import SACConfig, SACTrainer, export_expert

TINY = dict(
    n_envs=2, batch_size=32, hidden=32, buffer_size=5_000, learning_starts=200, eval_every=40, checkpoint_minutes=0.0
)


def test_train_checkpoint_resume_and_export(tmp_path):
    run = tmp_path / "run"
    trained = SACTrainer("cheetah-dir", run, SACConfig(total_updates=80, **TINY))
    trained.run()
    rows = (run / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("updates,") and len(rows) == 3
    assert (run / "checkpoint" / "state.safetensors").is_file() and not (run / "checkpoint.tmp").exists()
    assert len(list((run / "snapshots").glob("*.safetensors"))) == 2

    resumed = SACTrainer("cheetah-dir", run, SACConfig(total_updates=120, **TINY))
    assert resumed.load_checkpoint()
    assert resumed.updates == 80 and resumed.buffer.size == resumed.env_steps == 200 + 79 * 2
    first = SACTrainer("cheetah-dir", tmp_path / "unused", SACConfig(total_updates=0, **TINY))
    first.load_checkpoint()  # nothing there
    assert first.updates == 0
    for a, b in zip(
        trained.opt["critic"].state_dict()["state"].values(), resumed.opt["critic"].state_dict()["state"].values()
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])
    for a, b in zip(trained.actor.parameters(), resumed.actor.parameters()):
        assert torch.equal(a, b)
    resumed.run()
    assert len((run / "progress.csv").read_text().splitlines()) == 4

    paths = export_expert("cheetah-dir", run, dest_dir=tmp_path)
    actor, meta = load_actor(paths["expert"])
    assert meta["in_dim"] == 18 and meta["act_dim"] == 6
    assert meta["export_selection_tasks"] == [0, 1]  # both cheetah-dir tasks are test tasks: all select
    assert paths["medium"].is_file()


def test_update_changes_weights(tmp_path):
    trainer = SACTrainer("cheetah-vel", tmp_path, SACConfig(**TINY))
    rng = np.random.default_rng(0)
    n = 100
    trainer.buffer.add(
        rng.normal(size=(n, 18)), rng.uniform(-1, 1, (n, 6)), rng.normal(size=n), rng.normal(size=(n, 18)), np.zeros(n)
    )
    before = [p.clone() for p in trainer.actor.parameters()]
    stats = trainer.update()
    assert np.isfinite(stats["critic_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.actor.parameters()))


def test_a_spec_file_expert_trains_exports_beside_the_spec_and_writes_datasets(tmp_path):
    """A user's suite with a SAC expert: training goals come from the spec's goal_sampling, the weights
    go where its ``expert.weights`` points (beside the spec), and the datasets are written with them."""
    import json
    import shutil
    import sys
    from pathlib import Path

    import gymnasium as gym

    import promptrl
    from promptrl.data.datasets import create_datasets
    from promptrl.experiments.sac import sample_goal

    example = Path(__file__).resolve().parent.parent / "examples" / "point_robot"
    shutil.copy(example / "point_robot.py", tmp_path / "point_robot.py")
    data = json.loads((example / "point-robot.json").read_text())
    data["expert"] = {
        "policy": "sac",
        "weights": "experts/point.safetensors",
        "goal_sampling": {"uniform": [[-1.0, 0.0], [1.0, 1.0]]},
    }
    spec_path = tmp_path / "point-sac.json"
    spec_path.write_text(json.dumps({**data, "name": "point-sac"}))
    sys.modules.pop("point_robot", None)
    gym.registry.pop("tutorial/PointRobot-v0", None)
    spec = promptrl.load_suite(spec_path).spec
    goals = np.array([sample_goal(spec, np.random.default_rng(s)) for s in range(50)])
    assert goals.shape == (50, 2) and goals[:, 0].min() >= -1 and goals[:, 1].min() >= 0 and goals.max() <= 1
    run = tmp_path / "run"
    SACTrainer(spec_path, run, SACConfig(total_updates=80, **TINY)).run()
    paths = export_expert(spec_path, run)
    assert paths["expert"] == tmp_path / "experts" / "point.safetensors" and paths["medium"].is_file()
    test = set(promptrl.load_suite(spec_path).test_tasks)
    selection = load_actor(paths["expert"])[1]["export_selection_tasks"]
    assert selection and not test & set(selection)  # the test tasks choose nothing
    expert = promptrl.load_suite(spec_path).expert(1)
    action, _ = expert.predict(np.zeros(2))
    assert action.shape == (2,) and np.abs(action).max() <= 1
    assert create_datasets(spec_path, "expert", tasks=[1], episodes=1) == ["tutorial/point-robot/task01-expert-v0"]
