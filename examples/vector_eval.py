"""Evaluate with a gymnasium.vector env: VectorPromptWrapper makes every sub-env's prompt in one
batched generator call and the policy acts for all sub-envs in one forward.

    python examples/vector_eval.py --suite cheetah-vel --task 2 --n-envs 16
"""

import argparse

import gymnasium as gym
import numpy as np

from promptrl import PromptDiffuser, VectorPromptWrapper, load_suite

parser = argparse.ArgumentParser()
parser.add_argument("--suite", default="cheetah-vel")
parser.add_argument("--task", type=int, default=2)
parser.add_argument("--n-envs", type=int, default=16)
args = parser.parse_args()

suite = load_suite(args.suite)
pd = PromptDiffuser.from_pretrained(f"hub_models/{args.suite}")
envs = VectorPromptWrapper(gym.vector.SyncVectorEnv([lambda: suite.make_env(args.task)] * args.n_envs), pd)
obs, _ = envs.reset(seed=0)
returns, alive = np.zeros(args.n_envs), np.ones(args.n_envs, bool)
while alive.any():
    actions, _ = pd.predict(obs, deterministic=True)
    obs, reward, terminated, truncated, _ = envs.step(actions)
    returns += reward * alive
    alive &= ~(terminated | truncated)
print(f"{args.n_envs} episodes of {args.suite} task {args.task}: {returns.mean():.1f} ± {returns.std():.1f}")
