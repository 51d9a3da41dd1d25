"""The promptrl command: task suites, datasets, training, evaluation, the Table 1 reproduction and the ablations."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import logging
import math
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from promptrl.common.hub import resolve_model_path
from promptrl.suites import load_suite
from promptrl.tasks.spec import QUALITIES, available_suites


def home() -> Path:
    """Where long jobs keep their runs: ``$PROMPTRL_HOME`` or ``~/.promptrl``."""
    return Path(os.environ.get("PROMPTRL_HOME", Path.home() / ".promptrl"))


# ----------------------------------------------------------------------------- argument types
def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (``what`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
"""Counts: steps, episodes, seeds, threads..."""
non_negative_int = int_at_least(0, "a non-negative integer")
"""Seeds, and counts where 0 turns a step off."""


def float_in(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [``low``, ``high``] (``(low, high]`` with ``open_low``)."""
    if high == math.inf:
        what = "a finite number" + ("" if low == -math.inf else f" {'>' if open_low else '>='} {low:g}")
    else:
        what = f"a finite number in {'(' if open_low else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (open_low and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


finite_float = float_in()
positive_float = float_in(0.0, open_low=True)
"""Learning rates, rates and durations."""
unit_float = float_in(0.0, 1.0)
"""Fractions and probabilities."""


def auto_on_off(text: str) -> bool | None:
    """An argparse type: ``auto`` (None: the library decides), ``on`` (True) or ``off`` (False)."""
    values = {"auto": None, "on": True, "off": False}
    if text not in values:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return values[text]


# ----------------------------------------------------------------------------- options from dataclasses
@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of dataclass ``cls`` and its bases: the string literal written right
    after the field, with whitespace collapsed and reST markup removed."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (a builtin or a class made at run time)
            continue
        body = ast.parse(source).body[0].body
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", " ".join(after.value.value.split()))
                docs[node.target.id] = text.replace("``", "")
    return docs


def _option_type(annotation: Any) -> tuple[Any, bool]:
    """``annotation`` without ``| None``, and whether None was part of it."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _type_kwargs(cls: type, name: str, annotation: Any) -> dict[str, Any]:
    """add_argument keywords for a field of this type: bool -> ``--flag/--no-flag``, int (non-negative)
    and float (finite) -> a checked value, str, tuple[X, X] -> two values, list[X] / tuple[X, ...] -> one or more."""
    scalar = {int: non_negative_int, float: finite_float, str: str}
    annotation, _ = _option_type(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in scalar:
        return {"type": scalar[annotation]}
    if origin in (list, tuple) and args and args[0] in scalar and len(set(args) - {Ellipsis}) == 1:
        nargs = len(args) if origin is tuple and Ellipsis not in args else "+"
        return {"type": scalar[args[0]], "nargs": nargs, "metavar": args[0].__name__.upper()}
    raise TypeError(f"{cls.__name__}.{name} has the type {annotation!r}, which has no command-line option")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(map(_shown, value))
    return (
        "none"
        if value is None
        else (f"{value:,}" if isinstance(value, int) else f"{value:g}" if isinstance(value, float) else str(value))
    )


def add_dataclass_options(
    parser: argparse.ArgumentParser,
    cls: type,
    fields: Sequence[str],
    *,
    defaults_text: Mapping[str, str] | None = None,
    note: str = "",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Add one ``--kebab-case`` option per field in ``fields`` of dataclass ``cls``.

    The option's type comes from the field's annotation (see :func:`_type_kwargs`), its help from the
    field's docstring followed by "(default: <the field's default><note>)"; ``defaults_text`` replaces
    the default shown for some fields. Every option parses to None unless given, so that the caller
    keeps the dataclass's (or a saved model's) value: :func:`given` collects the given ones.
    ``overrides[field]`` holds add_argument keywords that replace the derived ones (a ``type`` or
    ``action`` replaces how the value parses), and ``"flags"``, the option strings (e.g. ``["--updates"]``)."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    docs = field_docs(cls)
    for name in fields:
        if name not in known:
            raise ValueError(f"{cls.__name__} has no field {name!r}; its fields are {list(known)}")
        field = known[name]
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        shown = (defaults_text or {}).get(name, _shown(default))
        kwargs: dict[str, Any] = {
            **_type_kwargs(cls, name, hints[name]),
            "default": None,
            "dest": name,
            "help": f"{docs.get(name, name.replace('_', ' '))} (default: {shown}{note})".replace("%", "%%"),
        }
        extra = dict((overrides or {}).get(name, {}))
        flags = extra.pop("flags", ["--" + name.replace("_", "-")])
        if "type" in extra or "action" in extra:  # the override says how the value parses
            for key in ("action", "nargs", "metavar"):
                kwargs.pop(key, None)
        parser.add_argument(*flags, **{**kwargs, **extra})


def given(args: argparse.Namespace, fields: Sequence[str]) -> dict[str, Any]:
    """The options among ``fields`` that the command line gave (not None), as keyword arguments."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


