"""The ``promptrl`` command's parser and entry point."""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from promptrl.cli.commands import (
    ABLATION_BUDGET_FIELDS,
    BUDGET_FIELDS,
    GENERATOR_FIELDS,
    PLM_FIELDS,
    SAC_FIELDS,
    cmd_ablate,
    cmd_data,
    cmd_evaluate,
    cmd_reproduce,
    cmd_suites,
    cmd_train_diffuser,
    cmd_train_expert,
    cmd_train_plm,
)
from promptrl.cli.options import (
    _shown,
    add_common_options,
    add_dataclass_options,
    auto_on_off,
    float_in,
    non_negative_int,
    positive_float,
    positive_int,
    unit_float,
)
from promptrl.suites import load_suite
from promptrl.tasks.spec import QUALITIES, available_suites


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

    parser = argparse.ArgumentParser(
        prog="promptrl",
        description="Few-shot adaptation of offline-RL policies: task suites, datasets, training, evaluation, the Table 1 reproduction and the ablations.",
    )
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
    _add_executor_options(p, "init, update-rules, zero-shot, prompt-length: (setting, seed, test task)")
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


def _add_executor_options(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--executor``, ``--workers``, ``--address``, ``--cpus-per-cell`` and ``--gpus-per-cell``: where
    the grid's units (``unit``) run (see ``promptrl.experiments.executors``)."""
    from promptrl.experiments.executors import EXECUTORS

    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="inprocess",
        help=f"where each {unit} unit runs: inprocess (here, one after the other), local (--workers spawned "
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
