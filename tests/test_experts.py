import numpy as np
import pytest
import torch

import promptrl
from promptrl.data.experts import EXPERT_DIR, Actor, expert_path, load_actor, load_expert, save_actor
from promptrl.data.rollouts import rollout

SUITES = promptrl.available_suites()


def test_every_trained_expert_is_shipped():
    for name in SUITES:
        spec = promptrl.load_suite(name).spec
        if spec.expert.policy == "sac":
            assert expert_path(spec).parent == EXPERT_DIR, name
            assert expert_path(spec).is_file(), name
            assert expert_path(spec, medium=True).is_file(), name


@pytest.mark.parametrize("name", SUITES)
def test_expert_acts(name):
    suite = promptrl.load_suite(name)
    task = suite.test_tasks[0]
    expert = suite.expert(task)
    env = suite.make_env(task)
    obs, _ = env.reset(seed=0)
    action, state = expert.predict(obs, deterministic=True)
    assert state is None and action.shape == env.action_space.shape and env.action_space.contains(action)
    batch, _ = expert.predict(np.stack([obs, obs]))
    np.testing.assert_allclose(batch[0], action, atol=1e-6)
    with pytest.raises(ValueError, match="observation must have shape"):
        expert.predict(obs[:-1])


@pytest.mark.parametrize("name", ["cheetah-vel", "mw-reach"])
def test_expert_beats_random_on_a_short_rollout(name):
    suite = promptrl.load_suite(name)
    task = suite.test_tasks[0]
    expert_ret = rollout(suite, task, suite.expert(task), 2)[0].episode_return
    medium_ret = np.mean(
        [e.episode_return for e in rollout(suite, task, load_expert(suite.spec, task, "medium", seed=0), 2)]
    )
    from promptrl.data.rollouts import RandomPolicy

    random_ret = rollout(suite, task, RandomPolicy(suite.make_env(task).action_space, 0), 2)[0].episode_return
    assert expert_ret > medium_ret > random_ret


def test_actor_roundtrip_and_corrupt_file(tmp_path):
    torch.manual_seed(0)
    actor = Actor(5, 2, hidden=16)
    meta = {"suite": "x", "in_dim": 5, "act_dim": 2, "hidden": 16}
    save_actor(actor, tmp_path / "a.safetensors", meta)
    loaded, meta2 = load_actor(tmp_path / "a.safetensors")
    x = torch.randn(3, 5)
    torch.testing.assert_close(loaded.act(x, True), actor.act(x, True))
    assert meta2 == meta
    data = (tmp_path / "a.safetensors").read_bytes()
    (tmp_path / "b.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt expert weights"):
        load_actor(tmp_path / "b.safetensors")
    with pytest.raises(FileNotFoundError):
        load_actor(tmp_path / "missing.safetensors")


def test_bad_quality():
    with pytest.raises(ValueError, match="quality must be 'expert' or 'medium'"):
        load_expert(promptrl.load_suite("mw-reach").spec, 6, "random")


def test_ant_policy_input_is_the_goal_frame():
    """In the goal frame, the planar velocity's x part is the velocity along the goal direction."""
    import gymnasium as gym

    from promptrl.data.experts import policy_input

    env = gym.make("promptrl/AntDir-v0", task=3).unwrapped
    env.reset(seed=0)
    for _ in range(15):
        obs, *_ = env.step(env.action_space.sample())
    g = env.goal[0]
    canon = policy_input("ant-frame", obs, env.goal)[0]
    assert canon.shape == (27,)
    assert canon[13] == pytest.approx(np.cos(g) * obs[13] + np.sin(g) * obs[14], abs=1e-5)
    assert np.linalg.norm(canon[1:5]) == pytest.approx(1.0, abs=1e-5)

    def yaw(q):
        w, x, y, z = q
        return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    assert np.angle(np.exp(1j * (yaw(canon[1:5]) - (yaw(obs[1:5]) - g)))) == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_array_equal(canon[5:13], obs[5:13].astype(np.float32))  # joint angles unchanged
    cheetah = policy_input("goal", np.zeros((2, 17)), np.array([0.5]))
    assert cheetah.shape == (2, 18) and (cheetah[:, -1] == 0.5).all()
