"""Wall time of one grid of reproduce cells run by 1 and by 2 local worker processes and through Ray,
and whether their tables agree.

    python benchmarks/scale.py [--methods ...] [--seeds 2] [--steps 25] [--episodes 3]

The grid: Table 1's (method, seed, test task) units on two ``mw-reach`` test tasks (6 and 9) with small
shipped-style models trained here (PLM: embed 32, 1 layer; generator: 20 diffusion steps), each
method adapting ``--steps`` steps on one expert episode and evaluated for ``--episodes`` episodes.
Every configuration starts from an empty results folder (so the Prompt Diffuser fine-tunes in each)
and fresh workers (``--executor local --workers 1``, ``--workers 2``, and ``--executor ray`` on a Ray
instance started here with 2 CPUs); one torch thread per worker. The workers' start-up (process
start, imports; Ray's own start) is timed apart: each configuration first runs one import-only unit
per worker. The timed grid includes everything else: each worker loading the models, adapting,
evaluating, and this process writing the cells. Ends with one ``RESULT`` line: the 2-worker
speed-up over 1 worker (goal >= 1.8x on 2 cores) and Ray's time relative to the 2 local workers
(goal within 10%). The load of the machine from other programs is printed: the goals assume idle cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch

SUITE, TASKS = "mw-reach", [6, 9]
METHODS = ["Prompt-DT-Expert", "Soft Prompt", "Prompt-DT-FT", "Prompt Diffuser"]


def _hub(root: Path) -> Path:
    """``root/<suite>`` laid out as shipped: small models trained a few steps on the tasks' expert data."""
    import promptrl
    from promptrl.data.datasets import create_datasets
    from promptrl.methods.diffuser import PromptDiffuser
    from promptrl.methods.plm import PromptDT

    suite = promptrl.load_suite(SUITE)
    for quality in ("expert", "random"):
        create_datasets(suite, quality, tasks=TASKS, episodes=4)
    data = [suite.dataset(t, "expert") for t in TASKS]
    small = dict(embed_dim=32, n_layer=1, batch_per_task=8, warmup_steps=5, context=10, seed=0)
    plm = PromptDT(suite, **small).learn(data, total_steps=20, progress_bar=False)
    plm.save_pretrained(root / SUITE / "plm")
    PromptDT(suite, use_prompt=False, **small).learn(data, total_steps=20, progress_bar=False).save_pretrained(
        root / SUITE / "mt-orl"
    )
    pd = PromptDiffuser(plm, n_steps=20, hidden=64, batch_size=8).learn(
        data, epochs=1, steps_per_epoch=20, progress_bar=False
    )
    pd.save_generator(root / SUITE / "pretrained")
    return root


def _warm(_: int) -> int:
    """An import-only unit: a worker's start-up, timed apart from the grid."""
    import promptrl.experiments.reproduce  # noqa: F401

    time.sleep(1.0)  # long enough that every worker gets one
    return os.getpid()


def _start(executor, workers: int) -> float:
    start = time.perf_counter()
    list(executor.map_unordered(_warm, range(workers)))
    return time.perf_counter() - start


def _grid(out: Path, hub: Path, budget, methods: list[str], executor) -> tuple[float, str]:
    from promptrl.experiments.reproduce import reproduce_suite, suite_table

    start = time.perf_counter()
    summary = reproduce_suite(SUITE, budget, methods, out, hub, tasks=TASKS, executor=executor)
    return time.perf_counter() - start, suite_table(SUITE, summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="adaptation steps of each method")
    parser.add_argument("--episodes", type=int, default=3, help="evaluation episodes per test task")
    args = parser.parse_args()

    from promptrl.experiments.executors import LocalPool, RayExecutor
    from promptrl.experiments.reproduce import Budget

    torch.set_num_threads(1)
    budget = Budget(seeds=args.seeds, episodes=args.episodes, epochs=1, steps_per_epoch=args.steps, full_epochs=1)
    units = len(args.methods) * args.seeds * len(TASKS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MINARI_DATASETS_PATH"] = str(root / "minari")  # before any worker starts: they inherit it
        (root / "minari").mkdir()
        hub = _hub(root / "hub")
        rows, tables = [], {}
        for label, workers in (("local, 1 worker", 1), ("local, 2 workers", 2)):
            with LocalPool(workers=workers) as executor:
                started = _start(executor, workers)
                seconds, tables[label] = _grid(root / label.replace(" ", "_"), hub, budget, args.methods, executor)
            rows.append((label, started, seconds))
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        executor = RayExecutor()
        started = time.perf_counter() - start + _start(executor, 2)
        seconds, tables["ray"] = _grid(root / "ray", hub, budget, args.methods, executor)
        ray.shutdown()
        rows.append(("ray, 2 CPUs, 1 CPU per unit", started, seconds))

    one, two, on_ray = rows[0][2], rows[1][2], rows[2][2]
    same = len(set(tables.values())) == 1
    print(
        f"# Grid scaling: {units} units ({len(args.methods)} methods x {args.seeds} seeds x {len(TASKS)} {SUITE} test "
        f"tasks), {args.steps} adaptation steps, {args.episodes} evaluation episodes per task"
    )
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"Load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| executor | start-up s | grid wall s | units / min | speed-up over 1 worker |")
    print("|---|---|---|---|---|")
    for label, started, seconds in rows:
        print(f"| {label} | {started:.1f} | {seconds:.1f} | {60 * units / seconds:.1f} | {one / seconds:.2f}x |")
    print(f"\nTables identical across the three runs: {'yes' if same else 'NO'}")
    print(f"\n{tables['ray']}\n")
    print(
        f"RESULT: 2 local workers {one / two:.2f}x faster than 1 (goal >= 1.8x); Ray {100 * (on_ray / two - 1):+.1f}% "
        f"vs 2 local workers (goal within 10%); tables identical: {'yes' if same else 'no'}"
    )


if __name__ == "__main__":
    main()
