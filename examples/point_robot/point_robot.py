"""A point robot that must reach a goal it never observes: the env family and scripted expert of the
``point-robot.json`` suite spec (the "Bring your own tasks" tutorial)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np


class PointRobotEnv(gym.Env):
    """A point in the plane, moved by actions in [-1, 1]^2 scaled by 0.1 a step; reward: minus the
    distance to the hidden ``goal``. Observation: the position (2 numbers)."""

    def __init__(self, goal: Sequence[float] = (1.0, 0.0)):
        self.set_goal(goal)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def set_goal(self, goal: Sequence[float]) -> None:
        """Move the goal (``promptrl train expert`` draws a new one every episode)."""
        self.goal = np.asarray(goal, dtype=np.float64)

    def get_state(self) -> dict[str, np.ndarray]:
        """The state ``promptrl train expert`` checkpoints (so a resumed run repeats an uninterrupted one)."""
        return {"position": self.position.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`get_state` returned."""
        self.position = np.asarray(state["position"], dtype=np.float64).copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-0.1, 0.1, 2)
        return self.position.copy(), {"goal": self.goal.copy()}

    def step(self, action):
        self.position = self.position + 0.1 * np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        reward = -float(np.linalg.norm(self.position - self.goal))
        return self.position.copy(), reward, False, False, {"goal": self.goal.copy()}


def toward_goal(goal: Sequence[float], gain: float = 10.0) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted expert of one task: head for the goal it is handed, braking on arrival."""
    target = np.asarray(goal, dtype=np.float64)

    def act(position: np.ndarray) -> np.ndarray:
        return np.clip(gain * (target - position), -1.0, 1.0)

    return act
