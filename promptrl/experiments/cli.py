"""The experiments' subcommands (``train expert``, ``reproduce``, ``ablate``) and the full ``promptrl``
command: the library's command line (:mod:`promptrl.cli`) extended with them. The experiments sit above
the library, so the command that includes them is defined here."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from promptrl.cli import parser as library
from promptrl.cli.commands import GENERATOR_FIELDS, command_line, generator_card
from promptrl.cli.commands import cmd_train_diffuser as library_train_diffuser
from promptrl.cli.options import (
    _shown,
    add_common_options,
    add_dataclass_options,
    add_suite_argument,
    auto_on_off,
    checked_tasks,
    float_in,
    given,
    home,
    non_negative_int,
    positive_float,
    positive_int,
    unit_float,
)
from promptrl.common.hub import resolve_model_path
from promptrl.experiments.tables import budget_note
from promptrl.tasks.spec import load_spec

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


def cmd_train_diffuser(args: argparse.Namespace) -> None:
    """``train diffuser``: ``--stage pretrain`` as the library's command; ``--stage finetune`` fine-tunes
    one generator per test task by the Table 1 protocol, which lives here."""
    if args.stage == "finetune":
        _finetune_task_generators(args)
    else:
        library_train_diffuser(args)


def _finetune_task_generators(args: argparse.Namespace) -> None:
    """The suite's Prompt Diffuser, one generator fine-tuned per test task (``--tasks``: these) as in
    Table 1, saved to ``<hub>/<suite>``: the first task's at the root, the others' in ``tasks/<t>/``."""
    from promptrl.experiments.reproduce import FULL, Budget, task_generators

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "--stage finetune runs in one process: it fine-tunes the small per-task generators one after another "
            "(processes that share --out reuse the generators the others kept)"
        )
    import torch

    from promptrl.suites import load_suite

    torch.set_num_threads(args.threads)
    if args.plm is not None:
        raise ValueError("--plm is for --stage pretrain; --stage finetune uses the PLM in <hub>/<suite>/plm")
    epochs = 20 if args.epochs is None else args.epochs
    suite = load_suite(args.suite)
    hub = Path(args.hub) / suite.name
    settings = given(args, GENERATOR_FIELDS)
    budget = Budget(epochs=epochs, few_shot_episodes=args.few_shot_episodes, steps_per_epoch=FULL.steps_per_epoch)
    tasks = checked_tasks(suite.spec, args.tasks) or list(suite.test_tasks)
    print(
        f"fine-tuning one generator per task {tasks} on its first {args.few_shot_episodes} expert episode(s) for "
        f"{epochs} x {budget.steps_per_epoch} steps (seed {args.seed}), as the Prompt Diffuser cells of Table 1"
    )
    pd = task_generators(
        args.suite, tasks, budget, args.seed, args.out, args.hub, args.device, settings=settings, progress_bar=True
    )
    before = (pd.settings.model_card or {}).get("training", "")
    what = (
        f"then fine-tuned once per task {tasks} on the task's first {args.few_shot_episodes} expert episode(s) (Table 4 "
        f"settings, seed {args.seed}; the final step is kept, nothing is selected), each exactly as the task's Prompt "
        f"Diffuser cell of Table 1 with that seed; the generator of task {tasks[0]} is this folder's, the others are in "
        f"`tasks/<task>/`"
    )
    source = "given with `--temperature`" if "temperature" in settings else "the pre-trained generator's default"
    selection = (
        "**Selection.** Each generator is the last step of its fine-tuning; nothing was selected. They sample at "
        f"temperature {pd.settings.temperature:g} ({source})."
    )
    pd.settings.model_card = {"training": before + "\n\n" + generator_card(pd, what, args) + "\n\n" + selection}
    pd.save_pretrained(hub)
    print(
        f"saved {hub}; measure it per task with `promptrl evaluate {hub} {suite.spec.cli_arg} --episodes 10 --record`"
    )


def cmd_train_expert(args: argparse.Namespace) -> None:
    import torch

    from promptrl.experiments.sac import SACConfig, SACTrainer, export_expert

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else home() / "experts" / load_spec(args.suite).name
    if args.export_only:
        for quality, path in export_expert(args.suite, out).items():
            print(f"{quality} weights written to {path}")
        return
    cfg = SACConfig(**given(args, SAC_FIELDS))
    print(f"training the {load_spec(args.suite).name} expert in {out} (progress in {out / 'progress.csv'})")
    SACTrainer(args.suite, out, cfg).run()


def _grid_executor(args: argparse.Namespace) -> Any:
    """The executor of ``--executor`` (None: in this process); ``--address`` is left out of the
    command line that result files record (it names a machine)."""
    from promptrl.experiments.executors import make_executor

    if args.address is not None and args.executor != "ray":
        raise ValueError(
            f"--address is the Ray cluster's address: it needs --executor ray, got --executor {args.executor}"
        )
    words, skip = [], False
    for a in args.argv:
        if skip or a == "--address" or a.startswith("--address="):
            skip = a == "--address"
            continue
        words.append(a)
    args.argv = words
    return make_executor(
        args.executor, args.workers, args.address, args.cpus_per_cell, args.gpus_per_cell, threads=args.threads
    )


def cmd_reproduce(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import torch

    from promptrl.experiments import reproduce as r

    torch.set_num_threads(args.threads)
    executor = _grid_executor(args)
    budget = replace(r.QUICK if args.quick else r.FULL, **given(args, BUDGET_FIELDS))
    suites = list(dict.fromkeys(n for name in args.suite for n in (r.TABLE1_SUITES if name == "all" else [name])))
    out = Path(args.out) if args.out else Path("results") / ("quick" if args.quick else "")
    hub = shipped = Path(resolve_model_path(args.hub))
    hubs = {ref: hub for ref in suites}
    if args.retrain:  # its own models, cells and tables, apart from the shipped models'
        out, hub = out / r.RETRAINED, out / r.RETRAINED / "hub"
        hubs = {ref: hub for ref in suites}
    for ref in suites:  # a suite without shipped models (a user's spec): its models are trained under <out>/hub
        name = load_spec(ref).name
        if not args.retrain and not r.has_models(shipped / name, mt_orl=False):  # MT-ORL: see Context.load_models
            hubs[ref] = out / "hub"
        if not args.collect and (args.retrain or hubs[ref] != shipped):
            own = r.has_models(shipped / name)  # else: another suite's recipes, and --quick shortens them
            recipe = shipped / name if own else shipped / r.RECIPE_SUITE
            steps = r.QUICK_TRAINING_STEPS if args.quick and not own else {}
            r.retrain_models(
                ref,
                recipe,
                hubs[ref] / name,
                args.device,
                args.plm_steps or steps.get("plm"),
                args.generator_steps or steps.get("generator"),
            )
    summaries = {}
    with executor or contextlib.nullcontext():
        for ref in suites:
            name = load_spec(ref).name
            summaries[name] = r.reproduce_suite(
                ref,
                budget,
                args.methods or r.METHODS,
                out,
                hubs[ref],
                args.device,
                collect=args.collect,
                seed_list=args.seed_list,
                executor=executor,
            )
            print(f"\n{name} (test split; paper beside):")
            print(r.suite_table(name, summaries[name]))
            if args.record and summaries[name]:
                card = r.record_in_card(hubs[ref] / name, name, summaries[name], budget, command_line(args))
                print(f"recorded in {card}")
    print("\nThe paper's ordering (means over the seeds the compared columns share):")
    print(r.ordering_checks(summaries))
    note = budget_note(budget)
    if note:
        print(f"\n{note}")
    print(f"\nwritten {r.write_results(summaries, out, command_line(args), budget)}")


def cmd_ablate(args: argparse.Namespace) -> None:

    import torch

    from promptrl.experiments import ablations as a
    from promptrl.experiments.reproduce import FULL, TABLE1_SUITES

    torch.set_num_threads(args.threads)
    selection = a.PLM_BUDGET_ADAPTATION
    base = {"plm-budget": selection, "temperature": selection, "noise-net": selection, "generator": FULL}.get(
        args.name, a.DEFAULT_BUDGET
    )
    budget = replace(base, **given(args, ABLATION_BUDGET_FIELDS))
    suite = args.suite or a.DEFAULT_SUITES[args.name]
    if suite == "all" and args.name not in ("update-rules", "generator"):
        raise ValueError(f"ablation {args.name!r} runs on one suite, not 'all'")
    grid = args.name in (
        "init",
        "update-rules",
        "zero-shot",
        "prompt-length",
        "plm-budget",
        "temperature",
        "noise-net",
        "generator",
    )
    if args.executor != "inprocess" and not grid:
        raise ValueError(
            f"--executor {args.executor}: ablation {args.name!r} is not a grid of cells; it runs in this process"
        )
    executor = _grid_executor(args)
    common = dict(out=args.out, hub_root=args.hub, device=args.device, command=command_line(args))
    grid_common = dict(common, executor=executor)
    if args.name == "init":
        methods = args.methods or ["Prompt-Tuning DT", "Prompt Diffuser"]
        md = a.prompt_initialization(
            suite,
            budget,
            n_tasks=args.tasks,
            methods=methods,
            collect=args.collect,
            table1_out=args.table1_out,
            **grid_common,
        )
    elif args.name == "update-rules":
        suites = list(TABLE1_SUITES) if suite == "all" else [suite]
        md = a.update_rules(suites, budget, n_tasks=args.tasks, table1_out=args.table1_out, **grid_common)
    elif args.name == "zero-shot":
        md = a.zero_shot(suite, budget, n_tasks=args.tasks, **grid_common)
    elif args.name == "prompt-length":
        md = a.prompt_length(
            suite,
            budget,
            args.out,
            args.device,
            n_tasks=args.tasks,
            collect=args.collect,
            command=command_line(args),
            executor=executor,
            **given(args, ("plm_steps", "generator_steps")),
        )
    elif args.name == "plm-budget":
        md = a.plm_budget(
            suite,
            budget,
            n_tasks=args.tasks,
            collect=args.collect,
            plms_only=args.plms_only,
            plm_overrides={"bf16": args.bf16} if "bf16" in vars(args) else None,
            **given(args, ("fractions", "batch_per_task")),
            **grid_common,
        )
    elif args.name == "generator":
        suites = list(TABLE1_SUITES) if suite == "all" else [suite]
        md = a.generative_models(
            suites, budget, n_tasks=args.tasks, collect=args.collect, table1_out=args.table1_out, **grid_common
        )
    elif args.name == "temperature":
        md = a.temperature_selection(
            suite,
            budget,
            n_tasks=args.tasks or 3,
            collect=args.collect,
            **given(args, ("temperatures",)),
            **grid_common,
        )
    elif args.name == "noise-net":
        md = a.noise_network_selection(suite, budget, n_tasks=args.tasks or 3, collect=args.collect, **grid_common)
    elif args.name == "prompts":
        md = a.prompt_similarity(suite, budget, **given(args, ("n_prompts",)), **common)
    else:
        n = {} if args.n_prompts is None else {"n": args.n_prompts}
        md = a.denoising(suite, temperature=args.temperature, **n, **common)
    if executor is not None:
        executor.close()
    print(md.read_text())
    print(f"written {md}")


def _defaults_of(function: Callable[..., Any], *names: str) -> dict[str, str]:
    """The defaults of ``function``'s keyword parameters ``names``, as help text."""
    parameters = inspect.signature(function).parameters
    return {name: _shown(parameters[name].default) for name in names}


