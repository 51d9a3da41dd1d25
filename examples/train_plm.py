"""Pre-train a Prompt-DT (the PLM) from scratch on a suite's training tasks, then evaluate it on the
test split with expert and random prompts. The datasets are made first if missing (minutes).

    python examples/train_plm.py --suite cheetah-vel --steps 4000

(`promptrl.methods.plm.train_plm(suite, folder, steps, ...)` and `promptrl train plm <suite>` do the same with
atomic checkpoints and resume.)
"""

import argparse

from promptrl import PromptDT, evaluate, load_suite
from promptrl.data.datasets import create_datasets

parser = argparse.ArgumentParser()
parser.add_argument("--suite", default="cheetah-vel")
parser.add_argument("--steps", type=int, default=4000)
parser.add_argument("--out", default="plm-out")
args = parser.parse_args()

suite = load_suite(args.suite)
for quality in ("expert", "random"):
    create_datasets(suite, quality, progress_bar=True)
plm = PromptDT(suite, batch_per_task=4, warmup_steps=500, learning_rate=2e-4, seed=0)
plm.learn(suite.datasets("train", "expert"), total_steps=args.steps)
plm.save_pretrained(args.out)
for prompt in ("expert", "random"):
    print(prompt, "prompts:", evaluate(plm, suite, n_episodes=5, prompt=prompt))
