"""Evaluation throughput of a Prompt-DT in env-steps/s, against the raw simulator and a naive loop.

    python benchmarks/eval_throughput.py [--suite cheetah-vel] [--sizes 1 16 64 256] [--steps 200] [--device cpu]

(a) raw: the simulator alone with random actions in a SyncVectorEnv of n envs;
(b) naive: one env, a full forward over the whole context every step (all K action predictions,
    of which the last is used), one episode at a time (the reference implementation's loop shape);
ours: ``promptrl.evaluate``-style batching: n episodes in one vector env, one batched ``predict`` per
    step (whose final block computes only the last state token), in float32 and with the
    ``bf16_inference`` setting (bfloat16 autocast).
The model is a reference-size Prompt-DT (embed 128, 3 layers) with random weights: speed does not
depend on the weights. Ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import promptrl
from promptrl.methods.plm import PromptDT
from promptrl.wrappers import HistoryBuffer, PromptWrapper, resolve_prompt


def prompt_for(model: PromptDT) -> dict[str, np.ndarray]:
    s = model.settings
    return {
        "states": np.zeros((s.prompt_length, s.obs_dim)),
        "actions": np.zeros((s.prompt_length, s.act_dim)),
        "rtg": np.zeros(s.prompt_length),
        "timesteps": np.arange(s.prompt_length),
        "mask": np.ones(s.prompt_length),
    }


def raw(suite, n: int, steps: int) -> float:
    envs = gym.vector.SyncVectorEnv([lambda: suite.make_env(suite.test_tasks[0]) for _ in range(n)])
    envs.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, n, suite.spec.act_dim)).astype(np.float32)
    t = time.perf_counter()
    for a in actions:
        envs.step(a)
    return n * steps / (time.perf_counter() - t)


def ours(model: PromptDT, suite, n: int, steps: int) -> float:
    s = model.settings
    envs = gym.vector.SyncVectorEnv(
        [lambda: suite.make_env(suite.test_tasks[0]) for _ in range(n)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    obs, _ = envs.reset(seed=0)
    history = HistoryBuffer(n, s.context, s.obs_dim, s.act_dim)
    history.reset(np.arange(n), obs, s.rtg_target)
    one = resolve_prompt(model, prompt_for(model), np.random.default_rng(0))
    prompt = {f"prompt_{k}": np.repeat(v[None], n, 0) for k, v in one.items()}
    t = time.perf_counter()
    for _ in range(steps):
        action, _ = model.predict({**history.observation(), **prompt})
        obs, reward, *_ = envs.step(action)
        history.push(action, reward.astype(np.float32), obs)
    return n * steps / (time.perf_counter() - t)


def naive(model: PromptDT, suite, steps: int) -> float:
    env = PromptWrapper(suite.make_env(suite.test_tasks[0]), model, prompt=prompt_for(model))
    obs, _ = env.reset(seed=0)
    full = lambda history, prompt, last_only: model.network(history, prompt)  # noqa: E731  all K predictions
    t = time.perf_counter()
    for _ in range(steps):
        action, _ = model._predict_with(full, obs)
        obs, *_ = env.step(action)
    return steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="cheetah-vel")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="the model's device (the simulators run on the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = promptrl.load_suite(args.suite)
    model = PromptDT(
        suite, device=args.device, state_mean=[0.0] * suite.spec.obs_dim, state_std=[1.0] * suite.spec.obs_dim
    )
    naive(model, suite, 10)  # warm-up: the first forwards (on a GPU, of each dtype) pay a start-up
    for bf16 in (False, True):
        model.settings.bf16_inference = bf16
        ours(model, suite, 1, 10)
    model.settings.bf16_inference = False
    base = naive(model, suite, args.steps)
    where = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "CPU"
    print(
        f"{args.suite}, {args.steps} steps per episode, torch threads {args.threads}, reference-size Prompt-DT "
        f"({model.num_parameters():,} parameters) on {where}\n"
    )
    print(
        "| parallel episodes | raw simulator (a) | naive loop (b) | ours | ours, bf16_inference | ours / (a) | ours / (b) "
        "| bf16 / (a) | bf16 / (b) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    result = {}
    for n in args.sizes:
        a, o = raw(suite, n, args.steps), ours(model, suite, n, args.steps)
        model.settings.bf16_inference = True
        h = ours(model, suite, n, args.steps)
        model.settings.bf16_inference = False
        print(
            f"| {n} | {a:,.0f} | {base:,.0f} | {o:,.0f} | {h:,.0f} | {o / a:.2f} | {o / base:.1f} | {h / a:.2f} | {h / base:.1f} |"
        )
        result[n] = (o / a, o / base, h / a, h / base)
    last = max(result)
    r = result[last]
    print(
        f"\nRESULT episodes={last} vs_raw={r[0]:.2f} vs_naive={r[1]:.1f} bf16_vs_raw={r[2]:.2f} bf16_vs_naive={r[3]:.1f}"
    )


if __name__ == "__main__":
    main()
