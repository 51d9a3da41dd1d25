"""Measure the shipped experts: mean return over each suite's test tasks, expert vs medium vs random.

    python benchmarks/expert_quality.py [--episodes 5] [--suites cheetah-vel ...]

Prints a markdown table (the README's expert table) and ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse

import numpy as np

import promptrl
from promptrl.data.experts import load_expert
from promptrl.data.rollouts import RandomPolicy, rollout

FLOORS = {"cheetah-dir": 900.0, "cheetah-vel": -45.0, "ant-dir": 400.0, "ant-dir-ood": None, "mw-reach": None}


def measure(name: str, episodes: int, seed: int) -> dict[str, list[float]]:
    suite = promptrl.load_suite(name)
    out: dict[str, list[float]] = {"expert": [], "medium": [], "random": []}
    for task in suite.test_tasks:
        policies = {
            "expert": load_expert(suite.spec, task, "expert", seed=seed),
            "medium": load_expert(suite.spec, task, "medium", seed=seed),
            "random": RandomPolicy(suite.make_env(task).action_space, seed=seed),
        }
        for quality, policy in policies.items():
            eps = rollout(suite, task, policy, episodes, seed=seed + task)
            out[quality].append(float(np.mean([e.episode_return for e in eps])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=5, help="episodes per test task")
    parser.add_argument("--suites", nargs="+", default=promptrl.available_suites())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"Mean return over the test tasks, {args.episodes} episodes per task (seed {args.seed}).\n")
    print("| suite | test tasks | expert | medium | random | expert per test task | floor | meets floor |")
    print("|---|---|---|---|---|---|---|---|")
    result = []
    for name in args.suites:
        r = measure(name, args.episodes, args.seed)
        floor = FLOORS.get(name)
        if name == "mw-reach":
            ok = "yes (is the scripted expert)"
        elif floor is None:
            ok = "-"
        else:
            # cheetah-dir: the floor holds in both directions, i.e. on every test task.
            value = min(r["expert"]) if name == "cheetah-dir" else float(np.mean(r["expert"]))
            ok = "yes" if value >= floor else "NO"
        per_task = ", ".join(f"{v:.1f}" for v in r["expert"])
        print(
            f"| {name} | {promptrl.load_suite(name).test_tasks} | {np.mean(r['expert']):.1f} | {np.mean(r['medium']):.1f} | "
            f"{np.mean(r['random']):.1f} | {per_task} | {floor if floor is not None else '-'} | {ok} |"
        )
        result.append(f"{name}={np.mean(r['expert']):.1f}")
    print("\nRESULT " + " ".join(result))


if __name__ == "__main__":
    main()