def add_commands(sub: Any, train: Any) -> None:
    """Add ``train expert`` to the ``train`` group and ``reproduce`` and ``ablate`` to ``sub``, and give
    ``train diffuser --stage finetune`` its Table 1 protocol."""
    from promptrl.experiments import ablations
    from promptrl.experiments.reproduce import FULL, QUICK, Budget
    from promptrl.experiments.sac import SACConfig

    train.choices["diffuser"].set_defaults(func=cmd_train_diffuser)

    counts = {"type": positive_int}
    p = train.add_parser("expert", help="train a suite's goal-conditioned SAC expert (resumes)")
    add_suite_argument(p, help="a suite whose spec has a SAC expert")
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

    p = sub.add_parser("reproduce", help="Table 1: every method on a suite's test split, beside the paper's numbers")
    add_suite_argument(p, "all", nargs="+", help="one or more suites, or all (the four of Table 1)")
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
        threads={
            "help": "torch threads, of this process and of each worker (1: the models are small, more threads "
            "mostly wait on each other)"
        },
    )
    _add_executor_options(p, "(method, seed, test task)")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "ablate",
        help="an ablation of the paper (Table 2, Fig. 3, Table 9, Table 6/Fig. 5, Fig. 4): a table, CSV and plot",
    )
    p.add_argument(
        "name",
        choices=ablations.ABLATIONS,
        help="init: Table 2; update-rules: Fig. 3; zero-shot: Table 9; prompts: Table 6 + Fig. 5 (CKA, t-SNE); "
        "denoising: Fig. 4; prompt-length: Table 8 (trains a PLM per length); plm-budget: the paper's ordering "
        "at several PLM training budgets (trains one PLM); temperature: the sampling temperature chosen on the "
        "validation (else training) tasks; noise-net: the noise network chosen the same way (pre-trains one "
        "generator per network); generator: Table 5, diffusion vs VAE generator (trains a VAE per suite)",
    )
    add_suite_argument(
        p,
        "all",
        nargs="?",
        default=None,
        help="default: the paper's (cheetah-vel; all for update-rules and generator; ant-dir-ood for zero-shot "
        "and prompts; ant-dir for noise-net)",
    )
    add_dataclass_options(
        p,
        Budget,
        ABLATION_BUDGET_FIELDS,
        defaults_text={
            name: f"{_shown(getattr(ablations.DEFAULT_BUDGET, name))}; plm-budget, temperature, noise-net: "
            f"{_shown(getattr(ablations.PLM_BUDGET_ADAPTATION, name))}"
            for name in ABLATION_BUDGET_FIELDS
        },
        overrides={name: counts for name in ABLATION_BUDGET_FIELDS},
    )
    p.add_argument(
        "--tasks",
        type=positive_int,
        default=None,
        help="only the first N test tasks (temperature, noise-net: of the selection tasks, default 3)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("Prompt-Tuning DT", "Prompt Diffuser"),
        default=None,
        help="init: only these methods",
    )
    p.add_argument(
        "--collect",
        action="store_true",
        help="init, prompt-length, plm-budget, temperature, noise-net, generator: run nothing, tabulate the finished cells",
    )
    p.add_argument(
        "--fractions",
        type=positive_float,
        nargs="+",
        default=None,
        help=f"plm-budget: PLM budgets as fractions of {ablations.REFERENCE_PLM_STEPS:,} steps "
        f"(default: {' '.join(map(str, ablations.PLM_BUDGET_FRACTIONS))})",
    )
    p.add_argument(
        "--plms-only",
        action="store_true",
        help="plm-budget: train (or resume) the PLM to every budget and save it, measure no cell (then tabulate "
        "as --collect does); e.g. train on an accelerator, measure the cells later from the saved PLMs",
    )
    p.add_argument(
        "--bf16",
        type=auto_on_off,
        default=argparse.SUPPRESS,
        metavar="{auto,on,off}",
        help="plm-budget: bfloat16 autocast while training the PLM (auto: where it is faster; default: as the "
        "shipped PLM was trained); a run with it set is a run of its own",
    )
    p.add_argument(
        "--temperatures",
        type=unit_float,
        nargs="+",
        default=None,
        help=f"temperature: the temperatures compared (default: {' '.join(map(str, ablations.TEMPERATURES))})",
    )
    p.add_argument(
        "--batch-per-task",
        type=positive_int,
        default=None,
        help=f"plm-budget: the PLM's sequences per task and step (default: {ablations.REFERENCE_BATCH_PER_TASK}, the reference)",
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
    p.add_argument(
        "--table1-out",
        default="results",
        help="init, update-rules, generator: the `promptrl reproduce --out` folder whose Table 1 cells of the same "
        "budget they share on all test tasks and adopt per task on fewer (cells measured with other models are left "
        "alone)",
    )
    add_common_options(p, "hub", "device", "threads")
    _add_executor_options(p, "(setting, seed, task)", applies_to="the grids (all ablations but prompts and denoising)")
    p.set_defaults(func=cmd_ablate)


def _add_executor_options(parser: argparse.ArgumentParser, unit: str, applies_to: str = "") -> None:
    """``--executor``, ``--workers``, ``--address``, ``--cpus-per-cell`` and ``--gpus-per-cell``: where
    the grid's units (``unit``) run (see ``promptrl.experiments.executors``); ``applies_to`` names the
    sub-commands they apply to, where not all do."""
    from promptrl.experiments.executors import EXECUTORS

    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="inprocess",
        help=(f"{applies_to}: " if applies_to else "")
        + f"where each {unit} unit runs: inprocess (here, one after the other), local (--workers spawned "
        'processes), ray (one Ray task each; pip install "promptrl[ray]"). Finished units are not run again '
        "and a dead worker's unit runs again",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="--executor local: worker processes")
    parser.add_argument(
        "--address",
        default=None,
        help="--executor ray: the Ray cluster's address (e.g. auto, after `ray start --head`); default: a Ray "
        "instance started here on the loopback interface",
    )
    parser.add_argument(
        "--cpus-per-cell", type=positive_float, default=1.0, help="--executor ray: CPUs each unit asks for"
    )
    parser.add_argument(
        "--gpus-per-cell",
        type=float_in(0.0),
        default=0.0,
        help="--executor ray: GPUs each unit asks for (fractions share a GPU)",
    )


def _add_steps_options(parser: argparse.ArgumentParser, plm: str, generator: str) -> None:
    """``--plm-steps`` and ``--generator-steps`` (help texts ``plm``, ``generator``): training steps of
    the PLMs and generators a command trains; None unless given."""
    for name, text in (("plm", plm), ("generator", generator)):
        parser.add_argument(f"--{name}-steps", type=positive_int, default=None, help=text)


def build_parser() -> argparse.ArgumentParser:
    """The full ``promptrl`` command's parser: the library's subcommands and the experiments'."""
    return library.build_parser(add_commands)


def main(argv: list[str] | None = None) -> int:
    """The ``promptrl`` command (and ``python -m promptrl``): every subcommand; returns the exit status."""
    return library.main(argv, add_commands)
