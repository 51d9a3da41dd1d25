"""Few-shot adaptation: fine-tune the shipped, pre-trained prompt generator on ONE expert episode of
a test task and compare with Prompt-DT given that episode as its prompt.

    python examples/few_shot_adapt.py --suite cheetah-vel --task 7 --epochs 5
"""

import argparse

from promptrl import PromptDiffuser, PromptDT, evaluate, load_suite

parser = argparse.ArgumentParser()
parser.add_argument("--suite", default="cheetah-vel")
parser.add_argument("--task", type=int, default=7)
parser.add_argument("--epochs", type=int, default=20, help="epochs of 100 steps (Table 4: 20)")
parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes")
args = parser.parse_args()

suite = load_suite(args.suite)
plm = PromptDT.from_pretrained(f"hub_models/{args.suite}/plm")
few_shot = suite.dataset(args.task, "expert", episodes=1)  # Minari dataset with one episode

pd = PromptDiffuser.from_pretrained(f"hub_models/{args.suite}/pretrained", plm=plm)  # generator only
pd.learn(few_shot, epochs=args.epochs)

ours = evaluate(pd, suite, tasks=[args.task], n_episodes=args.episodes, prompt=None)
expert_prompt = evaluate(plm, suite, tasks=[args.task], n_episodes=args.episodes, prompt=few_shot)
print(f"Prompt Diffuser:  {ours.mean:.1f}")
print(f"Prompt-DT-Expert: {expert_prompt.mean:.1f}")
