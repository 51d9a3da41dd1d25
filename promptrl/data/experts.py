"""Task-conditioned experts that produce the expert / medium / random datasets.

A suite spec's ``expert`` names the policy: ``"sac"``, a goal-conditioned SAC actor trained by
``promptrl train expert`` (the MuJoCo suites' are shipped as safetensors in
``promptrl/data/expert_weights/``), or ``"scripted"``, a factory ``factory(goal, **kwargs)`` returning
a function from an observation to an action (the Meta-World suites use :func:`metaworld_policy`,
Meta-World's own scripted policies handed the true goal). Every expert has Stable-Baselines3's
``predict(obs, deterministic=True) -> (action, None)``.

>>> import numpy as np
>>> from promptrl import load_suite
>>> expert = load_suite("cheetah-vel").expert(task=2)
>>> action, _ = expert.predict(np.zeros(17))
>>> action.shape
(6,)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open
from torch import nn

from promptrl.common.files import atomic_file
from promptrl.tasks.spec import ExpertSpec, SuiteSpec, import_entry_point

EXPERT_DIR = Path(__file__).parent / "expert_weights"
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def metaworld_policy(goal: Any, policy: str) -> Callable[[np.ndarray], np.ndarray]:
    """Meta-World's scripted ``policy`` (a class name of ``metaworld.policies``, e.g.
    ``"SawyerPushV3Policy"``) for one task vector ``goal`` (object position, then goal position).

    Meta-World's policies read the goal from the observation's last three entries, which ML1 hides;
    the returned function hands them the goal position (the task vector's last three numbers).
    """
    import metaworld.policies

    if not hasattr(metaworld.policies, policy):
        raise ValueError(f"policy must be a class of metaworld.policies such as 'SawyerPushV3Policy', got {policy!r}")
    scripted = getattr(metaworld.policies, policy)()
    target = np.asarray(goal, dtype=np.float64)[-3:]

    def act(obs: np.ndarray) -> np.ndarray:
        full = np.array(obs, dtype=np.float64)
        full[-3:] = target
        return scripted.get_action(full)

    return act


def policy_input(features: str, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """What a goal-conditioned SAC expert sees: ``(n, obs_dim)`` observations and their goals -> ``(n, in_dim)``.

    ``features="goal"``: the observation and the goal (the Cheetah experts: direction or velocity).
    ``features="ant-frame"``: the Ant observation expressed in the goal's frame instead: the torso orientation and the planar
    velocity are rotated by minus the goal angle. Ant dynamics are invariant under rotations about
    the vertical axis, so walking in direction g is, in that frame, walking along +x: one policy
    learns every direction at once.
    """
    obs = np.asarray(obs, dtype=np.float64).reshape(-1, np.shape(obs)[-1])
    goal = np.broadcast_to(np.asarray(goal, dtype=np.float64), (len(obs), np.shape(goal)[-1]))
    if features == "goal":
        return np.concatenate([obs, goal], axis=1).astype(np.float32)
    angle = goal[:, 0]
    c, s = np.cos(angle), np.sin(angle)
    out = obs.copy()
    # Torso quaternion (w, x, y, z) at obs[1:5]: left-multiply by the rotation of -angle about z.
    hw, hz = np.cos(-angle / 2), np.sin(-angle / 2)
    w, x, y, z = obs[:, 1], obs[:, 2], obs[:, 3], obs[:, 4]
    out[:, 1], out[:, 2], out[:, 3], out[:, 4] = hw * w - hz * z, hw * x - hz * y, hw * y + hz * x, hw * z + hz * w
    # World-frame linear velocity (vx, vy) at obs[13:15]: rotate by -angle. Angular velocity is in the body frame.
    vx, vy = obs[:, 13], obs[:, 14]
    out[:, 13], out[:, 14] = c * vx + s * vy, -s * vx + c * vy
    return out.astype(np.float32)


def goal_dim(spec: SuiteSpec) -> int:
    """How many inputs the suite's SAC expert has beyond the observation."""
    return 0 if spec.expert is not None and spec.expert.features == "ant-frame" else len(spec.tasks[0])


class Actor(nn.Module):
    """Tanh-Gaussian MLP policy over ``[observation, goal features]``."""

    def __init__(self, in_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized action sample and its log-probability (with the tanh correction)."""
        mean, log_std = self(x)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        pre = mean + std * noise
        action = torch.tanh(pre)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        log_prob = log_prob - (2 * (np.log(2) - pre - nn.functional.softplus(-2 * pre))).sum(-1)
        return action, log_prob

    def act(self, x: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        if deterministic:
            return torch.tanh(self(x)[0])
        return self.sample(x, generator)[0]


def save_actor(actor: Actor, path: Path, metadata: dict[str, Any]) -> None:
    """Write actor weights and their metadata to a safetensors file atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}
    with atomic_file(path) as tmp:
        save_file(state, str(tmp), metadata={"promptrl": json.dumps(metadata)})


def load_actor(path: Path) -> tuple[Actor, dict[str, Any]]:
    """Read an actor written by :func:`save_actor`; raises ``ValueError`` on a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expert weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["promptrl"])
        state = load_file(str(path))
        actor = Actor(meta["in_dim"], meta["act_dim"], meta["hidden"])
        actor.load_state_dict(state)
    except Exception as err:  # safetensors raises several error types for truncated/corrupt files
        raise ValueError(f"corrupt expert weights file {path}: {err}") from err
    return actor.eval(), meta


class Expert:
    """A goal-conditioned policy bound to one task, with SB3's ``predict`` signature.

    :param actor: the trained SAC actor, or ``None`` for the spec's scripted policy.
    :param spec: the suite spec.
    :param task: the task id whose goal the expert is handed.
    :param noise: std of Gaussian noise added to every action (0 for the expert itself).
    :param seed: seeds the stochastic actions.
    """

    def __init__(self, actor: Actor | None, spec: SuiteSpec, task: int, noise: float = 0.0, seed: int | None = None):
        self.actor, self.spec, self.task, self.noise = actor, spec, task, noise
        self.goal = np.asarray(spec.tasks[task], dtype=np.float64)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        if actor is None:
            expert = _expert_spec(spec, "scripted")
            factory = import_entry_point(expert.entry_point, spec.source)
            self._scripted = factory(self.goal.copy(), **expert.kwargs)

    def __repr__(self) -> str:
        kind = "scripted" if self.actor is None else "sac"
        return f"Expert({self.spec.name!r}, task={self.task}, kind={kind!r}, noise={self.noise})"

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        """Action(s) for one observation ``(obs_dim,)`` or a batch ``(n, obs_dim)``, clipped to [-1, 1]."""
        obs = np.asarray(observation, dtype=np.float64)
        if obs.shape[-1] != self.spec.obs_dim or obs.ndim not in (1, 2):
            raise ValueError(
                f"observation must have shape ({self.spec.obs_dim},) or (n, {self.spec.obs_dim}), got {obs.shape}"
            )
        batch = obs.reshape(-1, self.spec.obs_dim)
        if self.actor is None:
            action = np.stack([np.asarray(self._scripted(o), dtype=np.float64).reshape(-1) for o in batch])
            if action.shape[1] != self.spec.act_dim:
                raise ValueError(
                    f"the scripted expert {self.spec.expert.entry_point!r} returned actions of size {action.shape[1]}, "
                    f"the suite's act_dim is {self.spec.act_dim}"
                )
        else:
            x = torch.as_tensor(policy_input(self.spec.expert.features, batch, self.goal))
            with torch.no_grad():
                action = self.actor.act(x, deterministic, self.generator).numpy().astype(np.float64)
        if self.noise > 0:
            action = action + self.noise * self.rng.standard_normal(action.shape)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        return (action if obs.ndim == 2 else action[0]), None


def _expert_spec(spec: SuiteSpec, policy: str | None = None) -> ExpertSpec:
    """The suite's expert spec (of kind ``policy`` when given), or a ``ValueError`` saying what is missing."""
    if spec.expert is None:
        raise ValueError(
            f"suite {spec.name!r} has no expert in its spec: its datasets must exist already "
            f"(e.g. {spec.task_dataset_id(spec.test_tasks[0], 'expert')!r})"
        )
    if policy is not None and spec.expert.policy != policy:
        raise ValueError(f"suite {spec.name!r} has a {spec.expert.policy!r} expert, not a {policy!r} one")
    return spec.expert


def expert_path(spec: SuiteSpec, medium: bool = False) -> Path:
    """The SAC expert's weights file (``-medium`` for the medium policy): a shipped expert's name, or a
    ``.safetensors`` path relative to the spec file."""
    weights = _expert_spec(spec, "sac").weights
    if weights.endswith(".safetensors"):
        base = Path(weights) if spec.source is None else spec.source.parent / weights
        return base.with_name(f"{base.stem}{'-medium' if medium else ''}.safetensors")
    return EXPERT_DIR / f"{weights}{'-medium' if medium else ''}.safetensors"


def load_expert(spec: SuiteSpec, task: int, quality: str = "expert", seed: int | None = None) -> Expert:
    """The policy behind a dataset quality: ``"expert"``, ``"medium"`` (an earlier training checkpoint,
    or for a scripted expert, the expert with the spec's action noise). ``"random"`` is not a policy."""
    if quality not in ("expert", "medium"):
        raise ValueError(f"quality must be 'expert' or 'medium' for a policy, got {quality!r}")
    expert = _expert_spec(spec)
    if expert.policy == "scripted":
        return Expert(None, spec, task, noise=expert.medium_noise if quality == "medium" else 0.0, seed=seed)
    path = expert_path(spec, medium=quality == "medium")
    if not path.is_file():
        raise FileNotFoundError(
            f"no {quality} weights for suite {spec.name!r} at {path.name}; train them with "
            f"`promptrl train expert {spec.ref}`"
        )
    actor, meta = load_actor(path)
    expected = spec.obs_dim + goal_dim(spec)
    if meta["in_dim"] != expected:
        raise ValueError(
            f"{path.name} takes {meta['in_dim']} inputs, the {spec.name!r} expert needs {expected}: retrain or re-export it"
        )
    return Expert(actor, spec, task, seed=seed)
