"""Training of the goal-conditioned SAC experts (Haarnoja et al. 2018, with automatic entropy tuning).

Goals are resampled at every episode (continuously, not only the suite's fixed tasks) so that one
actor serves every task of a suite. Several envs step between gradient updates: simulation is cheap
next to an update on a CPU, and fresher data per update helps. Training checkpoints atomically
(safetensors for networks and optimizer moments, ``.npy`` for the replay buffer, JSON for progress),
resumes from the last checkpoint (which holds everything the rest of the run depends on: networks,
optimizers, replay buffer, the numpy and torch random states and the envs' simulator states, so that a
run killed at any point and resumed ends bit for bit as one that never stopped, on a CPU), logs to ``progress.csv`` and keeps the best actor by evaluation
return over all of the suite's tasks, plus a snapshot per evaluation (the medium policy is picked
from those).

Run it as ``promptrl train expert <suite>``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from promptrl.common.files import atomic_folder, latest_folder, load_optimizer_tensors, optimizer_tensors
from promptrl.data.experts import Actor, goal_dim, policy_input, save_actor
from promptrl.tasks.spec import SuiteSpec, load_spec

log = logging.getLogger(__name__)


@dataclass
class SACConfig:
    """Hyperparameters of expert training."""

    total_updates: int = 1_000_000
    """Gradient updates to run in total (training resumes until this many are done)."""
    n_envs: int = 4
    """Envs stepped (one step each) between two gradient updates."""
    batch_size: int = 256
    """Replay minibatch size."""
    hidden: int = 256
    """Width of the two hidden layers of actor and critics."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics and temperature."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    learning_starts: int = 10_000
    """Env steps of uniform random actions before learning starts."""
    eval_every: int = 10_000
    """Updates between evaluations (one deterministic episode on every task of the suite)."""
    checkpoint_minutes: float = 5.0
    """Wall-clock minutes between training checkpoints."""
    seed: int = 0
    """Seeds envs, goals, networks and sampling."""