COMMON_OPTIONS: dict[str, dict[str, Any]] = {
    "device": {"default": "cpu", "help": "torch device (cpu, cuda, cuda:1...)"},
    "seed": {"type": non_negative_int, "default": 0, "help": "random seed"},
    "threads": {"type": positive_int, "default": 1, "help": "torch threads"},
    "hub": {"default": "hub_models", "help": "where the shipped models live"},
}
"""Options several commands share."""


def add_common_options(parser: argparse.ArgumentParser, *names: str, **changes: Mapping[str, Any]) -> None:
    """Add the :data:`COMMON_OPTIONS` ``names``; ``changes[name]`` replaces some of an option's keywords."""
    for name in names:
        parser.add_argument(f"--{name}", **{**COMMON_OPTIONS[name], **changes.get(name, {})})


def cmd_suites(args: argparse.Namespace) -> None:
    from promptrl.data.datasets import suites_table

    print(suites_table())


def cmd_data(args: argparse.Namespace) -> None:
    from promptrl.data.datasets import create_datasets

    suite = load_suite(args.suite)
    tasks = args.tasks if args.tasks is not None else suite.split("all")
    for quality in args.quality:
        created = create_datasets(
            suite, quality, tasks=tasks, episodes=args.episodes, seed=args.seed, progress_bar=True
        )
        print(f"{args.suite} {quality}: {len(created)} dataset(s) created, {len(tasks) - len(created)} reused")


def cmd_train_expert(args: argparse.Namespace) -> None:
    import torch

    from promptrl.experiments.sac import SACConfig, SACTrainer, export_expert

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else home() / "experts" / args.suite
    if args.export_only:
        for quality, path in export_expert(args.suite, out).items():
            print(f"{quality} weights written to {path}")
        return
    cfg = SACConfig(**given(args, SAC_FIELDS))
    print(f"training the {args.suite} expert in {out} (progress in {out / 'progress.csv'})")
    SACTrainer(args.suite, out, cfg).run()


