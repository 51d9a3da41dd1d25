import minari
import numpy as np
import pytest

import promptrl
from promptrl.data import datasets as ds


@pytest.fixture
def reach():
    return promptrl.load_suite("mw-reach")


def test_create_and_load_roundtrip(reach, minari_root):
    created = ds.create_datasets(reach, "expert", tasks=[6], episodes=2, seed=0)
    assert created == ["promptrl/mw-reach/task06-expert-v0"]
    data = minari.load_dataset("promptrl/mw-reach/task06-expert-v0")  # a plain Minari load
    assert data.total_episodes == 2 and data.total_steps == 2 * reach.horizon
    ep = next(data.iterate_episodes())
    assert ep.observations.shape == (reach.horizon + 1, 39)
    assert ep.actions.shape == (reach.horizon, 4)
    assert ep.truncations[-1] and not ep.terminations.any()
    env = data.recover_environment()
    assert env.unwrapped.task == 6
    assert (minari_root / "promptrl/mw-reach/task06-expert-v0").is_dir()
    assert not list(minari_root.glob(".promptrl-scratch-*"))
    same = reach.dataset(6, "expert")
    np.testing.assert_array_equal(next(same.iterate_episodes()).actions, ep.actions)


def test_idempotent(reach):
    assert ds.create_datasets(reach, "random", tasks=[6], episodes=1) == ["promptrl/mw-reach/task06-random-v0"]
    assert ds.create_datasets(reach, "random", tasks=[6], episodes=1) == []
    with pytest.raises(FileExistsError):
        ds.create_dataset(reach, 6, "random", episodes=1)


def test_seeded_creation_repeats(reach, tmp_path, monkeypatch):
    ds.create_dataset(reach, 9, "medium", episodes=2, seed=3)
    first = next(reach.dataset(9, "medium").iterate_episodes()).actions
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "other"))
    ds.create_dataset(reach, 9, "medium", episodes=2, seed=3)
    np.testing.assert_array_equal(next(reach.dataset(9, "medium").iterate_episodes()).actions, first)


def test_qualities_are_ordered(reach):
    returns = {}
    for q in ("expert", "medium", "random"):
        ds.create_dataset(reach, 6, q, episodes=3)
        returns[q] = np.mean([e.rewards.sum() for e in reach.dataset(6, q).iterate_episodes()])
    assert returns["expert"] > returns["medium"] > returns["random"]


def test_episodes_subset(reach):
    ds.create_dataset(reach, 6, "random", episodes=3)
    assert reach.dataset(6, "random", episodes=2).total_episodes == 2
    with pytest.raises(ValueError, match=r"episodes must be an integer in \[1, 3\]"):
        reach.dataset(6, "random", episodes=4)
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        ds.create_dataset(reach, 9, "random", episodes=0)


def test_missing_dataset_names_the_command(reach):
    with pytest.raises(FileNotFoundError, match="promptrl data mw-reach --quality expert --tasks 6"):
        reach.dataset(6, "expert")
    with pytest.raises(FileNotFoundError):
        reach.datasets("test", "expert")


def test_interrupted_creation_leaves_nothing(reach, minari_root, monkeypatch):
    real = minari.create_dataset_from_buffers

    def interrupted(*args, **kwargs):  # the data is written, then the run is killed before it completes
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ds.create_dataset(reach, 6, "random", episodes=1)
    assert not ds.dataset_exists("promptrl/mw-reach/task06-random-v0")
    assert not (minari_root / "promptrl/mw-reach/task06-random-v0").exists()
    assert not list(minari_root.glob(".promptrl-scratch-*"))


def test_suites_table_lists_all():
    table = ds.suites_table()
    for name in promptrl.available_suites():
        assert f"| {name} |" in table


def test_rollout_with_episodes_ending_at_different_times():
    """Ant terminates when it falls: parallel episodes of different lengths are cut where each ended."""
    from promptrl.data.rollouts import RandomPolicy, rollout

    ant = promptrl.load_suite("ant-dir")
    env = ant.make_env(6)
    episodes = rollout(
        ant, 6, RandomPolicy(env.action_space, seed=0), 6, seed=0, env_kwargs={"healthy_z_range": (0.45, 1.0)}
    )
    lengths = [len(e.actions) for e in episodes]
    assert len(set(lengths)) > 1 and max(lengths) <= ant.horizon
    for e in episodes:
        assert len(e.observations) == len(e.actions) == len(e.rtg)
        assert e.final_observation is not None and e.final_observation.shape == e.observations.shape[1:]
        assert e.rtg[0] == pytest.approx(e.episode_return, rel=1e-6)
        assert e.terminations[-1] or e.truncations[-1]
        assert not (e.terminations[:-1].any() or e.truncations[:-1].any())
