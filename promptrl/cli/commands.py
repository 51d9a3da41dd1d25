"""What each ``promptrl`` subcommand does, given its parsed arguments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from promptrl.cli.options import checked_tasks, given, home
from promptrl.common.hub import resolve_model_path
from promptrl.suites import load_suite

PLM_FIELDS = (
    "use_prompt",
    "embed_dim",
    "n_layer",
    "n_head",
    "activation",
    "dropout",
    "context",
    "prompt_length",
    "learning_rate",
    "weight_decay",
    "warmup_steps",
    "batch_per_task",
    "grad_clip",
    "prompt_window",
    "bf16",
    "compile",
)
"""Fields of :class:`~promptrl.methods.plm.PromptDTSettings` that ``train plm`` takes as options."""
GENERATOR_FIELDS = (
    "update",
    "learning_rate",
    "batch_size",
    "weight_decay",
    "grad_clip",
    "guidance_weight",
    "temperature",
    "bf16_plm",
)
"""Fields of :class:`~promptrl.methods.diffuser.PromptDiffuserSettings` that ``train diffuser`` takes as options."""


def cmd_suites(args: argparse.Namespace) -> None:
    from promptrl.data.datasets import suites_table

    print(suites_table(args.specs or None))


def cmd_data(args: argparse.Namespace) -> None:
    from promptrl.data.datasets import create_datasets

    suite = load_suite(args.suite)
    tasks = checked_tasks(suite.spec, args.tasks) or suite.split("all")
    for quality in args.quality:
        created = create_datasets(
            suite, quality, tasks=tasks, episodes=args.episodes, seed=args.seed, progress_bar=True
        )
        print(f"{suite.name} {quality}: {len(created)} dataset(s) created, {len(tasks) - len(created)} reused")


def cmd_train_plm(args: argparse.Namespace) -> None:
    """``train plm``; under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs it in one process group
    (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``) and rank 0 alone writes and prints."""
    from promptrl.common.distributed import process_group_from_env

    with process_group_from_env(args.device) as device:
        args.device = device  # this rank's GPU under torchrun
        _train_plm(args)


def _train_plm(args: argparse.Namespace) -> None:
    import contextlib
    import csv
    import time

    import torch

    from promptrl.common.distributed import is_main
    from promptrl.common.files import csv_text, latest_folder, saved_steps, write_text_atomic
    from promptrl.evaluation import BestCheckpoint
    from promptrl.methods.plm import PromptDT, train_plm, training_bf16

    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    out = Path(args.out) if args.out else home() / "plm" / suite.name
    out.mkdir(parents=True, exist_ok=True)
    main = is_main()  # the rank that writes logs, checkpoints and the model
    hyper = given(args, PLM_FIELDS)  # the settings of a new run; a resumed run keeps its own
    done = saved_steps(latest_folder(out / "checkpoint", "progress.json"))  # read, not loaded: train_plm loads it
    tensorboard = _tensorboard(out / "tensorboard") if main else None
    if main:
        print(
            f"training a {'Prompt-DT' if hyper.get('use_prompt', True) else 'MT-ORL'} on {suite.name} in {out}: "
            f"{done}/{args.steps} steps done (log: {out / 'progress.csv'}"
            f"{', ' + str(out / 'tensorboard') if tensorboard else ''})"
        )
    log_path = out / "progress.csv"
    new = not log_path.exists()
    rows = [] if new else list(csv.DictReader(log_path.open()))
    if main and any(int(r["step"]) > done for r in rows):  # logged after the checkpoint a killed run resumes from
        rows = [r for r in rows if int(r["step"]) <= done]
        write_text_atomic(log_path, csv_text(["step", "loss", "seconds"], [list(r.values()) for r in rows]))
    elapsed = float(rows[-1]["seconds"]) if rows else 0.0  # a resumed run's clock goes on from there
    with open(log_path, "a", newline="") if main else contextlib.nullcontext() as f:
        writer = csv.writer(f) if main else None
        if new and main:
            writer.writerow(["step", "loss", "seconds"])
        start, losses = time.time() - elapsed, []

        def log_step(info: dict) -> None:
            losses.append(info["loss"])
            if info["step"] % args.log_steps == 0:
                mean = sum(losses) / len(losses)
                writer.writerow([info["step"], f"{mean:.5f}", f"{time.time() - start:.0f}"])
                f.flush()
                losses.clear()
                if tensorboard:
                    tensorboard.add_scalar("train/loss", mean, info["step"])
                    tensorboard.add_scalar(
                        "train/learning_rate", info["model"]._scheduler.get_last_lr()[0], info["step"]
                    )

        def after_checkpoint(model: PromptDT) -> None:
            if selector is not None:
                result = selector(model)
                print(
                    f"step {model.settings.steps_trained}: {selector.split}-split return {result.mean:.1f} "
                    f"+- {result.std:.1f} (best: step {selector.best_step})"
                )
            if tensorboard:
                tensorboard.flush()

        def card(model: PromptDT) -> str:
            s = model.settings
            counts = sorted({d.total_episodes for d in suite.datasets("train", args.quality)})
            episodes = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            return (
                f"Command: `{command_line(args)}`\n\n{'MT-ORL (no prompt)' if not s.use_prompt else 'Multi-task, prompt-augmented'} "
                f"training on the {args.quality} datasets of the {len(suite.train_tasks)} training tasks of `{suite.name}` "
                f"({episodes} episode{'s' if counts[-1] > 1 else ''} each, made by `promptrl data {suite.spec.cli_arg}`): {s.steps_trained:,} steps "
                f"of {s.batch_per_task} sequences per task, AdamW lr {s.learning_rate:g}, weight decay {s.weight_decay:g}, "
                f"warm-up {s.warmup_steps:,} steps, bf16 autocast {training_bf16(s.bf16, args.device)}, "
                f"{f'prompts: {s.prompt_window} windows, ' if s.use_prompt else ''}seed {args.seed}."
            )

        def final_card(model: PromptDT) -> str:
            if selector is None:
                return card(model)
            return (
                f"{card(model)}\n\n**Selection.** None: this is the run's last step. The checkpoint chosen on the "
                f"{selector.split} split (step {selector.best_step:,}) is in `best/`."
            )

        selector = None
        if args.eval_episodes and main:
            selector = BestCheckpoint(
                suite,
                out / "best",
                out / "eval.csv",
                args.eval_episodes,
                n_tasks=args.eval_tasks,
                seed=args.seed,
                model_card=card,
                tensorboard=tensorboard,
            )
            resumed = PromptDT.load_checkpoint(out / "checkpoint", device=args.device) if done else None
            if resumed is not None:  # a killed run may have stopped between its checkpoint and the choice
                selector.catch_up(resumed)
        train_plm(
            suite,
            out,
            args.steps,
            quality=args.quality,
            device=args.device,
            seed=args.seed,
            checkpoint_steps=args.checkpoint_steps,
            callback=log_step if main else None,
            on_checkpoint=after_checkpoint,
            model_card=final_card,
            progress_bar=main,
            **hyper,
        )
    if tensorboard:
        tensorboard.close()
    if main:
        print(f"done: {out / 'final'}")
        if selector is not None:
            print(f"selected on the {selector.split} split: {out / 'best'} (step {selector.best_step})")


def _tensorboard(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` into ``folder`` when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        return None
    return SummaryWriter(str(folder))


def generator_card(pd, what: str, args: argparse.Namespace) -> str:
    """The training paragraph of a generator's model card: the command, what was done and the settings."""
    s = pd.settings
    return (
        f"Command: `{command_line(args)}`\n\nThe generator was {what}: {s.steps_trained:,} steps in total so far, batch {s.batch_size}, "
        f"AdamW lr {s.learning_rate:g}, betas {tuple(s.betas)}, weight decay {s.weight_decay:g}, grad-norm clip {s.grad_clip}, "
        f"update rule `{s.update}`, guidance weight {s.guidance_weight:g}, N={s.n_steps} ({s.schedule} schedule), "
        f"sampling temperature {s.temperature:g}{', PLM under bf16 autocast in L_DT' if s.bf16_plm else ''}; the PLM stayed frozen."
    )


