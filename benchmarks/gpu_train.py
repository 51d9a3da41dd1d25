"""Where the training and generation time goes on one accelerator, and what the device sampler and
compiled (CUDA-graph) hot loops save, in one run:

1. PLM train steps/s at the reference batch (16 sequences x the suite's training tasks; embed 128,
   3 layers, K=20, K*=5): batches drawn one number at a time and gathered on the host (the
   pre-existing path), drawn at once but gathered on the host, gathered on the device
   (``SegmentSampler.sample(..., device)``), and that plus the forward/backward compiled with CUDA
   graphs (``promptrl.nn.compiled.maybe_compile``) and a fused AdamW. Goal: >= 200 steps/s on one H100.
2. Prompt generation (N=100 reverse chain, batch 64), plain and compiled, as a share of one
   episode's evaluation. Goal: <= 2%.
3. Table 4 fine-tuning (2,000 guided steps, batch 32), timed over ``--finetune-steps`` steps and
   scaled, with the reverse chain plain and compiled. Goal: <= 30 s.

    python benchmarks/gpu_train.py [--device cuda] [--suite cheetah-vel] [--quick]

The episodes are synthesized with the suite's sizes, horizon and episode count (no datasets on
disk); speed does not depend on the numbers. Weights are random. A variant that fails prints its
error and the run goes on. Writes what it prints to ``$OUT/gpu_train.txt`` when ``OUT`` is set.
Ends with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import promptrl
from promptrl.data.episodes import Episode, state_statistics
from promptrl.data.windows import Segment, SegmentSampler
from promptrl.methods.diffuser import PromptDiffuser
from promptrl.methods.plm import PromptDT, prompt_from_episode, training_bf16
from promptrl.nn.compiled import maybe_compile, will_compile

TABLE4_STEPS = 20 * 100


class Report:
    """Prints lines and keeps ``$OUT/gpu_train.txt`` up to date after each (a killed run keeps its tables)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        out = os.environ.get("OUT")
        self.path = Path(out) / "gpu_train.txt" if out else None

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        if self.path is not None:
            self.path.write_text("\n".join(self.lines) + "\n")

    def table(self, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        self("| " + " | ".join(header) + " |")
        self("|" + "---|" * len(header))
        for row in rows:
            self("| " + " | ".join(row) + " |")
        self()


def synthetic_episodes(tasks: list[int], n: int, horizon: int, obs_dim: int, act_dim: int, seed: int):
    """Per task, ``n`` episodes of ``horizon`` steps with random observations, actions in [-1, 1] and rewards."""
    rng = np.random.default_rng(seed)
    return {
        t: [
            Episode.from_arrays(
                rng.normal(size=(horizon + 1, obs_dim)),
                rng.uniform(-1, 1, (horizon, act_dim)),
                rng.uniform(-1, 0, horizon),
            )
            for _ in range(n)
        ]
        for t in tasks
    }


def sync_of(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls after ``warmup`` calls."""
    sync = sync_of(device)
    for _ in range(warmup):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t) / steps


def attempt(report: Report, name: str, fn: Callable[[], float]) -> float | None:
    try:
        return fn()
    except Exception as error:  # a failing variant is reported; the others still run
        report(f"{name}: FAILED {type(error).__name__}: {error}")
        report("    " + traceback.format_exc().strip().splitlines()[-1])
        return None


def host_batch(sampler: SegmentSampler, per_task: int, device: torch.device, at_once: bool):
    """A batch drawn on the host (one number at a time, or all at once), gathered on the CPU and copied over."""
    task_idx = np.repeat(np.arange(len(sampler.tasks)), per_task)
    draws = sampler._draw(task_idx) if at_once else sampler._draw_one_by_one(task_idx)
    spec = sampler.spec
    history = sampler._history_bank.windows(draws[:, 0], draws[:, 1], spec.context)
    prompt = sampler._prompt_bank.windows(draws[:, 2], draws[:, 3], spec.prompt_length)
    return Segment(*(t.to(device) for t in history)), Segment(*(t.to(device) for t in prompt))


def plm_section(report: Report, args, suite, device: torch.device) -> dict[str, float]:
    spec = suite.spec
    tasks = list(suite.train_tasks)
    episodes = synthetic_episodes(tasks, args.episodes, spec.horizon, spec.obs_dim, spec.act_dim, seed=0)
    plm = PromptDT(suite, device=device, seed=0)
    mean, std = state_statistics([e for eps in episodes.values() for e in eps])
    plm.settings.state_mean, plm.settings.state_std = mean.tolist(), std.tolist()
    s = plm.settings
    sampler = SegmentSampler(episodes, episodes, plm._segment_spec(), seed=0)
    bf16 = training_bf16(s.bf16, device)
    per_task = args.per_task or s.batch_per_task
    batch = per_task * len(tasks)
    plm._configure_optimizer()
    plm.network.train()
    fused = (
        torch.optim.AdamW(plm.network.parameters(), lr=s.learning_rate, fused=True) if device.type == "cuda" else None
    )

    def make_step(draw: Callable[[], tuple[Segment, Segment]], loss_fn, optimizer, graphs: bool):
        def step() -> float:
            history, prompt = draw()
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(history, prompt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(plm.network.parameters(), s.grad_clip)
            optimizer.step()
            plm._scheduler.step()
            return loss.item()  # as PromptDT.learn: one host read per step

        return step

    def draw_host(at_once: bool):
        return lambda: host_batch(sampler, per_task, device, at_once)

    def draw_device():
        return sampler.sample(per_task, device)

    fixed = sampler.sample(per_task, device)
    compiled_loss = maybe_compile(plm.loss, device)
    graphs = will_compile(device)
    variants = [
        ("host: one draw per number, CPU gather, copy", draw_host(False), plm.loss, plm._optimizer, False),
        ("host: batch draws, CPU gather, copy", draw_host(True), plm.loss, plm._optimizer, False),
        ("device sampler (gather on the device)", draw_device, plm.loss, plm._optimizer, False),
        ("device sampler + compiled loss (CUDA graphs)", draw_device, compiled_loss, plm._optimizer, graphs),
    ]
    if fused is not None:
        variants.append(
            ("device sampler + compiled loss + fused AdamW", draw_device, compiled_loss, fused, graphs),
        )
    alone = f"model step alone (one fixed batch){', compiled, fused AdamW' if fused is not None else ''}"
    variants.append((alone, lambda: fixed, compiled_loss, fused or plm._optimizer, graphs))
    report(
        f"## PLM training: batch {batch} ({per_task} x {len(tasks)} tasks), embed {s.embed_dim}, {s.n_layer} layers, "
        f"K={s.context}, K*={s.prompt_length}, bf16 autocast {bf16}; {args.steps} timed steps after warm-up"
    )
    rows, results = [], {}
    for name, draw, loss_fn, optimizer, use_graphs in variants:
        warmup = args.compile_warmup if loss_fn is compiled_loss and graphs else min(2, args.compile_warmup)
        t0 = time.perf_counter()
        sec = attempt(
            report, name, lambda: timed(make_step(draw, loss_fn, optimizer, use_graphs), args.steps, warmup, device)
        )
        total = time.perf_counter() - t0
        if sec is not None:
            results[name] = 1 / sec
            rows.append((name, f"{1 / sec:.1f}", f"{1000 * sec:.2f}", f"{total:.1f}"))
    report.table(("variant", "steps/s", "ms/step", "wall s incl. warm-up"), rows)

    samplers = [
        ("one draw per number + CPU gather + copy", draw_host(False)),
        ("batch draws + CPU gather + copy", draw_host(True)),
        ("batch draws + device gather", draw_device),
    ]
    rows = [(name, f"{1000 * timed(draw, max(args.steps, 20), 2, device):.2f}") for name, draw in samplers]
    report("Sampling alone (ms per batch of history + prompt windows):")
    report.table(("sampler", "ms/batch"), rows)
    return {
        "host_steps_s": results.get(variants[0][0], float("nan")),
        "device_steps_s": results.get(variants[2][0], float("nan")),
        "compiled_steps_s": max(
            (v for k, v in results.items() if "compiled" in k and "alone" not in k), default=float("nan")
        ),
    }


def diffuser_section(report: Report, args, suite, device: torch.device) -> dict[str, float]:
    spec = suite.spec
    task = suite.test_tasks[0]
    train = synthetic_episodes(list(suite.train_tasks)[:4], 2, spec.horizon, spec.obs_dim, spec.act_dim, seed=1)
    few_shot = synthetic_episodes([task], 1, spec.horizon, spec.obs_dim, spec.act_dim, seed=2)
    plm = PromptDT(suite, device=device, seed=0)
    mean, std = state_statistics([e for eps in train.values() for e in eps])
    plm.settings.state_mean, plm.settings.state_std = mean.tolist(), std.tolist()
    pd = PromptDiffuser(plm, seed=0)
    pd._prepare(few_shot, few_shot)  # what learn() does with the few-shot data before training
    sync = sync_of(device)

    # -- generation against one episode
    def generate(mode: bool | str) -> float:
        pd.diffusion.compile_chain = mode
        times = []
        for _ in range(args.compile_warmup if mode else 1):
            pd.generate_prompt(args.batch, task=task)
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            pd.generate_prompt(args.batch, task=task)
            sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    gen = {}
    for name, mode in (("plain", False), ("compiled (CUDA graphs)", True)):
        value = attempt(report, f"generation {name}", lambda: generate(mode))
        if value is not None:
            gen[name] = value
    pd.diffusion.compile_chain = False
    prompt = prompt_from_episode(few_shot[task][0], plm.settings.prompt_length, start=0)
    promptrl.evaluate(plm, suite, tasks=[task], n_episodes=1, prompt=prompt)  # warm-up
    t = time.perf_counter()
    promptrl.evaluate(plm, suite, tasks=[task], n_episodes=1, prompt=prompt)
    episode_s = time.perf_counter() - t
    report(f"## Prompt generation: N={pd.settings.n_steps}, batch {args.batch}, median of {args.repeats}")
    report.table(
        ("chain", "seconds", "share of one episode"),
        [(k, f"{v:.4f}", f"{100 * v / episode_s:.2f}%") for k, v in gen.items()]
        + [(f"one episode's evaluation ({spec.horizon} steps)", f"{episode_s:.3f}", "100%")],
    )

    # -- Table 4 fine-tuning
    def finetune(mode: bool | str) -> float:
        pd.diffusion.compile_chain = mode
        warm = args.compile_warmup if mode else 1
        pd._train(warm, None, False)
        sync()
        t = time.perf_counter()
        pd._train(args.finetune_steps, None, False)
        sync()
        return (time.perf_counter() - t) / args.finetune_steps

    ft = {}
    for name, mode in (
        ("plain", False),
        ("compiled chain, mode default", "default"),
        ("compiled chain, mode reduce-overhead", "reduce-overhead"),
    ):
        if mode and not will_compile(device):
            continue  # the CPU runs the plain chain for every mode
        value = attempt(report, f"fine-tune {name}", lambda: finetune(mode))
        if value is not None:
            ft[name] = value
    pd.diffusion.compile_chain = False
    report(
        f"## Table 4 fine-tuning: batch {pd.settings.batch_size}, update {pd.settings.update}, "
        f"{args.finetune_steps} timed steps, x {TABLE4_STEPS}"
    )
    report.table(
        ("reverse chain", "s/step", f"{TABLE4_STEPS} steps, s"),
        [(k, f"{v:.4f}", f"{v * TABLE4_STEPS:.1f}") for k, v in ft.items()],
    )
    best_gen = min(gen.values(), default=float("nan"))
    best_ft = min(ft.values(), default=float("nan"))
    return {
        "generation_plain_share": gen.get("plain", float("nan")) / episode_s,
        "generation_best_share": best_gen / episode_s,
        "finetune_plain_s": ft.get("plain", float("nan")) * TABLE4_STEPS,
        "finetune_best_s": best_ft * TABLE4_STEPS,
        "episode_s": episode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--suite", default="cheetah-vel")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (a smoke run)")
    parser.add_argument("--steps", type=int, default=200, help="timed PLM train steps per variant")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per training task (default: the suite's)")
    parser.add_argument("--per-task", type=int, default=None, help="sequences per task (default: the PLM's, 16)")
    parser.add_argument("--batch", type=int, default=64, help="prompts generated in one call")
    parser.add_argument("--repeats", type=int, default=20, help="timed generation calls")
    parser.add_argument("--finetune-steps", type=int, default=60, help="timed fine-tune steps per variant")
    parser.add_argument("--compile-warmup", type=int, default=6, help="calls before timing a compiled variant")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    suite = promptrl.load_suite(args.suite)
    if args.episodes is None:
        args.episodes = 4 if args.quick else suite.spec.episodes["expert"]
    if args.quick:
        args.steps, args.repeats, args.finetune_steps, args.compile_warmup = 2, 2, 2, 1
        args.per_task = args.per_task or 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = Report()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} torch threads"
    report(f"# gpu_train: {args.suite} on {where}, torch {torch.__version__}{' (--quick)' if args.quick else ''}")
    report(f"compiled variants: {'torch.compile' if will_compile(device) else 'the plain path (no CUDA)'}\n")
    start = time.perf_counter()
    plm = plm_section(report, args, suite, device)
    gen = diffuser_section(report, args, suite, device)
    report(f"total wall time {time.perf_counter() - start:.0f} s")
    report(
        f"RESULT host_steps_s={plm['host_steps_s']:.1f} device_steps_s={plm['device_steps_s']:.1f} "
        f"compiled_steps_s={plm['compiled_steps_s']:.1f} (goal >= 200) "
        f"generation_share_plain={gen['generation_plain_share']:.4f} "
        f"generation_share_best={gen['generation_best_share']:.4f} (goal <= 0.02) "
        f"finetune_table4_plain_s={gen['finetune_plain_s']:.1f} finetune_table4_best_s={gen['finetune_best_s']:.1f} "
        f"(goal <= 30)"
    )


if __name__ == "__main__":
    main()