def sample_goal(spec: SuiteSpec, rng: np.random.Generator) -> np.ndarray:
    """A training goal drawn as the spec's ``expert.goal_sampling`` says: uniform in a box, or one of a list."""
    sampling = spec.expert.goal_sampling
    if "uniform" in sampling:
        low, high = sampling["uniform"]
        return rng.uniform(np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64))
    goals = np.asarray(sampling["choice"], dtype=np.float64)
    return goals[rng.integers(len(goals))].copy()


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied as one batched matmul: (n, B, in) -> (n, B, out)."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1 / np.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class TwinCritic(nn.Module):
    """Two Q-networks evaluated together; returns (2, B)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            EnsembleLinear(2, in_dim, hidden),
            nn.ReLU(),
            EnsembleLinear(2, hidden, hidden),
            nn.ReLU(),
            EnsembleLinear(2, hidden, 1),
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], -1).unsqueeze(0).expand(2, -1, -1)  # (2, B, in)
        return self.net(x).squeeze(-1)  # (2, B)


class ReplayBuffer:
    """Flat float32 arrays; saved and loaded as plain ``.npy`` files (no pickle)."""

    FIELDS = ("obs", "action", "reward", "next_obs", "done")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.done = np.zeros(capacity, np.float32)

    def add(self, obs, action, reward, next_obs, done) -> None:
        n = len(obs)
        idx = (self.pos + np.arange(n)) % self.capacity
        for name, value in zip(self.FIELDS, (obs, action, reward, next_obs, done)):
            getattr(self, name)[idx] = value
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> list[torch.Tensor]:
        idx = rng.integers(0, self.size, batch)
        return [torch.from_numpy(getattr(self, name)[idx]) for name in self.FIELDS]

    def save(self, folder: Path) -> None:
        for name in self.FIELDS:
            np.save(folder / f"{name}.npy", getattr(self, name)[: self.size])

    def load(self, folder: Path, size: int, pos: int) -> None:
        for name in self.FIELDS:
            getattr(self, name)[:size] = np.load(folder / f"{name}.npy", allow_pickle=False)
        self.size, self.pos = size, pos


class SACTrainer:
    """Goal-conditioned SAC on one suite; ``run()`` trains until ``total_updates``, resuming from ``out_dir``."""

    def __init__(self, suite: str | Path, out_dir: Path, config: SACConfig | None = None):
        self.spec = load_spec(suite)
        if self.spec.expert is None or self.spec.expert.policy != "sac":
            kind = "no expert" if self.spec.expert is None else f"a {self.spec.expert.policy!r} expert"
            raise ValueError(f"suite {self.spec.name!r} has {kind} in its spec; only a 'sac' expert is trained")
        self.cfg = config or SACConfig()
        self.out = Path(out_dir)
        (self.out / "snapshots").mkdir(parents=True, exist_ok=True)
        torch.manual_seed(self.cfg.seed)
        self.rng = np.random.default_rng(self.cfg.seed)
        self.in_dim = self.spec.obs_dim + goal_dim(self.spec)
        act = self.spec.act_dim
        self.actor = Actor(self.in_dim, act, self.cfg.hidden)
        self.critic = TwinCritic(self.in_dim + act, self.cfg.hidden)
        self.target = TwinCritic(self.in_dim + act, self.cfg.hidden)
        self.target.load_state_dict(self.critic.state_dict())
        self.target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(1))
        self.opt = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=self.cfg.lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=self.cfg.lr),
        }
        self.target_entropy = -float(act)
        self.buffer = ReplayBuffer(self.cfg.buffer_size, self.in_dim, act)
        self.updates, self.env_steps, self.best = 0, 0, -np.inf
        self.envs = [self.spec.make_env(0) for _ in range(self.cfg.n_envs)]
        if not hasattr(self.envs[0].unwrapped, "set_goal"):
            raise ValueError(
                f"suite {self.spec.name!r}: training an expert needs envs with set_goal(goal) (goals change every "
                f"episode); {type(self.envs[0].unwrapped).__name__} has none"
            )
        self._obs: np.ndarray | None = None  # the envs' current observations (with goals), once started

    # ----------------------------------------------------------------------------- checkpoints
    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "target": self.target}

    def save_checkpoint(self) -> None:
        with atomic_folder(self.out / "checkpoint") as tmp:
            tensors = {
                f"{m}.{k}": v.contiguous() for m, mod in self._modules().items() for k, v in mod.state_dict().items()
            }
            tensors["log_alpha"] = self.log_alpha.detach().clone()
            for name, opt in self.opt.items():
                tensors.update(optimizer_tensors(opt, f"opt.{name}"))
            tensors["rng.torch"] = torch.get_rng_state()
            envs = []
            if self._obs is not None:
                tensors["env.obs"] = torch.from_numpy(self._obs.copy())
                for i, env in enumerate(self.envs):
                    sim, elapsed = _env_state(env)
                    tensors.update({f"env.{i}.{k}": torch.from_numpy(v) for k, v in sim.items()})
                    envs.append({"elapsed_steps": elapsed, "goal": env.unwrapped.goal.tolist()})
            save_file(tensors, str(tmp / "state.safetensors"))
            self.buffer.save(tmp)
            progress = {
                "updates": self.updates,
                "env_steps": self.env_steps,
                "best": self.best,
                "buffer_size": self.buffer.size,
                "buffer_pos": self.buffer.pos,
                "rng": self.rng.bit_generator.state,
                "envs": envs,
                "config": asdict(self.cfg),
            }
            (tmp / "progress.json").write_text(json.dumps(progress))

    def load_checkpoint(self) -> bool:
        folder = latest_folder(self.out / "checkpoint", "progress.json")
        if folder is None:
            return False
        progress = json.loads((folder / "progress.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"))
        for m, mod in self._modules().items():
            mod.load_state_dict({k[len(m) + 1 :]: v for k, v in tensors.items() if k.startswith(m + ".")})
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"])
        for name, opt in self.opt.items():
            load_optimizer_tensors(opt, tensors, f"opt.{name}")
        self.buffer.load(folder, progress["buffer_size"], progress["buffer_pos"])
        self.updates, self.env_steps, self.best = progress["updates"], progress["env_steps"], progress["best"]
        self.rng.bit_generator.state = progress["rng"]
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
        if progress.get("envs") and len(progress["envs"]) == len(self.envs):
            for i, (env, saved) in enumerate(zip(self.envs, progress["envs"])):
                env.reset(seed=0)  # starts the wrappers; the simulator state is then overwritten
                env.unwrapped.set_goal(np.asarray(saved["goal"]))
                prefix = f"env.{i}."
                sim = {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
                _set_env_state(env, sim, saved["elapsed_steps"])
            self._obs = tensors["env.obs"].numpy().copy()
            if not any(k.startswith("env.0.") for k in tensors):  # an env without saved state: new episodes
                log.warning("the envs have no get_state() or MuJoCo state: the resumed run starts new episodes")
                self._obs = None
        log.info("resumed from %s at %d updates", folder, self.updates)
        return True

    # ----------------------------------------------------------------------------- learning
    def update(self) -> dict[str, float]:
        obs, action, reward, next_obs, done = self.buffer.sample(self.cfg.batch_size, self.rng)
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_logp = self.actor.sample(next_obs)
            q_next = self.target(next_obs, next_action).min(0).values - alpha * next_logp
            y = reward + self.cfg.gamma * (1 - done) * q_next
        q = self.critic(obs, action)
        critic_loss = (q - y).pow(2).mean(1).sum()
        self.opt["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        self.opt["critic"].step()

        pi, logp = self.actor.sample(obs)
        self.critic.requires_grad_(False)
        actor_loss = (alpha * logp - self.critic(obs, pi).min(0).values).mean()
        self.critic.requires_grad_(True)
        self.opt["actor"].zero_grad(set_to_none=True)
        actor_loss.backward()
        self.opt["actor"].step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.opt["alpha"].zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.opt["alpha"].step()

        with torch.no_grad():
            tp, cp = list(self.target.parameters()), list(self.critic.parameters())
            torch._foreach_lerp_(tp, cp, self.cfg.tau)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "alpha": alpha.item()}

    def _obs_with_goal(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        return policy_input(self.spec.expert.features, obs, env.unwrapped.goal)[0]

    def _reset(self, env: gym.Env) -> np.ndarray:
        env.unwrapped.set_goal(sample_goal(self.spec, self.rng))
        obs, _ = env.reset(seed=int(self.rng.integers(2**31)))
        return self._obs_with_goal(obs, env)

    def evaluate(self) -> tuple[float, float, list[float]]:
        """One deterministic episode on every task; returns (mean over all, mean over test, per task)."""
        per_task = evaluate_actor(self.spec, self.actor, episodes=1, seed=self.cfg.seed + 10_000)
        return float(per_task.mean()), float(per_task[self.spec.test_tasks].mean()), per_task.tolist()

    def run(self) -> None:
        cfg = self.cfg
        self.load_checkpoint()
        if self._obs is None:
            self._obs = np.stack([self._reset(e) for e in self.envs])
        obs = self._obs
        log_path = self.out / "progress.csv"
        new_log = not log_path.exists()
        with open(log_path, "a", newline="") as f:
            writer = csv.writer(f)
            if new_log:
                writer.writerow(["updates", "env_steps", "minutes", "eval_all", "eval_test", "alpha", "critic_loss"])
            start, last_ckpt, stats = time.time(), time.time(), {"alpha": 1.0, "critic_loss": float("nan")}
            while self.updates < cfg.total_updates:
                if self.env_steps < cfg.learning_starts:
                    low, high = self.envs[0].action_space.low, self.envs[0].action_space.high
                    action = self.rng.uniform(low, high, (len(self.envs), *low.shape)).astype(np.float32)
                else:
                    with torch.no_grad():
                        action = self.actor.act(torch.from_numpy(obs), deterministic=False).numpy()
                for i, env in enumerate(self.envs):
                    next_o, r, term, trunc, _ = env.step(action[i])
                    next_o = self._obs_with_goal(next_o, env)
                    self.buffer.add(obs[i : i + 1], action[i : i + 1], [r], next_o[None], [float(term)])
                    obs[i] = self._reset(env) if (term or trunc) else next_o
                self.env_steps += len(self.envs)
                if self.env_steps < cfg.learning_starts:
                    continue
                stats = self.update()
                self.updates += 1
                if self.updates % cfg.eval_every == 0:
                    all_ret, test_ret, per_task = self.evaluate()
                    minutes = (time.time() - start) / 60
                    writer.writerow(
                        [
                            self.updates,
                            self.env_steps,
                            f"{minutes:.1f}",
                            f"{all_ret:.1f}",
                            f"{test_ret:.1f}",
                            f"{stats['alpha']:.4f}",
                            f"{stats['critic_loss']:.3f}",
                        ]
                    )
                    f.flush()
                    meta = {
                        "suite": self.spec.name,
                        "in_dim": self.in_dim,
                        "act_dim": self.spec.act_dim,
                        "hidden": cfg.hidden,
                        "updates": self.updates,
                        "env_steps": self.env_steps,
                        "eval_all": all_ret,
                        "eval_test": test_ret,
                    }
                    save_actor(self.actor, self.out / "snapshots" / f"updates{self.updates:08d}.safetensors", meta)
                    if all_ret > self.best:
                        self.best = all_ret
                        save_actor(self.actor, self.out / "best.safetensors", meta)
                    log.info(
                        "updates %d env steps %d eval all %.1f test %.1f",
                        self.updates,
                        self.env_steps,
                        all_ret,
                        test_ret,
                    )
                if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    last_ckpt = time.time()
        self.save_checkpoint()


def _env_state(env: gym.Env) -> tuple[dict[str, np.ndarray], int]:
    """An env's state as arrays, and the steps its time limit has counted: ``env.unwrapped.get_state()``
    where the env defines it (a dict of arrays), else a MuJoCo env's simulator arrays (``MjData``'s
    writable arrays, so that stepping on from a copy is bit-identical; without the constraint solver's
    per-step scratch, ``efc_*`` and the island lists). An env with neither saves no state: a resumed
    run starts its episodes afresh (and repeats the uninterrupted run only from there)."""
    steps = int(getattr(env, "_elapsed_steps", 0) or 0)
    if hasattr(env.unwrapped, "get_state"):
        return {k: np.ascontiguousarray(v).copy() for k, v in env.unwrapped.get_state().items()}, steps
    data = getattr(env.unwrapped, "data", None)
    if data is None:
        return {}, steps
    arrays = {}
    for name in dir(data):
        if name.startswith(("_", "efc_")) or "island" in name:
            continue
        value = getattr(data, name, None)
        if isinstance(value, np.ndarray) and value.flags.writeable and value.size:
            arrays[name] = np.ascontiguousarray(value).copy()
    return arrays, steps


def _set_env_state(env: gym.Env, arrays: dict[str, np.ndarray], elapsed_steps: int) -> None:
    """Put what :func:`_env_state` returned back into ``env`` (arrays whose size depends on the contacts of
    the moment, when it differs, are left: the next step recomputes them)."""
    if hasattr(env.unwrapped, "get_state"):  # the env's own state protocol (MuJoCo envs have set_state only)
        env.unwrapped.set_state(arrays)
        arrays = {}
    data = getattr(env.unwrapped, "data", None)
    for name, value in arrays.items():
        target = getattr(data, name, None)
        if isinstance(target, np.ndarray) and target.shape == value.shape:
            target[...] = value
    if hasattr(env, "_elapsed_steps"):
        env._elapsed_steps = elapsed_steps


def evaluate_actor(spec: SuiteSpec, actor: Actor, episodes: int = 1, seed: int = 0) -> np.ndarray:
    """Mean deterministic return of ``actor`` on every task of the suite (all episodes run batched)."""
    n = len(spec.tasks)
    tasks = np.repeat(np.arange(n), episodes)
    envs = gym.vector.SyncVectorEnv(
        [lambda t=t: spec.make_env(int(t)) for t in tasks],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    obs, _ = envs.reset(seed=[int(s) for s in np.random.SeedSequence(seed).generate_state(len(tasks))])
    goals = np.asarray(spec.tasks)[tasks]
    returns, alive = np.zeros(len(tasks)), np.ones(len(tasks), bool)
    while alive.any():
        with torch.no_grad():
            action = actor.act(
                torch.as_tensor(policy_input(spec.expert.features, obs, goals)), deterministic=True
            ).numpy()
        obs, reward, term, trunc, _ = envs.step(action)
        returns += reward * alive
        alive &= ~(term | trunc)
    envs.close()
    return returns.reshape(n, episodes).mean(1)


def random_returns(suite: str | Path, episodes: int = 3, seed: int = 0) -> np.ndarray:
    """Mean return of uniform random actions on every task of a suite."""
    from promptrl.data.rollouts import RandomPolicy, rollout
    from promptrl.suites import load_suite

    s = load_suite(suite)
    return np.array(
        [
            np.mean(
                [
                    e.episode_return
                    for e in rollout(s, t, RandomPolicy(s.make_env(t).action_space, seed + t), episodes, seed=seed + t)
                ]
            )
            for t in s.split("all")
        ]
    )


def export_expert(
    suite: str | Path, run_dir: Path, dest_dir: Path | None = None, candidates: int = 5, episodes: int = 3
) -> dict[str, Path]:
    """Write a run's expert and medium policies where the spec's ``expert.weights`` points (the
    package's expert folder for a shipped name), or into ``dest_dir``.

    The expert is the best of the ``candidates`` snapshots with the highest training evaluation on
    the selection tasks, re-evaluated with ``episodes`` episodes on every task (one training
    evaluation episode is noisy) and picked by its mean return on the selection tasks: the tasks
    outside the test split (every task when all are test tasks, as cheetah-dir's two), so the test
    tasks choose nothing. The medium policy is the snapshot whose per-task returns are closest (mean
    absolute deviation, relative to the random-to-expert span of each task) to halfway between random
    and the expert, over every task: it is a data-quality target per task, not a choice of the best.
    """
    from promptrl.data.experts import expert_path, load_actor

    spec = load_spec(suite)
    run_dir = Path(run_dir)
    snapshots = [load_actor(p) for p in sorted((run_dir / "snapshots").glob("*.safetensors"))]
    if not snapshots:
        raise FileNotFoundError(f"no snapshots in {run_dir}: train first with `promptrl train expert {spec.ref}`")
    test = set(spec.test_tasks)
    selection = [t for t in range(len(spec.tasks)) if t not in test] or list(range(len(spec.tasks)))
    n_all, n_test = len(spec.tasks), len(test)

    def training_eval(meta: dict) -> float:
        """The snapshot's training evaluation on the selection tasks (from its all-task and test means)."""
        if len(selection) == n_all:
            return float(meta["eval_all"])
        return (n_all * float(meta["eval_all"]) - n_test * float(meta["eval_test"])) / (n_all - n_test)

    top = sorted(snapshots, key=lambda am: training_eval(am[1]), reverse=True)[:candidates]
    scored = []
    for cand, cand_meta in top:
        per_task = evaluate_actor(spec, cand, episodes=episodes, seed=1)
        scored.append(
            (
                float(per_task[selection].mean()),
                per_task,
                cand,
                {
                    **cand_meta,
                    "export_eval_selection": float(per_task[selection].mean()),
                    "export_selection_tasks": selection,
                    "export_eval_all": float(per_task.mean()),
                    "export_eval_test": float(per_task[spec.test_tasks].mean()),
                    "export_episodes": episodes,
                },
            )
        )
    _, expert_ret, actor, meta = max(scored, key=lambda x: x[0])
    random_ret = random_returns(suite)
    half, span = (random_ret + expert_ret) / 2, np.maximum(np.abs(expert_ret - random_ret), 1e-6)
    deviation = [
        float(np.mean(np.abs(evaluate_actor(spec, a, episodes=1, seed=2) - half) / span)) for a, _ in snapshots
    ]
    best = int(np.argmin(deviation))
    medium_actor, medium_meta = snapshots[best]
    medium_meta = {**medium_meta, "medium_target_all": float(half.mean()), "medium_relative_deviation": deviation[best]}
    paths = {"expert": expert_path(spec), "medium": expert_path(spec, medium=True)}
    if dest_dir is not None:
        paths = {k: Path(dest_dir) / p.name for k, p in paths.items()}
    save_actor(actor, paths["expert"], meta)
    save_actor(medium_actor, paths["medium"], medium_meta)
    return paths