def cmd_train_plm(args: argparse.Namespace) -> None:
    import csv
    import time

    import torch

    from promptrl.common.files import latest_folder, saved_steps
    from promptrl.methods.plm import PromptDT, train_plm, training_bf16

    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    out = Path(args.out) if args.out else home() / "plm" / args.suite
    out.mkdir(parents=True, exist_ok=True)
    hyper = given(args, PLM_FIELDS)  # the settings of a new run; a resumed run keeps its own
    done = saved_steps(latest_folder(out / "checkpoint", "progress.json"))  # read, not loaded: train_plm loads it
    tensorboard = _tensorboard(out / "tensorboard")
    print(
        f"training a {'Prompt-DT' if hyper.get('use_prompt', True) else 'MT-ORL'} on {args.suite} in {out}: "
        f"{done}/{args.steps} steps done (log: {out / 'progress.csv'}"
        f"{', ' + str(out / 'tensorboard') if tensorboard else ''})"
    )
    log_path = out / "progress.csv"
    new = not log_path.exists()
    rows = [] if new else list(csv.DictReader(log_path.open()))
    elapsed = float(rows[-1]["seconds"]) if rows else 0.0  # a resumed run's clock goes on from there
    with open(log_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
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
            if args.eval_episodes:
                _log_evaluation(model, suite, out / "eval.csv", args.eval_episodes, args.seed, tensorboard)
            if tensorboard:
                tensorboard.flush()

        def card(model: PromptDT) -> str:
            s = model.settings
            counts = sorted({d.total_episodes for d in suite.datasets("train", args.quality)})
            episodes = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            return (
                f"Command: `{command_line(args)}`\n\n{'MT-ORL (no prompt)' if not s.use_prompt else 'Multi-task, prompt-augmented'} "
                f"training on the {args.quality} datasets of the {len(suite.train_tasks)} training tasks of `{args.suite}` "
                f"({episodes} episode{'s' if counts[-1] > 1 else ''} each, made by `promptrl data {args.suite}`): {s.steps_trained:,} steps "
                f"of {s.batch_per_task} sequences per task, AdamW lr {s.learning_rate:g}, weight decay {s.weight_decay:g}, "
                f"warm-up {s.warmup_steps:,} steps, bf16 autocast {training_bf16(s.bf16, args.device)}, "
                f"{f'prompts: {s.prompt_window} windows, ' if s.use_prompt else ''}seed {args.seed}."
            )

        train_plm(
            suite,
            out,
            args.steps,
            quality=args.quality,
            device=args.device,
            seed=args.seed,
            checkpoint_steps=args.checkpoint_steps,
            callback=log_step,
            on_checkpoint=after_checkpoint,
            model_card=card,
            **hyper,
        )
    if tensorboard:
        tensorboard.close()
    print(f"done: {out / 'final'}")


def _tensorboard(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` into ``folder`` when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        return None
    return SummaryWriter(str(folder))


def _log_evaluation(model, suite, path: Path, episodes: int, seed: int, tensorboard: Any = None) -> None:
    """Append the test-split return with expert prompts (no prompt for MT-ORL) to a CSV (and TensorBoard)."""
    from promptrl.evaluation import evaluate

    result = evaluate(model, suite, split="test", n_episodes=episodes, prompt="expert", seed=seed)
    if tensorboard:
        tensorboard.add_scalar("eval/test_return", result.mean, model.settings.steps_trained)
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write("step,test_return,test_std\n")
        f.write(f"{model.settings.steps_trained},{result.mean:.2f},{result.std:.2f}\n")
    print(f"step {model.settings.steps_trained}: test return {result.mean:.1f} +- {result.std:.1f}")


def _generator_card(pd, what: str, args: argparse.Namespace) -> str:
    s = pd.settings
    return (
        f"Command: `{command_line(args)}`\n\nThe generator was {what}: {s.steps_trained:,} steps in total so far, batch {s.batch_size}, "
        f"AdamW lr {s.learning_rate:g}, betas {tuple(s.betas)}, weight decay {s.weight_decay:g}, grad-norm clip {s.grad_clip}, "
        f"update rule `{s.update}`, guidance weight {s.guidance_weight:g}, N={s.n_steps} ({s.schedule} schedule), "
        f"sampling temperature {s.temperature:g}{', PLM under bf16 autocast in L_DT' if s.bf16_plm else ''}; the PLM stayed frozen."
    )


def cmd_train_diffuser(args: argparse.Namespace) -> None:
    import torch

    from promptrl.methods.diffuser import PRETRAIN_RECIPE, PromptDiffuser
    from promptrl.methods.plm import PromptDT

    torch.set_num_threads(args.threads)
    if args.epochs is None:
        args.epochs = 40 if args.stage == "pretrain" else 20
    suite = load_suite(args.suite)
    hub = Path(args.hub) / args.suite
    plm = PromptDT.from_pretrained(Path(args.plm) if args.plm else hub / "plm", device=args.device)
    pretrained = hub / "pretrained"
    settings = given(args, GENERATOR_FIELDS)
    if args.stage == "pretrain":
        recipe = {k: settings.pop(k, v) for k, v in PRETRAIN_RECIPE.items()}
        _pretrain_generator(args, suite, plm, pretrained, recipe, settings)
        return
    task = suite.test_tasks[0] if args.task is None else suite.check_task(args.task)
    pd = PromptDiffuser.from_pretrained(pretrained, plm=plm, device=args.device, **settings)
    pd.set_random_seed(args.seed)
    few_shot = suite.dataset(task, "expert", episodes=args.few_shot_episodes)
    print(f"fine-tuning on {args.few_shot_episodes} expert episode(s) of task {task} for {args.epochs} epochs")
    before = (pd.settings.model_card or {}).get("training", "")
    pd.learn(few_shot, epochs=args.epochs, progress_bar=True)
    what = f"then fine-tuned on {args.few_shot_episodes} expert episode(s) of test task {task} (Table 4 settings)"
    pd.settings.model_card = {"training": before + "\n\n" + _generator_card(pd, what, args)}
    pd.save_pretrained(hub)
    print(f"saved {hub}")


def _pretrain_generator(
    args: argparse.Namespace, suite, plm, folder: Path, recipe: dict[str, Any], settings: dict[str, Any]
) -> None:
    """Generator pre-training on the training tasks with its ``recipe`` (update rule, learning rate,
    batch), saved every 1,000 steps (resumes); the saved config holds the fine-tuning settings
    (``settings`` where given, else Table 4's)."""
    from promptrl.common.files import saved_steps
    from promptrl.methods.diffuser import pretrain_generator

    data = suite.datasets("train", "expert")
    total = args.epochs * 100
    print(
        f"pre-training the {args.suite} prompt generator on {len(data)} training tasks ({recipe}): {saved_steps(folder):,}/{total:,} "
        f"steps done, saved every 1,000 steps to {folder}"
    )
    what = (
        f"pre-trained on the expert datasets of the {len(data)} training tasks of `{args.suite}` with update rule "
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
        model_card=lambda pd: _generator_card(pd, what, args),
        **settings,
    )
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

    from promptrl.data.datasets import dataset_exists
    from promptrl.evaluation import evaluate
    from promptrl.methods.base import PLM_FOLDER
    from promptrl.methods.diffuser import PromptDiffuser
    from promptrl.methods.plm import PromptDT

    folder = resolve_model_path(args.model)  # hub_models/<suite> from anywhere; a Hub repo id stays as it is
    if (
        Path(folder) / PLM_FOLDER
    ).is_dir():  # a Prompt Diffuser folder: generated prompts, then its PLM's expert prompts
        model = PromptDiffuser.from_pretrained(folder, device=args.device)
        runs = [("generated", model, None)]
        suite = load_suite(args.suite)
        missing = [
            t for t in (args.tasks or suite.split(args.split)) if not dataset_exists(suite.dataset_id(t, "expert"))
        ]
        if missing:
            print(
                f"no expert datasets for tasks {missing}, so no expert-prompt comparison "
                f"(create them with `promptrl data {args.suite} --quality expert`)"
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
        f"seed {args.seed}).\n",
        f"| prompt | {'tasks ' + str(args.tasks) if args.tasks else args.split + '-split'} return (mean ± std {spread}) "
        "| per task |",
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
        per_task = ", ".join(f"{t}: {np.mean(r):.1f}" for t, r in result.returns.items())
        std = float(np.std(next(iter(result.returns.values())))) if one_task else result.std
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
        "dataset_name": f"{args.suite} ({tasks})",
        "dataset_split": args.split,
        "metric_type": "mean_reward",
        "metric_name": f"mean_reward ({what})",
        "metric_value": f"{mean:.2f} +/- {std:.2f}",
        "verified": False,
    }


def cmd_reproduce(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import torch

    from promptrl.experiments import reproduce as r

    torch.set_num_threads(args.threads)
    budget = replace(r.QUICK if args.quick else r.FULL, **given(args, BUDGET_FIELDS))
    suites = list(dict.fromkeys(n for name in args.suite for n in (r.TABLE1_SUITES if name == "all" else [name])))
    out = Path(args.out) if args.out else Path("results") / ("quick" if args.quick else "")
    hub = shipped = Path(resolve_model_path(args.hub))
    if args.retrain:  # its own models, cells and tables, apart from the shipped models'
        out, hub = out / r.RETRAINED, out / r.RETRAINED / "hub"
        if not args.collect:
            for name in suites:
                r.retrain_models(name, shipped / name, hub / name, args.device, args.plm_steps, args.generator_steps)
    summaries = {}
    for name in suites:
        summaries[name] = r.reproduce_suite(
            name,
            budget,
            args.methods or r.METHODS,
            out,
            hub,
            args.device,
            collect=args.collect,
            seed_list=args.seed_list,
        )
        print(f"\n{name} (test split; paper beside):")
        print(r.suite_table(name, summaries[name]))
        if args.record and summaries[name]:
            print(f"recorded in {r.record_in_card(hub / name, name, summaries[name], budget, command_line(args))}")
    print("\nThe paper's ordering (means over the seeds the compared columns share):")
    print(r.ordering_checks(summaries))
    print(f"\nwritten {r.write_results(summaries, out, command_line(args), budget)}")


def cmd_ablate(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import torch

    from promptrl.experiments import ablations as a
    from promptrl.experiments.reproduce import TABLE1_SUITES

    torch.set_num_threads(args.threads)
    budget = replace(a.DEFAULT_BUDGET, **given(args, ABLATION_BUDGET_FIELDS))
    suite = args.suite or a.DEFAULT_SUITES[args.name]
    if suite == "all" and args.name != "update-rules":
        raise ValueError(f"ablation {args.name!r} runs on one suite, not 'all'")
    common = dict(out=args.out, hub_root=args.hub, device=args.device, command=command_line(args))
    if args.name == "init":
        methods = args.methods or ["Prompt-Tuning DT", "Prompt Diffuser"]
        md = a.prompt_initialization(suite, budget, n_tasks=args.tasks, methods=methods, collect=args.collect, **common)
    elif args.name == "update-rules":
        md = a.update_rules(list(TABLE1_SUITES) if suite == "all" else [suite], budget, n_tasks=args.tasks, **common)
    elif args.name == "zero-shot":
        md = a.zero_shot(suite, budget, n_tasks=args.tasks, **common)
    elif args.name == "prompt-length":
        md = a.prompt_length(
            suite,
            budget,
            args.out,
            args.device,
            n_tasks=args.tasks,
            collect=args.collect,
            command=command_line(args),
            **given(args, ("plm_steps", "generator_steps")),
        )
    elif args.name == "prompts":
        md = a.prompt_similarity(suite, budget, **given(args, ("n_prompts",)), **common)
    else:
        n = {} if args.n_prompts is None else {"n": args.n_prompts}
        md = a.denoising(suite, temperature=args.temperature, **n, **common)
    print(md.read_text())
    print(f"written {md}")


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
SAC_FIELDS = (
    "total_updates",
    "n_envs",
    "batch_size",
    "hidden",
    "lr",
    "gamma",
    "tau",
    "buffer_size",
    "learning_starts",
    "eval_every",
    "checkpoint_minutes",
    "seed",
)
"""Fields of :class:`~promptrl.experiments.sac.SACConfig` that ``train expert`` takes as options."""
BUDGET_FIELDS = ("seeds", "episodes", "few_shot_episodes", "epochs", "steps_per_epoch", "full_epochs")
"""Fields of :class:`~promptrl.experiments.reproduce.Budget` that ``reproduce`` takes as options."""
ABLATION_BUDGET_FIELDS = ("seeds", "episodes", "epochs")
"""...and those ``ablate`` takes."""


def _defaults_of(function: Callable[..., Any], *names: str) -> dict[str, str]:
    """The defaults of ``function``'s keyword parameters ``names``, as help text."""
    parameters = inspect.signature(function).parameters
    return {name: _shown(parameters[name].default) for name in names}


def build_parser() -> argparse.ArgumentParser:
    """The ``promptrl`` command's parser; the options that set a dataclass field take their type, help
    and default from it (:func:`add_dataclass_options`)."""
    from promptrl.experiments import ablations
    from promptrl.experiments.reproduce import FULL, QUICK, Budget
    from promptrl.experiments.sac import SACConfig
    from promptrl.methods.diffuser import PRETRAIN_RECIPE, PromptDiffuserSettings
    from promptrl.methods.plm import PROMPT_WINDOWS, PromptDTSettings
    from promptrl.nn.diffusion import UPDATE_RULES

    parser = argparse.ArgumentParser(prog="promptrl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("suites", help="print the task suites table")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("data", help="create the Minari datasets of a suite (idempotent)")
    p.add_argument("suite", choices=available_suites())
    p.add_argument("--quality", nargs="+", choices=QUALITIES, default=list(QUALITIES), help="dataset qualities")
    p.add_argument("--episodes", type=positive_int, default=None, help="episodes per task (default: the suite spec's)")
    p.add_argument("--tasks", type=int, nargs="+", default=None, help="task ids (default: all)")
    add_common_options(p, "seed")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a model")
    train = p.add_subparsers(dest="what", required=True)
    p = train.add_parser("expert", help="train a suite's goal-conditioned SAC expert (resumes)")
    p.add_argument("suite", choices=[s for s in available_suites() if load_suite(s).spec.expert != "scripted"])
    counts = {"type": positive_int}
    add_dataclass_options(
        p,
        SACConfig,
        SAC_FIELDS,
        overrides={
            "total_updates": {"flags": ["--updates"], **counts},
            **{name: counts for name in ("n_envs", "batch_size", "hidden", "buffer_size", "eval_every")},
            **{name: {"type": positive_float} for name in ("lr", "tau", "checkpoint_minutes")},
            "gamma": {"type": unit_float},
        },
    )
    p.add_argument("--out", default=None, help="run folder (default: $PROMPTRL_HOME/experts/<suite>)")
    add_common_options(p, "threads")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="skip training; copy the run's best actor (and a medium-return snapshot) into the package",
    )
    p.set_defaults(func=cmd_train_expert)

    p = train.add_parser("plm", help="pre-train a Prompt-DT on a suite's training tasks (checkpoints and resumes)")
    p.add_argument("suite", choices=available_suites())
    p.add_argument("--steps", type=positive_int, default=50_000, help="total gradient steps")
    p.add_argument("--quality", choices=QUALITIES, default="expert", help="training data quality")
    add_dataclass_options(
        p,
        PromptDTSettings,
        PLM_FIELDS,
        note=" for a new run",
        overrides={
            "use_prompt": {"flags": ["--prompt"]},
            **{name: counts for name in ("embed_dim", "n_layer", "n_head", "context", "batch_per_task")},
            "activation": {"choices": ("relu", "gelu")},
            "dropout": {"type": float_in(0.0, 1.0)},
            **{name: {"type": positive_float} for name in ("learning_rate", "grad_clip")},
            "prompt_window": {"choices": PROMPT_WINDOWS},
            "bf16": {"type": auto_on_off, "metavar": "{auto,on,off}"},
        },
        defaults_text={"bf16": "auto"},
    )
    p.add_argument("--checkpoint-steps", type=positive_int, default=1000, help="steps between atomic checkpoints")
    p.add_argument(
        "--log-steps",
        type=positive_int,
        default=100,
        help="steps averaged into each row of progress.csv (and TensorBoard's train/loss, if installed)",
    )
    p.add_argument(
        "--eval-episodes",
        type=non_negative_int,
        default=0,
        help="after each checkpoint, evaluate this many episodes per test task into eval.csv",
    )
    p.add_argument("--out", default=None, help="run folder (default: $PROMPTRL_HOME/plm/<suite>)")
    add_common_options(p, "device", "seed", "threads", threads={"default": 2})
    p.set_defaults(func=cmd_train_plm)

    p = train.add_parser(
        "diffuser",
        help="pre-train the prompt generator on the training tasks, or fine-tune it on the test tasks' few-shot data",
    )
    p.add_argument("suite", choices=available_suites())
    p.add_argument(
        "--stage",
        choices=("pretrain", "finetune"),
        default="pretrain",
        help="pretrain: into <hub>/<suite>/pretrained (resumes per epoch); finetune: from there into <hub>/<suite>",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of 100 steps (default: 40 pretrain, 20 finetune as Table 4)",
    )
    p.add_argument("--task", type=int, default=None, help="finetune: the test task (default: the suite's first)")
    p.add_argument("--few-shot-episodes", type=positive_int, default=1, help="finetune: expert episodes of the task")
    add_dataclass_options(
        p,
        PromptDiffuserSettings,
        GENERATOR_FIELDS,
        defaults_text={
            name: f"{_shown(PRETRAIN_RECIPE.get(name, getattr(PromptDiffuserSettings, name)))} to pretrain, "
            "the pre-trained generator's to finetune"
            for name in GENERATOR_FIELDS
        },
        overrides={
            "update": {"choices": UPDATE_RULES},
            "batch_size": counts,
            **{name: {"type": positive_float} for name in ("learning_rate", "grad_clip")},
            "temperature": {"type": unit_float},
        },
    )
    p.add_argument("--plm", default=None, help="PLM folder (default: <hub>/<suite>/plm)")
    add_common_options(p, "hub", "device", "seed", "threads")
    p.set_defaults(func=cmd_train_diffuser)

    p = sub.add_parser("reproduce", help="Table 1: every method on a suite's test split, beside the paper's numbers")
    p.add_argument(
        "suite",
        nargs="+",
        choices=["all", *available_suites()],
        help="one or more suites, or all (the four of Table 1)",
    )
    p.add_argument("--quick", action="store_true", help="1 seed, 3 episodes per task, 25 adaptation steps (minutes)")
    add_dataclass_options(
        p,
        Budget,
        BUDGET_FIELDS,
        defaults_text={name: f"{getattr(FULL, name)}, --quick: {getattr(QUICK, name)}" for name in BUDGET_FIELDS},
        overrides={name: counts for name in BUDGET_FIELDS},
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help='subset of the Table 1 methods (quote names), or the variants "Prompt Diffuser (dt)" (the L_DT-only '
        'update rule) and "Prompt Diffuser (T=0)" (sampling temperature 0; reuses the kept generators)',
    )
    p.add_argument("--collect", action="store_true", help="run nothing: tabulate the finished (method, seed) results")
    p.add_argument(
        "--seed-list",
        type=non_negative_int,
        nargs="+",
        default=None,
        help="run only these seeds (e.g. one per process)",
    )
    p.add_argument("--out", default=None, help="results folder (default: results/, or results/quick/)")
    p.add_argument(
        "--record",
        action="store_true",
        help="write each suite's table into the model card of <hub>/<suite> (section 'Across the test split')",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="first train the PLM, MT-ORL and pre-trained generator again with the shipped models' recipes "
        "(resumable), into <out>/retrained/hub/<suite>/, and run Table 1 with those (results in <out>/retrained/)",
    )
    _add_steps_options(
        p,
        "--retrain: PLM and MT-ORL training steps (default: the shipped models')",
        "--retrain: generator pre-training steps (default: the shipped one's)",
    )
    add_common_options(
        p,
        "hub",
        "device",
        "threads",
        threads={"help": "torch threads (1: the models are small, more threads mostly wait on each other)"},
    )
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "ablate",
        help="an ablation of the paper (Table 2, Fig. 3, Table 9, Table 6/Fig. 5, Fig. 4): a table, CSV and plot",
    )
    p.add_argument(
        "name",
        choices=ablations.ABLATIONS,
        help="init: Table 2; update-rules: Fig. 3; zero-shot: Table 9; prompts: Table 6 + Fig. 5 (CKA, t-SNE); "
        "denoising: Fig. 4; prompt-length: Table 8 (trains a PLM per length)",
    )
    p.add_argument(
        "suite",
        nargs="?",
        choices=["all", *available_suites()],
        default=None,
        help="default: the paper's (cheetah-vel; all for update-rules; ant-dir-ood for zero-shot and prompts)",
    )
    add_dataclass_options(
        p,
        Budget,
        ABLATION_BUDGET_FIELDS,
        defaults_text={name: _shown(getattr(ablations.DEFAULT_BUDGET, name)) for name in ABLATION_BUDGET_FIELDS},
        overrides={name: counts for name in ABLATION_BUDGET_FIELDS},
    )
    p.add_argument("--tasks", type=positive_int, default=None, help="only the first N test tasks")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("Prompt-Tuning DT", "Prompt Diffuser"),
        default=None,
        help="init: only these methods",
    )
    p.add_argument(
        "--collect", action="store_true", help="init, prompt-length: run nothing, tabulate the finished cells"
    )
    steps = _defaults_of(ablations.prompt_length, "plm_steps", "generator_steps")
    _add_steps_options(
        p,
        f"prompt-length: training steps of each length's PLM (default: {steps['plm_steps']})",
        f"prompt-length: generator pre-training steps (default: {steps['generator_steps']})",
    )
    shown = {**_defaults_of(ablations.prompt_similarity, "n_prompts"), **_defaults_of(ablations.denoising, "n")}
    p.add_argument(
        "--n-prompts",
        type=positive_int,
        default=None,
        help=f"prompts: prompts per method (default {shown['n_prompts']}); denoising: prompts drawn (default {shown['n']})",
    )
    p.add_argument(
        "--temperature",
        type=unit_float,
        default=None,
        help="denoising: sampling temperature (default: the shipped model's)",
    )
    p.add_argument("--out", default="results/ablations", help="results folder")
    add_common_options(p, "hub", "device", "threads")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("evaluate", help="evaluate a saved Prompt-DT or Prompt Diffuser on a suite split")
    p.add_argument("model", help="folder or Hub repo id")
    p.add_argument("suite", choices=available_suites())
    p.add_argument("--split", choices=("train", "test", "all"), default="test", help="the tasks evaluated")
    p.add_argument("--episodes", type=positive_int, default=10, help="episodes per task")
    p.add_argument("--tasks", type=int, nargs="+", default=None, help="only these task ids (instead of --split)")
    p.add_argument(
        "--prompt",
        nargs="+",
        choices=QUALITIES,
        default=None,
        help="prompt qualities for a Prompt-DT (default: expert and random); a Prompt Diffuser "
        "folder is run with its generated prompts, then its PLM with expert prompts for comparison",
    )
    p.add_argument("--record", action="store_true", help="write the results table into the folder's model card")
    add_common_options(p, "device", "seed")
    p.set_defaults(func=cmd_evaluate)
    return parser


def _add_steps_options(parser: argparse.ArgumentParser, plm: str, generator: str) -> None:
    """``--plm-steps`` and ``--generator-steps`` (help texts ``plm``, ``generator``): training steps of
    the PLMs and generators a command trains; None unless given."""
    for name, text in (("plm", plm), ("generator", generator)):
        parser.add_argument(f"--{name}-steps", type=positive_int, default=None, help=text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"promptrl: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
