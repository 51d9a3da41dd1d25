"""Table 8: the prompt length K*."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from promptrl.data.datasets import create_datasets
from promptrl.experiments.ablations.common import (
    DEFAULT_BUDGET,
    csv_row,
    measure,
    ours,
    runs_folder,
    write_ablation,
)
from promptrl.experiments.executors import Executor
from promptrl.experiments.paper import paper
from promptrl.experiments.reproduce import (
    Budget,
    Context,
    Setup,
)
from promptrl.experiments.tables import mean_std
from promptrl.methods.diffuser import pretrain_generator
from promptrl.methods.plm import train_plm
from promptrl.suites import load_suite
from promptrl.tasks.spec import load_spec

PROMPT_LENGTHS = ("2", "5", "10", "40", "40 (larger N)")


def _build_length(_: str, ctx: Context, task: int, seed: int, gen: Path) -> Any:
    """The generator pre-trained in ``gen`` for the context's PLM, fine-tuned on the task's few-shot data."""
    from promptrl.methods.diffuser import PromptDiffuser

    pd = PromptDiffuser.from_pretrained(gen, plm=ctx.plm, device=ctx.device)
    pd.set_random_seed(seed)
    b = ctx.budget
    return pd.learn(ctx.few_shot(task), epochs=b.epochs, steps_per_epoch=b.steps_per_epoch, progress_bar=False)


def prompt_length(
    suite_name: str = "cheetah-vel",
    budget: Budget = DEFAULT_BUDGET,
    out: str | Path = "results/ablations",
    device: str = "cpu",
    n_tasks: int | None = None,
    plm_steps: int = 1000,
    generator_steps: int = 2000,
    lengths: Sequence[str] = PROMPT_LENGTHS,
    larger_n: int = 200,
    plm_settings: dict[str, Any] | None = None,
    generator_settings: dict[str, Any] | None = None,
    collect: bool = False,
    command: str = "promptrl ablate prompt-length cheetah-vel",
    executor: Executor | None = None,
) -> Path:
    """Table 8: for each prompt length K*, a Prompt-DT trained with K*-step prompts (``plm_steps`` steps
    of 4 sequences per task, warm-up 500, lr 2e-4: the same budget for every length, K* = 5
    included, so the lengths compare fairly), a generator pre-trained ``generator_steps`` steps, then
    the Prompt Diffuser fine-tuned per test task and evaluated. "40 (larger N)" uses ``larger_n``
    diffusion steps instead of 100. ``plm_settings`` / ``generator_settings`` override the models'
    other settings (e.g. smaller ones). ``collect=True`` trains and runs nothing: it tabulates the
    finished lengths ("not run" for the others). ``executor`` runs each length's units on its workers
    (the models are trained here first)."""
    suite_ref, suite_name = suite_name, load_spec(suite_name).name  # loads from suite_ref; folders take the name
    out = Path(out)
    suite = load_suite(suite_ref)
    tasks = suite.test_tasks[:n_tasks] if n_tasks else suite.test_tasks
    create_datasets(suite, "expert", tasks=tasks, progress_bar=True)
    runs = runs_folder(out, "prompt-length", suite_name, budget, tasks)
    ref = paper("table8_prompt_length")
    rows, body = (
        [],
        [
            f"Every length has its own Prompt-DT ({plm_steps:,} steps, 4 sequences per task) and generator "
            f"({generator_steps:,} L_DM steps), then Table 1's per-task fine-tuning. Test tasks {list(tasks)}. "
            f"Paper: {ref['_note']}\n",
            "| prompt length | N | ours | paper |",
            "|---|---|---|---|",
        ],
    )
    for label in lengths:
        k, n_steps = int(label.split()[0]), (larger_n if "larger" in label else 100)
        models = runs / "models" / f"K{k}-plm{plm_steps}"
        gen = models / f"generator-N{n_steps}-steps{generator_steps}"
        label_k = f"K{k}-N{n_steps}-plm{plm_steps}-gen{generator_steps}"
        theirs = ref.get(label) if suite_name == "cheetah-vel" else None
        if collect and not (runs / label_k).is_dir():
            body.append(f"| {label} | {n_steps} | not run | {mean_std(theirs)} |")
            continue
        hyper = {
            "batch_per_task": 4,
            "warmup_steps": 500,
            "learning_rate": 2e-4,
            **(plm_settings or {}),
            "prompt_length": k,
        }
        plm = train_plm(suite_ref, models / "plm", plm_steps, device=device, checkpoint_steps=250, **hyper)
        pretrain_generator(
            plm,
            suite.datasets("train", "expert"),
            gen,
            generator_steps,
            save_steps=generator_steps,
            **{**(generator_settings or {}), "n_steps": n_steps},
        )
        setup = Setup(
            load_spec(suite_ref).ref,
            budget,
            gen,
            device,
            tuple(tasks),
            qualities=("expert",),
            plm=models / "plm" / "final",
        )
        ctx = Context(suite, budget, gen, device, list(tasks), plm=plm, setup=setup)
        r = measure(ctx, label_k, partial(_build_length, gen=gen), runs, collect, executor)
        if r is None:
            body.append(f"| {label} | {n_steps} | not run | {mean_std(theirs)} |")
            continue
        body.append(f"| {label} | {n_steps} | {ours(r)} | {mean_std(theirs)} |")
        rows.append(csv_row(r, prompt_length=k, n_steps=n_steps) | {"paper": mean_std(theirs)})
    return write_ablation(
        out, f"prompt-length-{suite_name}", f"Prompt length (Table 8), {suite_name}", command, budget, body, rows
    )
