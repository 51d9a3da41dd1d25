import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import promptrl  # noqa: F401  (registers the envs)
from promptrl.tasks.envs import ENV_CLASSES

IDS = sorted(ENV_CLASSES)


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    env = gym.make(env_id, task=1)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_goal_in_info_not_in_observation(env_id):
    env = gym.make(env_id, task=1)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    np.testing.assert_allclose(info["goal"], env.unwrapped.goal)
    assert info["task"] == 1
    _, _, _, _, info = env.step(env.action_space.sample())
    assert "goal" in info
    # Observations carry no goal information: two tasks give the same first observation
    # (but for Meta-World's puck position, which is drawn independently of the goal).
    obs2, _ = gym.make(env_id, task=0).reset(seed=0)
    keep = np.ones(obs.shape, bool)
    if "MetaWorld" in env_id:
        keep[[4, 5, 6, 22, 23, 24]] = False
        np.testing.assert_array_equal(obs[-3:], 0.0)
    np.testing.assert_allclose(obs[keep], obs2[keep])


@pytest.mark.parametrize("env_id", IDS)
def test_seeding_repeats(env_id):
    def run():
        env = gym.make(env_id, task=1)
        env.action_space.seed(5)
        obs, _ = env.reset(seed=7)
        out = [obs]
        for _ in range(20):
            obs, r, *_ = env.step(env.action_space.sample())
            out += [obs, np.array([r])]
        return np.concatenate(out)

    np.testing.assert_array_equal(run(), run())


def test_time_limits():
    assert gym.spec("promptrl/CheetahVel-v0").max_episode_steps == 200
    assert gym.spec("promptrl/MetaWorldReach-v0").max_episode_steps == 100


def _step(env_id, task, action, seed=0):
    env = gym.make(env_id, task=task)
    env.reset(seed=seed)
    return env.step(action)


def test_cheetah_dir_reward():
    a = np.full(6, 0.5, np.float32)
    _, r_fwd, _, _, info = _step("promptrl/CheetahDir-v0", 0, a)
    _, r_bwd, _, _, info_b = _step("promptrl/CheetahDir-v0", 1, a)
    ctrl = 0.05 * np.sum(a**2)
    assert r_fwd == pytest.approx(info["x_velocity"] - ctrl)
    assert r_bwd == pytest.approx(-info_b["x_velocity"] - ctrl)
    assert info["x_velocity"] == pytest.approx(info_b["x_velocity"])  # same dynamics, mirrored reward


def test_cheetah_vel_reward_hand_made_state():
    env = gym.make("promptrl/CheetahVel-v0", task=2).unwrapped  # goal 0.225
    env.reset(seed=0)
    qpos, qvel = env.init_qpos.copy(), env.init_qvel.copy()
    env.set_state(qpos, qvel)  # at rest: the velocity after one zero-action step is close to 0
    _, reward, _, _, info = env.step(np.zeros(6, np.float32))
    assert reward == pytest.approx(-abs(info["x_velocity"] - 0.225))
    assert abs(info["x_velocity"]) < 0.2
    a = np.ones(6, np.float32)
    _, reward, _, _, info = env.step(a)
    assert reward == pytest.approx(-abs(info["x_velocity"] - 0.225) - 0.05 * 6)


def test_ant_dir_reward_and_termination():
    env = gym.make("promptrl/AntDir-v0", task=0).unwrapped
    env.reset(seed=0)
    a = np.full(8, 0.3, np.float32)
    _, reward, terminated, _, info = env.step(a)
    g = env.goal[0]
    direction = np.cos(g) * info["x_velocity"] + np.sin(g) * info["y_velocity"]
    ctrl = 0.5 * np.sum(a**2)
    assert info["reward_ctrl"] == pytest.approx(-ctrl)
    assert reward == pytest.approx(direction - ctrl + info["reward_contact"] + 1.0)
    assert not terminated
    qpos = env.init_qpos.copy()
    qpos[2] = 1.5  # torso above 1.0: unhealthy
    env.set_state(qpos, env.init_qvel.copy())
    _, _, terminated, _, _ = env.step(np.zeros(8, np.float32))
    assert terminated
    assert env.observation_space.shape == (27,)


def test_metaworld_goal_hidden_and_fixed():
    env = gym.make("promptrl/MetaWorldReach-v0", task=6)
    obs, info = env.reset(seed=0)
    assert obs.shape == (39,)
    np.testing.assert_array_equal(obs[-3:], 0.0)
    np.testing.assert_allclose(env.unwrapped.target_position, info["goal"][3:])


def test_bad_task_index():
    with pytest.raises(ValueError, match=r"task must be an integer in \[0, 1\]"):
        gym.make("promptrl/CheetahDir-v0", task=2)
