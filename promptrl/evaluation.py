"""Batched evaluation: every task x episode of a split runs at once in a ``gymnasium.vector`` env
with one batched model forward per step. Works with anything that has a PromptDT ``predict``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from promptrl.suites import TaskSuite, load_suite
from promptrl.wrappers import HistoryBuffer, PromptSource, generate_prompts, resolve_prompt


@dataclass
class EvalResult:
    """Episode returns of an evaluation, ``returns[task]`` one value per episode."""

    suite: str
    split: str
    returns: dict[int, list[float]]

    @property
    def mean(self) -> float:
        return float(np.mean([np.mean(r) for r in self.returns.values()]))

    @property
    def std(self) -> float:
        """Std over tasks of the per-task means."""
        return float(np.std([np.mean(r) for r in self.returns.values()]))

    def table(self) -> str:
        rows = ["| task | mean | std | episodes |", "|---|---|---|---|"]
        rows += [f"| {t} | {np.mean(r):.1f} | {np.std(r):.1f} | {len(r)} |" for t, r in self.returns.items()]
        rows.append(f"| **mean** | **{self.mean:.1f}** | {self.std:.1f} | |")
        return "\n".join(rows)

    def __str__(self) -> str:
        return f"{self.suite} ({self.split}):\n{self.table()}"


def evaluate(
    model: Any,
    suite: TaskSuite | str,
    split: str = "test",
    n_episodes: int = 10,
    prompt: PromptSource | None = None,
    seed: int = 0,
    rtg_target: float | None = None,
    vectorization: str = "sync",
    progress_bar: bool = False,
    tasks: list[int] | None = None,
) -> EvalResult:
    """Run ``n_episodes`` episodes on every task of ``split`` together and return their returns.

    :param prompt: as for :class:`~promptrl.wrappers.PromptWrapper` (one prompt per episode, seeded).
        None: the model's own prompts when it makes them (``generate_prompt``: the Prompt Diffuser's
        generated prompts, a baseline's learned ones), else expert windows of each task's dataset.
        A generator draws from its own random state: ``model.set_random_seed(s)`` first repeats its prompts.
    :param vectorization: ``"sync"`` or ``"async"`` (one process per episode).
    :param tasks: evaluate these task indices instead of the whole split.
    """
    suite = load_suite(suite) if isinstance(suite, str) else suite
    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    if vectorization not in ("sync", "async"):
        raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    plm = getattr(model, "plm", model)
    s = plm.settings
    if (s.obs_dim, s.act_dim) != (suite.spec.obs_dim, suite.spec.act_dim):
        raise ValueError(
            f"model sizes ({s.obs_dim}, {s.act_dim}) do not match suite {suite.name!r} ({suite.spec.obs_dim}, {suite.spec.act_dim})"
        )
    if tasks is not None:
        bad = [t for t in tasks if not isinstance(t, (int, np.integer)) or not 0 <= t < len(suite.tasks)]
        if bad or not tasks:
            raise ValueError(
                f"tasks must be task indices of suite {suite.name!r} (0..{len(suite.tasks) - 1}), got {tasks!r}"
            )
    tasks = [int(t) for t in (suite.split(split) if tasks is None else tasks) for _ in range(n_episodes)]
    n = len(tasks)
    rng = np.random.default_rng(seed)
    if s.use_prompt and prompt is None:
        prompt = getattr(model, "generate_prompt", "expert")
    prompts = None
    if s.use_prompt:
        if callable(prompt) and not isinstance(prompt, (str, dict)):  # a generator: one batched call
            prompts = [resolve_prompt(plm, p, rng) for p in generate_prompts(prompt, n, tasks)]
        else:
            prompts = [resolve_prompt(plm, prompt, rng, suite.name, t) for t in tasks]
        prompt_obs = {f"prompt_{k}": np.stack([p[k] for p in prompts]) for k in prompts[0]}
    make = [lambda t=t: suite.make_env(t) for t in tasks]
    vec_cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
    envs = vec_cls(make, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    obs, _ = envs.reset(seed=[int(x) for x in np.random.SeedSequence(seed).generate_state(n)])
    history = HistoryBuffer(n, s.context, s.obs_dim, s.act_dim)
    history.reset(np.arange(n), obs, s.rtg_target if rtg_target is None else rtg_target)
    returns, alive = np.zeros(n), np.ones(n, bool)
    bar = tqdm(total=suite.horizon, desc=f"evaluate {suite.name}", disable=not progress_bar)
    while alive.any():
        batch = history.observation()
        if prompts is not None:
            batch.update(prompt_obs)
        action, _ = model.predict(batch, deterministic=True)
        obs, reward, term, trunc, _ = envs.step(action)
        returns += reward * alive
        alive &= ~(term | trunc)
        history.push(action, reward.astype(np.float32), obs)
        bar.update()
    bar.close()
    envs.close()
    per_task: dict[int, list[float]] = {}
    for t, r in zip(tasks, returns):
        per_task.setdefault(t, []).append(float(r))
    return EvalResult(suite.name, split, per_task)
