"""Why a Prompt Diffuser does or does not beat expert prompts: prompt fidelity and gradient balance.

    python benchmarks/diffuser_diagnostics.py fidelity [--suite ant-dir] [--task 0] [--steps 3000]
    python benchmarks/diffuser_diagnostics.py rules [--suite ant-dir] [--task 0] [--variants dm projection dt projection:100]
    python benchmarks/diffuser_diagnostics.py temperature [--suite ant-dir] [--temperatures 0 0.25 0.5 1] [--episodes 20]

The task defaults to the first of the suite's validation tasks (training tasks where it has none),
so that nothing here reads the test split unless ``--task`` names a test task.

``fidelity`` trains noise models from scratch on the prompt windows of one expert episode of a task
(L_DM only, AdamW lr 1e-3, batch 32) — the plain (Linear, Mish, Dropout) MLP with dropout 0.1 and
0, and the residual MLP with dropout 0.1 — and reports the final noise loss and how close samples
(temperature 0.5, conditioned on every real window's y) come to the data: RMS distance to their
own window and to the nearest window, in the normalized [-1, 1] units of x0, beside the spread of
the data itself.

``rules`` fine-tunes the shipped pre-trained generator (``hub_models/<suite>/pretrained``) on one
expert episode of the task (``--epochs`` x 100 steps, Table 4's other settings) once per variant
``rule[:guidance_weight]`` and reports the median norms of grad L_DM and grad L_DT, their median
cosine, how often they conflict (negative dot product: the projection case of Eq. 15), prompt
fidelity, the frozen PLM's action loss with generated against real prompts, on the ant suites the
direction of travel the generated prompts show (their mean torso velocity), and the test return
(``--episodes``; 0 skips the rollouts), with Prompt-DT-Expert's return on the same task and seed.
``temperature`` evaluates a Prompt Diffuser at several sampling temperatures (beta of Eq. 16) beside
Prompt-DT-Expert, over the same evaluation seeds: the shipped fine-tuned one (``hub_models/<suite>``)
on the task it was fine-tuned on, else the shipped pre-trained generator fine-tuned here
(``--epochs`` x 100 steps) on the task's first expert episode — on a training task, this chooses
the temperature without looking at the test split. All end with one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import promptrl
from promptrl import evaluate
from promptrl.data.episodes import episodes_of
from promptrl.data.windows import random_window, stack_windows, whole_windows
from promptrl.methods import baselines
from promptrl.methods.diffuser import PromptDiffuser
from promptrl.methods.plm import PromptDT
from promptrl.nn.diffusion import GaussianDiffusion, NoiseMLP


def fidelity(x0: torch.Tensor, generated: torch.Tensor) -> tuple[float, float]:
    """RMS distance of each generated x0 to the real x0 it was conditioned on, and to the nearest real x0."""
    own = (generated - x0).pow(2).mean(1).sqrt().mean().item()
    nearest = (torch.cdist(generated, x0) / math.sqrt(x0.shape[1])).min(1).values.mean().item()
    return own, nearest


ANT_VELOCITY = (13, 14)
"""Torso x and y velocity in the 27-dim Ant observation of the ant-dir suites."""


def prompt_direction(states: torch.Tensor) -> np.ndarray:
    """Direction (degrees in [0, 360)) of the mean planar torso velocity of each Ant prompt (B, K*, 27)."""
    v = states[..., list(ANT_VELOCITY)].mean(1).cpu().numpy()
    return np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360


def real_windows(pd: PromptDiffuser, episodes: list) -> tuple[torch.Tensor, torch.Tensor]:
    return pd.encode(whole_windows(episodes, pd.plm.settings.prompt_length, None, np.random.default_rng(0)))


def run_fidelity(args: argparse.Namespace, pd: PromptDiffuser, episodes: list) -> None:
    x0, y = real_windows(pd, episodes)
    spread = (x0 - x0.mean(0)).pow(2).mean(1).sqrt().mean().item()
    print(
        f"{args.suite} task {args.task}: {len(x0)} windows of {x0.shape[1]} features; RMS distance of a window to "
        f"the mean window {spread:.3f}\n"
    )
    print("| noise model | final L_DM | RMS to own window | RMS to nearest window | sample std / data std |")
    print("|---|---|---|---|---|")
    diffusion, results = GaussianDiffusion(pd.settings.n_steps), {}
    for name, residual, dropout in (
        ("plain, dropout 0.1", False, 0.1),
        ("plain, dropout 0", False, 0.0),
        ("residual, dropout 0.1", True, 0.1),
    ):
        torch.manual_seed(args.seed)
        model = NoiseMLP(x0.shape[1], y.shape[1], dropout=dropout, residual=residual)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(args.seed)
        losses = []
        for _ in range(args.steps):
            idx = torch.randint(0, len(x0), (32,), generator=gen)
            loss = diffusion.loss(model, x0[idx], y[idx], gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            sample = diffusion.sample(model, y, x0.shape[1], gen, temperature=0.5)
        own, nearest = fidelity(x0, sample)
        ratio = (sample.std(0).mean() / x0.std(0).mean()).item()
        results[name] = nearest
        print(f"| {name} | {np.mean(losses[-200:]):.3f} | {own:.3f} | {nearest:.3f} | {ratio:.2f} |")
    print(
        f"\nRESULT nearest_plain={results['plain, dropout 0.1']:.3f} nearest_plain_nodropout={results['plain, dropout 0']:.3f} "
        f"nearest_residual={results['residual, dropout 0.1']:.3f}"
    )


def run_rules(args: argparse.Namespace, suite: promptrl.TaskSuite, plm: PromptDT, few_shot, episodes: list) -> None:
    stats: list[tuple[float, float, float]] = []

    def recording(values: dict) -> None:  # the learn callback: gradient norms and cosine of every step
        if "grad_cos" in values:
            stats.append((values["grad_gen"], values["grad_dt"], values["grad_cos"]))

    pretrained = f"{args.hub}/{args.suite}/pretrained"
    # The real windows in x0 units: every variant starts from the same pre-trained token bounds.
    reference = PromptDiffuser.from_pretrained(pretrained, plm=plm)
    x0, y = real_windows(reference, episodes)
    rng = np.random.default_rng(args.seed)
    n = min(64, len(x0))  # history windows, one per prompt
    history = stack_windows(
        [random_window(episodes[0], plm.settings.context, plm._segment_spec(), rng) for _ in range(n)]
    )
    rows, returns = [], {}
    ant = suite.spec.goal_name == "angle"  # the prompts' planar direction is then worth a column
    if args.episodes:
        expert = baselines.FixedPrompt(plm, quality="expert", seed=args.seed).learn(few_shot, progress_bar=False)
        returns["expert"] = float(
            np.mean(
                evaluate(
                    expert, suite, tasks=[args.task], n_episodes=args.episodes, prompt=None, seed=args.seed
                ).returns[args.task]
            )
        )
    for variant in args.variants:
        rule, _, weight = variant.partition(":")
        pd = PromptDiffuser.from_pretrained(pretrained, plm=plm)
        pd.set_random_seed(args.seed)
        pd.settings.update, pd.settings.guidance_weight = rule, float(weight or 1.0)
        stats.clear()
        t = time.perf_counter()
        torch.manual_seed(args.seed)
        pd.learn(few_shot, epochs=args.epochs, steps_per_epoch=100, callback=recording, progress_bar=False)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            torch.manual_seed(args.seed)
            generated = pd._sample_x0(y, temperature=pd.settings.temperature)
            own, nearest = fidelity(x0, generated)
            loss_gen = plm.loss(history, pd._decode(generated[:n], y[:n])).item()
            loss_real = plm.loss(history, pd._decode(x0[:n], y[:n])).item()
            direction = np.median(prompt_direction(pd._raw_prompt(generated, y)[0])) if ant else float("nan")
        a = np.array(stats) if stats else np.full((1, 3), np.nan)
        if args.episodes:
            returns[variant] = float(
                np.mean(
                    evaluate(
                        pd, suite, tasks=[args.task], n_episodes=args.episodes, prompt=None, seed=args.seed
                    ).returns[args.task]
                )
            )
        rows.append(
            (
                variant,
                np.median(a[:, 0]),
                np.median(a[:, 1]),
                np.median(a[:, 2]),
                (a[:, 2] < 0).mean(),
                own,
                nearest,
                loss_gen,
                loss_real,
                direction,
                returns.get(variant, float("nan")),
                seconds,
            )
        )
        print(f"done {variant}", flush=True)
    print(
        f"\n{args.suite} task {args.task}, seed {args.seed}, {args.epochs * 100} fine-tuning steps from "
        f"{pretrained}; Prompt-DT-Expert return {returns.get('expert', float('nan')):.1f} "
        f"({args.episodes} episodes)"
    )
    if ant:
        real = np.median(prompt_direction(reference._raw_prompt(x0, y)[0]))
        print(
            f"goal direction {np.degrees(suite.spec.tasks[args.task][0]):.0f} degrees; the real windows' median "
            f"direction of travel {real:.0f}; prompt direction: the generated prompts' median"
        )
    print(
        "\n| rule[:weight] | median norm grad L_DM | median norm grad L_DT | median cosine | conflicts | RMS to own window "
        "| RMS to nearest window | L_DT generated / real prompt | prompt direction | return | fine-tune s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for v, g1, g2, cos, conf, own, near, lg, lr, d, ret, sec in rows:
        grads = "— | — | — | —" if math.isnan(g1) else f"{g1:.4f} | {g2:.4f} | {cos:+.3f} | {conf:.0%}"  # dm: no L_DT
        angle = "—" if math.isnan(d) else f"{d:.0f}"
        print(f"| {v} | {grads} | {own:.3f} | {near:.3f} | {lg:.4f} / {lr:.4f} | {angle} | {ret:.1f} | {sec:.0f} |")
    print("\nRESULT " + " ".join(f"return_{v.replace(':', '_w')}={r:.1f}" for v, r in returns.items()))


def run_temperature(args: argparse.Namespace, suite: promptrl.TaskSuite, plm: PromptDT, few_shot) -> None:
    shipped = PromptDiffuser.from_pretrained(f"{args.hub}/{args.suite}", plm=plm)
    if str(args.task) in (shipped.settings.conditions or {}):
        pd, source = shipped, f"{args.hub}/{args.suite} ({shipped.settings.steps_trained:,} steps trained)"
    else:  # e.g. a training task, to choose the temperature without looking at the test split
        pd = PromptDiffuser.from_pretrained(f"{args.hub}/{args.suite}/pretrained", plm=plm)
        pd.set_random_seed(args.seed)
        torch.manual_seed(args.seed)
        pd.learn(few_shot, epochs=args.epochs, steps_per_epoch=100, progress_bar=False)
        source = f"{args.hub}/{args.suite}/pretrained fine-tuned {args.epochs * 100} steps on the task's first expert episode"
    expert = baselines.FixedPrompt(plm, quality="expert", seed=args.seed).learn(few_shot, progress_bar=False)
    split = "test" if args.task in suite.test_tasks else "training"
    print(f"{args.suite} {split} task {args.task}, {source}, {args.episodes} episodes, seed {args.seed}\n")
    print("| prompts | return (mean ± std over episodes) |\n|---|---|")
    means = {}
    for t in [None, *args.temperatures]:
        if t is not None:
            pd.settings.temperature = t
            pd.set_random_seed(args.seed)
        r = evaluate(
            expert if t is None else pd, suite, tasks=[args.task], n_episodes=args.episodes, prompt=None, seed=args.seed
        ).returns[args.task]
        means["expert" if t is None else f"t{t:g}"] = float(np.mean(r))
        name = "Prompt-DT-Expert" if t is None else f"Prompt Diffuser, temperature {t:g}"
        print(f"| {name} | {np.mean(r):.1f} ± {np.std(r):.1f} |", flush=True)
    print("\nRESULT " + " ".join(f"return_{k}={m:.1f}" for k, m in means.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("fidelity", "rules", "temperature"))
    parser.add_argument("--suite", default="ant-dir")
    parser.add_argument(
        "--task",
        type=int,
        default=None,
        help="default: the first task of the suite's selection split (never a test task)",
    )
    parser.add_argument("--hub", default="hub_models")
    parser.add_argument("--steps", type=int, default=3000, help="fidelity: training steps per noise model")
    parser.add_argument(
        "--variants", nargs="+", default=["dm", "projection", "dt"], help="rules: rule[:guidance_weight]"
    )
    parser.add_argument("--epochs", type=int, default=3, help="rules, temperature: fine-tuning epochs of 100 steps")
    parser.add_argument(
        "--episodes", type=int, default=5, help="rules, temperature: evaluation episodes (rules: 0 for none)"
    )
    parser.add_argument(
        "--temperatures", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0], help="temperature: the betas"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = promptrl.load_suite(args.suite)
    args.task = suite.split(suite.selection_split)[0] if args.task is None else suite.check_task(args.task)
    plm = PromptDT.from_pretrained(f"{args.hub}/{args.suite}/plm")
    few_shot = suite.dataset(args.task, "expert", episodes=1)
    episodes = episodes_of(few_shot)
    if args.part == "temperature":
        run_temperature(args, suite, plm, few_shot)
    elif args.part == "fidelity":
        pd = PromptDiffuser.from_pretrained(f"{args.hub}/{args.suite}/pretrained", plm=plm)  # for its token bounds
        run_fidelity(args, pd, episodes)
    else:
        run_rules(args, suite, plm, few_shot, episodes)


if __name__ == "__main__":
    main()
