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
