"""What backing PyTorch's large CPU tensors with transparent huge pages saves, in one run.

On Linux, PyTorch's CPU allocator asks the kernel for huge pages (``madvise(MADV_HUGEPAGE)``) for
blocks of 2 MB and more when the environment variable ``THP_MEM_ALLOC_ENABLE=1`` is set before torch
is imported. A Prompt-DT step at the reference batch allocates activations of tens of MB (e.g. the
MLP's 512-wide hidden layer over 560 sequences x 75 tokens: 86 MB) and, with small pages, touches
each 4 KB page of each new block once, which can cost as much as the arithmetic on it.

    python benchmarks/cpu_allocator.py [--threads 1] [--repeats 5] [--batch 560]

Three workloads, each in float32 with the shipped models' sizes (embed 128, 3 layers, K=20, K*=5):

- ``plm train step``: forward, backward and AdamW at ``--batch`` sequences (the reference batch,
  16 sequences x 35 training tasks);
- ``prompt-tuning step``: the no-grad forward of Prompt-Tuning DT's step, 17 candidate prompts x
  32 windows (544 sequences);
- ``fine-tuning step``: forward, backward and AdamW at 32 sequences (Prompt-DT-FT, FT-Full).

Each setting runs in its own process (the variable is read once per process), the two alternating
``--repeats`` times so that both see the same machine load; the table gives the median seconds per
step. Both compute the same numbers: the run checks that each workload's result is bit for bit the
same under both settings. Ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {"default": {}, "THP_MEM_ALLOC_ENABLE=1": {"THP_MEM_ALLOC_ENABLE": "1"}}
OBS, ACT, K, KP = 17, 6, 20, 5


def measure(threads: int, batch: int, steps: int) -> dict[str, tuple[float, float]]:
    """Seconds per step and a checksum of the result of each workload, in this process."""
    import torch

    from promptrl.data.windows import Segment
    from promptrl.nn.transformer import PromptDTConfig, PromptDTNetwork

    torch.set_num_threads(threads)

    def segment(n: int, length: int, g: torch.Generator) -> Segment:
        return Segment(
            torch.randn(n, length, OBS, generator=g),
            torch.rand(n, length, ACT, generator=g) * 2 - 1,
            torch.randn(n, length, 1, generator=g),
            torch.randint(0, 200, (n, length), generator=g),
            torch.ones(n, length),
        )

    def train(n: int) -> tuple[float, float]:
        torch.manual_seed(0)
        net = PromptDTNetwork(PromptDTConfig(OBS, ACT, context=K, prompt_length=KP))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        history, prompt = segment(n, K, g), segment(n, KP, g)
        times = []
        for _ in range(steps + 1):  # the first step warms up
            t = time.perf_counter()
            loss = (net(history, prompt) - history.actions).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:]), float(sum(p.double().sum() for p in net.parameters()))

    @torch.no_grad()
    def candidates() -> tuple[float, float]:
        torch.manual_seed(0)
        net = PromptDTNetwork(PromptDTConfig(OBS, ACT, context=K, prompt_length=KP)).eval()
        g = torch.Generator().manual_seed(0)
        history, prompt = segment(17 * 32, K, g), segment(17 * 32, KP, g)
        times, total = [], 0.0
        for _ in range(steps + 1):
            t = time.perf_counter()
            total = float((net(history, prompt) - history.actions).pow(2).mean())
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:]), total

    return {"plm train step": train(batch), "prompt-tuning step": candidates(), "fine-tuning step": train(32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=560)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per workload and process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.threads, args.batch, args.steps)))
        return
    worker = [sys.executable, __file__, "--worker", "--threads", str(args.threads), "--batch", str(args.batch)]
    worker += ["--steps", str(args.steps)]
    runs: dict[str, list[dict[str, list[float]]]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name, env in SETTINGS.items():
            clean = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
            out = subprocess.run(worker, env={**clean, **env}, check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    workloads = list(runs["default"][0])
    same = all(r[w][1] == runs["default"][0][w][1] for rs in runs.values() for r in rs for w in workloads)
    names = list(SETTINGS)
    print(f"CPU, torch threads {args.threads}, float32; median over {args.repeats} processes x {args.steps} steps\n")
    print("| workload | " + " | ".join(f"{n} s/step" for n in names) + " | speed-up |")
    print("|---|" + "---|" * (len(names) + 1))
    speedups = {}
    for w in workloads:
        med = [statistics.median(r[w][0] for r in runs[n]) for n in names]
        speedups[w] = med[0] / med[1]
        print(f"| {w} | " + " | ".join(f"{m:.4f}" for m in med) + f" | {speedups[w]:.2f}x |")
    print(f"\nidentical results under both settings: {same}")
    print(
        "RESULT "
        + " ".join(f"speedup_{w.split()[0].replace('-', '_')}={s:.2f}" for w, s in speedups.items())
        + f" identical={same}"
    )


if __name__ == "__main__":
    main()
