"""Gymnasium environments of the task families, registered on ``import promptrl``.

Each env takes ``task=<index>`` into its suite spec (``promptrl/tasks/specs/<suite>.json``); the goal of the task is
reported in ``info["goal"]`` (for experts and analysis) and never appears in the observation.

>>> import gymnasium as gym, promptrl
>>> env = gym.make("promptrl/CheetahVel-v0", task=2)
>>> obs, info = env.reset(seed=0)
>>> obs.shape, round(float(info["goal"][0]), 3)
((17,), 0.225)
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from promptrl.tasks.spec import load_spec

CHEETAH_CTRL_COST = 0.05
ANT_CTRL_COST = 0.5


class _TaskMixin:
    """Holds the task index and goal of a suite, and reports them in ``info``."""

    suite: str

    def _set_task(self, task: int | None, goal: Any | None) -> None:
        tasks = load_spec(self.suite).tasks
        if goal is not None:
            self.task, self.goal = -1, np.asarray(goal, dtype=np.float64).reshape(-1)
            return
        if task is None:
            task = 0
        if not isinstance(task, (int, np.integer)) or not 0 <= task < len(tasks):
            raise ValueError(f"task must be an integer in [0, {len(tasks) - 1}] for suite {self.suite!r}, got {task!r}")
        self.task, self.goal = int(task), np.asarray(tasks[task], dtype=np.float64)

    def set_goal(self, goal: Any) -> None:
        """Switch to an arbitrary goal (used to train goal-conditioned experts); effective immediately."""
        self._set_task(None, goal)

    def _task_info(self) -> dict[str, Any]:
        return {"task": self.task, "goal": self.goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)  # type: ignore[misc]
        return obs, {**info, **self._task_info()}


class CheetahDirEnv(_TaskMixin, HalfCheetahEnv):
    """HalfCheetah rewarded for speed along a direction d in {+1, -1}: ``d * v_x - 0.05 |a|^2``."""

    suite = "cheetah-dir"

    def __init__(self, task: int | None = 0, goal: Any | None = None, **kwargs: Any):
        self._set_task(task, goal)
        super().__init__(**kwargs)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        ctrl = CHEETAH_CTRL_COST * float(np.sum(np.square(action)))
        reward = float(self.goal[0] * info["x_velocity"]) - ctrl
        return obs, reward, terminated, truncated, {**info, **self._task_info()}


class CheetahVelEnv(CheetahDirEnv):
    """HalfCheetah tracking a target velocity: ``-|v_x - v_goal| - 0.05 |a|^2``."""

    suite = "cheetah-vel"

    def step(self, action):
        obs, _, terminated, truncated, info = HalfCheetahEnv.step(self, action)
        ctrl = CHEETAH_CTRL_COST * float(np.sum(np.square(action)))
        reward = -abs(float(info["x_velocity"]) - float(self.goal[0])) - ctrl
        return obs, reward, terminated, truncated, {**info, **self._task_info()}


class AntDirEnv(_TaskMixin, AntEnv):
    """Ant rewarded for velocity along a planar direction (goal = angle in radians).

    ``reward = v_xy . (cos g, sin g) - 0.5 |a|^2 - contact cost + 1``; terminates when the torso height
    leaves [0.2, 1.0]. Observation: the 27-dim Ant observation (no contact forces, no x/y position).
    """

    suite = "ant-dir"

    def __init__(self, task: int | None = 0, goal: Any | None = None, **kwargs: Any):
        self._set_task(task, goal)
        kwargs.setdefault("include_cfrc_ext_in_observation", False)
        kwargs.setdefault("ctrl_cost_weight", ANT_CTRL_COST)
        super().__init__(**kwargs)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        direction = np.array([np.cos(self.goal[0]), np.sin(self.goal[0])])
        velocity = float(direction @ np.array([info["x_velocity"], info["y_velocity"]]))
        reward = velocity + info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]
        return obs, float(reward), terminated, truncated, {**info, "reward_direction": velocity, **self._task_info()}


class MetaWorldEnv(gym.Env):
    """Any Meta-World v3 task (``env_name``, an ML1 name such as ``"push-v3"``) with one fixed, hidden goal.

    ``goal`` is Meta-World's task vector: the object's position followed by the goal position (6
    numbers for reach, push and pick-place); None takes the middle of ML1's range. The observation is Meta-World's 39-dim one whose last
    three entries (the goal) are zero, as in Meta-World's ML1 benchmark; ``info["goal"]`` holds it.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, env_name: str = "reach-v3", goal: Any = None, task: int = -1):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if env_name not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"env_name must be a Meta-World v3 task such as 'push-v3', got {env_name!r}")
        self._sawyer = ALL_V3_ENVIRONMENTS[env_name]()
        self._sawyer._set_task_called = True
        self._sawyer._partially_observable = True
        self.env_name, self.task = env_name, int(task)
        space = self._sawyer._random_reset_space
        self.set_goal((space.low + space.high) / 2 if goal is None else goal)  # no goal: the middle of ML1's range
        self.observation_space = self._sawyer.observation_space
        self.action_space = self._sawyer.action_space

    def set_goal(self, goal: Any) -> None:
        """Switch to another task vector; effective at the next reset."""
        goal = np.asarray(goal, dtype=np.float64).reshape(-1)
        if goal.shape != self._sawyer._random_reset_space.shape:
            raise ValueError(
                f"goal must have {self._sawyer._random_reset_space.shape[0]} numbers for {self.env_name!r}, got {goal.shape}"
            )
        self.goal = goal
        self._sawyer._freeze_rand_vec = True
        self._sawyer._last_rand_vec = goal.copy()

    @property
    def target_position(self) -> np.ndarray:
        """The goal position of the current episode (what Meta-World's scripted policies need)."""
        return np.asarray(self._sawyer._target_pos, dtype=np.float64).copy()

    def _task_info(self) -> dict[str, Any]:
        return {"task": self.task, "goal": self.goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        gym.Env.reset(self, seed=seed)
        if seed is not None:
            self._sawyer.seed(seed)
        obs, info = self._sawyer.reset()
        return obs, {**info, **self._task_info()}

    def step(self, action):
        if self._sawyer.curr_path_length >= self._sawyer.max_path_length:
            raise RuntimeError("episode is over (Meta-World's 500-step limit): call reset()")
        obs, reward, terminated, _, info = self._sawyer.step(np.asarray(action, dtype=np.float64))
        return obs, float(reward), bool(terminated), False, {**info, **self._task_info()}

    def close(self) -> None:
        self._sawyer.close()


class MetaWorldReachEnv(_TaskMixin, MetaWorldEnv):
    """Meta-World reach-v3 with one of the ``mw-reach`` suite's fixed puck/goal positions (by task id)."""

    suite = "mw-reach"

    def __init__(self, task: int | None = 0, goal: Any | None = None):
        self._set_task(task, goal)
        MetaWorldEnv.__init__(self, "reach-v3", self.goal, self.task)

    def set_goal(self, goal: Any) -> None:
        MetaWorldEnv.set_goal(self, goal)

    reset = MetaWorldEnv.reset
    _task_info = MetaWorldEnv._task_info


ENV_CLASSES: dict[str, type[gym.Env]] = {
    "promptrl/CheetahDir-v0": CheetahDirEnv,
    "promptrl/CheetahVel-v0": CheetahVelEnv,
    "promptrl/AntDir-v0": AntDirEnv,
    "promptrl/MetaWorldReach-v0": MetaWorldReachEnv,
    "promptrl/MetaWorld-v0": MetaWorldEnv,
}
_HORIZON_SUITE = {
    "promptrl/CheetahDir-v0": "cheetah-dir",
    "promptrl/CheetahVel-v0": "cheetah-vel",
    "promptrl/AntDir-v0": "ant-dir",
    "promptrl/MetaWorldReach-v0": "mw-reach",
}


def register_envs() -> None:
    """Register every promptrl env id with Gymnasium (idempotent). A suite's envs get its horizon as
    their time limit (``SuiteSpec.make_env``); the ids of the built-in suites carry it too."""
    for env_id, cls in ENV_CLASSES.items():
        if env_id not in gym.registry:
            suite = _HORIZON_SUITE.get(env_id)
            gym.register(
                id=env_id,
                entry_point=f"{cls.__module__}:{cls.__name__}",
                max_episode_steps=None if suite is None else load_spec(suite).horizon,
            )
