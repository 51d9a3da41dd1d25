"""Steps per second of ``PromptDT.learn`` in one process against 2 gloo ranks (DistributedDataParallel)
on the CPU, at the same global batch.

    python benchmarks/ddp_cpu.py [--tasks 4] [--global-batch 256] [--steps 12] [--warmup 3]

The model has the default (reference) size: embed 128, 3 layers, history K=20, prompt K*=5. The
data are 2-episode expert datasets of the first ``--tasks`` training tasks of ``mw-reach`` (made
here if missing). Each configuration runs in fresh processes started by
``torch.multiprocessing.spawn``: one process with 1 torch thread, one process with 2 threads, and
2 ranks (gloo, 1 torch thread each) drawing half the global batch each. A step is timed from one
callback to the next (sampling, forward, backward, the all-reduces, clipping, AdamW); the first
``--warmup`` steps are left out and the median of the rest is reported. Ends with one ``RESULT``
line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import promptrl
from promptrl.data.datasets import create_datasets, dataset_exists
from promptrl.methods.plm import PromptDT

SUITE = "mw-reach"


def _run(rank: int, world: int, threads: int, args: argparse.Namespace, init: str, out: str) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        suite = promptrl.load_suite(SUITE)
        data = [suite.dataset(t, "expert") for t in suite.train_tasks[: args.tasks]]
        per_task = args.global_batch // (args.tasks * world)
        model = PromptDT(suite, seed=0, batch_per_task=per_task, bf16=False)
        stamps: list[float] = []
        model.learn(
            data,
            total_steps=args.warmup + args.steps + 1,
            progress_bar=False,
            callback=lambda _: stamps.append(time.perf_counter()),
        )
        times = [b - a for a, b in itertools.pairwise(stamps)][args.warmup :]
        if rank == 0:
            Path(out).write_text(json.dumps(times))
    finally:
        if world > 1:
            dist.destroy_process_group()


def measure(world: int, threads: int, args: argparse.Namespace) -> list[float]:
    """Seconds per step (after the warm-up) of ``world`` processes with ``threads`` torch threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times")
        mp.spawn(_run, args=(world, threads, args, os.path.join(tmp, "init"), out), nprocs=world)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=4, help="training tasks in the batch")
    parser.add_argument("--global-batch", type=int, default=256, help="sequences per step, all ranks together")
    parser.add_argument("--steps", type=int, default=12, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out first")
    args = parser.parse_args()
    if args.global_batch % (2 * args.tasks):
        parser.error(f"--global-batch must be a multiple of 2 x --tasks = {2 * args.tasks}, got {args.global_batch}")
    suite = promptrl.load_suite(SUITE)
    tasks = suite.train_tasks[: args.tasks]
    missing = [t for t in tasks if not dataset_exists(suite.dataset_id(t, "expert"))]
    if missing:
        create_datasets(suite, "expert", tasks=missing, episodes=2)

    rows = []
    for label, world, threads in (
        ("1 process, 1 torch thread", 1, 1),
        ("1 process, 2 torch threads", 1, 2),
        ("2 gloo ranks (DDP), 1 torch thread each", 2, 1),
    ):
        times = measure(world, threads, args)
        rows.append((label, statistics.median(times)))
    print(
        f"PromptDT train step, {SUITE}: {args.tasks} tasks, global batch {args.global_batch} sequences "
        f"(embed 128, 3 layers, K=20, K*=5), float32, CPU ({os.cpu_count()} cores, {platform.machine()}), "
        f"PyTorch {torch.__version__}, median of {args.steps} steps after {args.warmup}\n"
    )
    print("| configuration | s/step | steps/s | vs 1 process, 1 thread |")
    print("|---|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.4f} | {1 / seconds:.2f} | {rows[0][1] / seconds:.2f}x |")
    print(
        f"\nRESULT steps_per_s_1proc_1thread={1 / rows[0][1]:.2f} steps_per_s_1proc_2threads={1 / rows[1][1]:.2f} "
        f"steps_per_s_2ranks={1 / rows[2][1]:.2f} speedup_2ranks={rows[0][1] / rows[2][1]:.2f}"
    )


if __name__ == "__main__":
    main()