def cmd_train_diffuser(args: argparse.Namespace) -> None:
    """``train diffuser``; under ``torchrun`` (``WORLD_SIZE`` > 1) every rank runs it in one process
    group (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``) and rank 0 alone writes and prints."""
    from promptrl.common.distributed import process_group_from_env

    with process_group_from_env(args.device) as device:
        args.device = device  # this rank's GPU under torchrun
        _train_diffuser(args)


def _train_diffuser(args: argparse.Namespace) -> None:
    import torch

    from promptrl.methods.diffuser import PRETRAIN_RECIPE
    from promptrl.methods.plm import PromptDT

    torch.set_num_threads(args.threads)
    if args.epochs is None:
        args.epochs = 40 if args.stage == "pretrain" else 20
    suite = load_suite(args.suite)
    hub = Path(args.hub) / suite.name
    plm = PromptDT.from_pretrained(Path(args.plm) if args.plm else hub / "plm", device=args.device)
    settings = given(args, GENERATOR_FIELDS)
    if args.stage != "pretrain":
        raise ValueError(
            f"--stage {args.stage}: the library's command pre-trains only; the `promptrl` command fine-tunes "
            "(promptrl.experiments.cli)"
        )
    recipe = {k: settings.pop(k, v) for k, v in PRETRAIN_RECIPE.items()}
    _pretrain_generator(args, suite, plm, hub / "pretrained", recipe, settings)


