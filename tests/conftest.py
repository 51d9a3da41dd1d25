import shutil
import sys
from pathlib import Path

import gymnasium as gym
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "point_robot"
TINY_PLM = dict(embed_dim=16, n_layer=1, batch_per_task=4, warmup_steps=5, context=6)


def make_tiny_hub(root: Path, suite_name: str, tasks: list[int], qualities=("expert", "random")) -> Path:
    """``root/<suite name>`` (``suite_name``: a suite's name or spec file) laid out as shipped (plm/, mt-orl/, pretrained/ and a root Prompt Diffuser),
    with tiny models trained two steps on 2-episode datasets of ``tasks`` (the first a test task)."""
    import promptrl
    from promptrl.data.datasets import create_datasets
    from promptrl.methods.diffuser import PromptDiffuser
    from promptrl.methods.plm import PromptDT

    suite = promptrl.load_suite(suite_name)
    for quality in qualities:
        create_datasets(suite, quality, tasks=tasks, episodes=2)
    data = [suite.dataset(t, "expert") for t in tasks]
    folder = root / suite.name
    plm = PromptDT(suite, seed=0, **TINY_PLM).learn(data, total_steps=2, progress_bar=False)
    plm.save_pretrained(folder / "plm")
    PromptDT(suite, seed=0, use_prompt=False, **TINY_PLM).learn(
        data, total_steps=2, progress_bar=False
    ).save_pretrained(folder / "mt-orl")
    pd = PromptDiffuser(plm, n_steps=4, hidden=16, batch_size=4).learn(
        data[1:], epochs=1, steps_per_epoch=2, progress_bar=False
    )
    pd.save_generator(folder / "pretrained")
    pd.learn(data[:1], epochs=1, steps_per_epoch=2, progress_bar=False).save_pretrained(folder)
    return root


@pytest.fixture
def point_robot(tmp_path, monkeypatch) -> Path:
    """A copy of ``examples/point_robot/`` (spec file and env module) in ``tmp_path``, its env not yet
    registered, ``PROMPTRL_HOME`` under ``tmp_path``; returns the spec file's path."""
    for name in ("point-robot.json", "point_robot.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    monkeypatch.delitem(sys.modules, "point_robot", raising=False)
    monkeypatch.delitem(gym.registry, "tutorial/PointRobot-v0", raising=False)
    monkeypatch.setenv("PROMPTRL_HOME", str(tmp_path / "home"))
    return tmp_path / "point-robot.json"


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    """Every test gets its own empty Minari dataset folder."""
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture(autouse=True)
def torch_threads():
    """Commands set torch's thread count (``--threads``); each test gets back the count it started with,
    so a model a test trains does not depend on which tests ran before it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
