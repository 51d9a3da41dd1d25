"""Load a shipped Prompt Diffuser and run it in a plain Gymnasium loop.

python examples/run_pretrained.py --suite cheetah-vel --task 2
"""

import argparse

import promptrl  # noqa: F401  (registers the promptrl/* envs)
from promptrl import PromptDiffuser, PromptWrapper, load_suite

parser = argparse.ArgumentParser()
parser.add_argument("--suite", default="cheetah-vel")
parser.add_argument("--task", type=int, default=2)
args = parser.parse_args()

pd = PromptDiffuser.from_pretrained(f"hub_models/{args.suite}")
env = PromptWrapper(load_suite(args.suite).make_env(args.task), pd)  # a new generated prompt at every reset
obs, info = env.reset(seed=0)
episode_return, done = 0.0, False
while not done:
    action, _ = pd.predict(obs, deterministic=True)
    obs, reward, terminated, truncated, info = env.step(action)
    episode_return += float(reward)
    done = terminated or truncated
print(f"{args.suite} task {args.task} (goal {info['goal']}): return {episode_return:.1f}")