def _pretrain_generator(
    args: argparse.Namespace, suite, plm, folder: Path, recipe: dict[str, Any], settings: dict[str, Any]
) -> None:
    """Generator pre-training on the training tasks with its ``recipe`` (update rule, learning rate,
    batch), saved every 1,000 steps (resumes); the saved config holds the fine-tuning settings
    (``settings`` where given, else Table 4's)."""
    from promptrl.common.distributed import is_main
    from promptrl.common.files import saved_steps
    from promptrl.methods.diffuser import pretrain_generator

    data = suite.datasets("train", "expert")
    total = args.epochs * 100
    main = is_main()
    if main:
        print(
            f"pre-training the {suite.name} prompt generator on {len(data)} training tasks ({recipe}): "
            f"{saved_steps(folder):,}/{total:,} steps done, saved every 1,000 steps to {folder}"
        )
    what = (
        f"pre-trained on the expert datasets of the {len(data)} training tasks of `{suite.name}` with update rule "
        f"`{recipe['update']}`, learning rate {recipe['learning_rate']:g} and batch {recipe['batch_size']}; the "
        f"settings below are those saved for fine-tuning"
    )
    pretrain_generator(
        plm,
        data,
        folder,
        total,
        recipe=recipe,
        seed=args.seed,
        model_card=lambda pd: generator_card(pd, what, args),
        progress_bar=main,
        **settings,
    )
    if main:
        print(f"saved {folder}")


def command_line(args: argparse.Namespace) -> str:
    """The command as typed, for model cards and result files, without ``--out`` and ``--hub`` and with an
    absolute path cut to its last part (where a run kept its files is nobody else's business)."""
    import shlex

    words, skip = [], False
    for a in args.argv:
        if skip or a in ("--out", "--hub") or a.startswith(("--out=", "--hub=")):
            skip = a in ("--out", "--hub")
            continue
        words.append(Path(a).name if Path(a).is_absolute() else a)
    return "promptrl " + " ".join(shlex.quote(a) for a in words)


def cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from promptrl.data.datasets import dataset_exists
    from promptrl.evaluation import check_fits, evaluate
    from promptrl.methods.base import PLM_FOLDER
    from promptrl.methods.diffuser import PromptDiffuser
    from promptrl.methods.plm import PromptDT

    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    checked_tasks(suite.spec, args.tasks)
    folder = resolve_model_path(args.model)  # hub_models/<suite> from anywhere; a Hub repo id stays as it is
    if args.plm is not None and args.record:
        raise ValueError("--record writes into a model folder that holds its PLM; drop --plm or --record")
    if args.plm is not None or (Path(folder) / PLM_FOLDER).is_dir():
        # a Prompt Diffuser folder: generated prompts, then its PLM's expert prompts
        given = (
            {}
            if args.plm is None
            else {"plm": PromptDT.from_pretrained(resolve_model_path(args.plm), device=args.device)}
        )
        model = PromptDiffuser.from_pretrained(folder, device=args.device, **given)
        runs = [("generated", model, None)]
        check_fits(model, suite)  # sizes first: task ids of another suite are not its tasks
        tasks = args.tasks or suite.split(args.split)
        unserved = [t for t in tasks if t not in model.served_tasks()]
        if unserved and not args.zero_shot:
            raise ValueError(
                f"--tasks: the model holds generators or few-shot data of tasks {model.served_tasks()} only, not "
                f"of {unserved}; pass --tasks from those, or --zero-shot to give the others prompts made from "
                "every task it learned"
            )
        model.zero_shot = args.zero_shot
        missing = [t for t in tasks if not dataset_exists(suite.dataset_id(t, "expert"))]
        if missing:
            print(
                f"no expert datasets for tasks {missing}, so no expert-prompt comparison "
                f"(create them with `promptrl data {suite.spec.cli_arg} --quality expert`)"
            )
        else:
            runs.append(("expert (the frozen PLM)", model.plm, "expert"))
    else:
        model = PromptDT.from_pretrained(folder, device=args.device)
        runs = (
            [(q, model, q) for q in args.prompt or ["expert", "random"]]
            if model.settings.use_prompt
            else [("none (MT-ORL)", model, "expert")]
        )  # MT-ORL ignores the prompt
    one_task = args.tasks is not None and len(args.tasks) == 1
    spread = "over episodes" if one_task else "over tasks of the per-task means"
    lines = [
        f"Command: `{command_line(args)}` ({args.episodes} episode{'s' if args.episodes > 1 else ''} per task, "
        f"seed {args.seed}, {args.threads} torch thread{'s' if args.threads > 1 else ''}, "
        f"{torch.backends.cpu.get_cpu_capability()} CPU kernels; sample std, ddof=1).\n",
        f"| prompt | {'tasks ' + str(args.tasks) if args.tasks else args.split + '-split'} return (mean ± std {spread}) "
        "| per task: mean [95% CI over episodes] |",
        "|---|---|---|",
    ]
    eval_results = []
    for label, policy, prompt in runs:
        result = evaluate(
            policy,
            args.suite,
            split=args.split,
            n_episodes=args.episodes,
            prompt=prompt,
            seed=args.seed,
            progress_bar=True,
            tasks=args.tasks,
        )
        print(f"prompt: {label}\n{result}")
        per_task = ", ".join(f"{t}: {np.mean(r):.1f}{_interval(result.task_ci(t))}" for t, r in result.returns.items())
        std = result.task_std(next(iter(result.returns))) if one_task else result.std
        lines.append(f"| {label} | {result.mean:.1f} ± {std:.1f} | {per_task} |")
        eval_results.append(_eval_result(args, label, result.mean, std))
    if args.record:
        if not Path(folder).is_dir():
            raise ValueError("--record writes the results into a local model folder; the model is not one")
        model.settings.model_card = {
            **(model.settings.model_card or {}),
            "results": "\n".join(lines),
            "eval_results": eval_results,
        }
        model.save_pretrained(folder)
        print(f"recorded in {Path(folder) / 'README.md'}")


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]"


def _eval_result(args: argparse.Namespace, label: str, mean: float, std: float) -> dict[str, Any]:
    """One measured return as keyword arguments of ``huggingface_hub.EvalResult`` (the card's
    ``model-index``), in Stable-Baselines3's format: ``mean_reward`` valued ``"mean +/- std"``."""
    tasks = f"tasks {', '.join(map(str, args.tasks))}" if args.tasks else f"{args.split} split"
    what = {"none (MT-ORL)": "no prompt", "expert (the frozen PLM)": "the frozen PLM with expert prompts"}.get(
        label, f"{label} prompts"
    )
    return {
        "task_type": "reinforcement-learning",
        "task_name": "reinforcement-learning",
        "dataset_type": load_suite(args.suite).env_id,
        "dataset_name": f"{load_suite(args.suite).name} ({tasks})",
        "dataset_split": args.split,
        "metric_type": "mean_reward",
        "metric_name": f"mean_reward ({what})",
        "metric_value": f"{mean:.2f} +/- {std:.2f}",
        "verified": False,
    }
