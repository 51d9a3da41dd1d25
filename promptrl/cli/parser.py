"""The ``promptrl`` command's parser and entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from promptrl.cli.commands import (
    GENERATOR_FIELDS,
    PLM_FIELDS,
    cmd_data,
    cmd_evaluate,
    cmd_suites,
    cmd_train_diffuser,
    cmd_train_plm,
)
from promptrl.cli.options import (
    _shown,
    add_common_options,
    add_dataclass_options,
    add_suite_argument,
    auto_on_off,
    float_in,
    non_negative_int,
    positive_float,
    positive_int,
    suite_ref,
    unit_float,
)
from promptrl.tasks.spec import QUALITIES, SPLITS

Extension = Callable[[Any, Any], None]
"""Adds subcommands: called with the parser's subcommand group and the ``train`` group."""


def build_parser(extend: Extension | None = None) -> argparse.ArgumentParser:
    """The ``promptrl`` command's parser with the library's subcommands (suites, data, train plm / diffuser,
    evaluate), and those ``extend`` adds (the ``promptrl`` command adds the experiments' train expert,
    reproduce and ablate). The options that set a dataclass field take their type, help
    and default from it (:func:`add_dataclass_options`)."""
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
    p.add_argument(
        "specs",
        nargs="*",
        type=suite_ref,
        metavar="SPEC",
        help="suite spec files to list (default: the built-in suites)",
    )
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("data", help="create the Minari datasets of a suite (idempotent)")
    add_suite_argument(p)
    p.add_argument("--quality", nargs="+", choices=QUALITIES, default=list(QUALITIES), help="dataset qualities")
    p.add_argument("--episodes", type=positive_int, default=None, help="episodes per task (default: the suite spec's)")
    p.add_argument("--tasks", type=int, nargs="+", default=None, help="task ids (default: all)")
    add_common_options(p, "seed")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a model")
    train = p.add_subparsers(dest="what", required=True)
    counts = {"type": positive_int}
    p = train.add_parser("plm", help="pre-train a Prompt-DT on a suite's training tasks (checkpoints and resumes)")
    add_suite_argument(p)
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
        help="after each checkpoint, evaluate this many episodes per task into eval.csv, on the suite's validation "
        "tasks (its training tasks where it has none; never the test tasks), and keep the checkpoint with the "
        "highest mean return in <out>/best",
    )
    p.add_argument(
        "--eval-tasks",
        type=positive_int,
        default=None,
        help="with --eval-episodes: evaluate only the first N tasks of that split (default: all of them)",
    )
    p.add_argument("--out", default=None, help="run folder (default: $PROMPTRL_HOME/plm/<suite>)")
    add_common_options(p, "device", "seed", "threads", threads={"default": 2})
    p.set_defaults(func=cmd_train_plm)

    p = train.add_parser(
        "diffuser",
        help="pre-train the prompt generator on the training tasks, or fine-tune it on the test tasks' few-shot data",
    )
    add_suite_argument(p)
    p.add_argument(
        "--stage",
        choices=("pretrain", "finetune"),
        default="pretrain",
        help="pretrain: into <hub>/<suite>/pretrained (resumes per epoch); finetune: from there, one generator per "
        "test task as in Table 1, into <hub>/<suite> (the first task's at its root, the others' in tasks/<task>/)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of 100 steps (default: 40 pretrain, 20 finetune as Table 4)",
    )
    p.add_argument(
        "--tasks",
        "--task",
        type=int,
        nargs="+",
        default=None,
        help="finetune: the tasks to fine-tune a generator for (default: the suite's test tasks)",
    )
    p.add_argument(
        "--out",
        default="results",
        help="finetune: where fine-tuned generators are kept and reused (<out>/models/..., shared with "
        "`promptrl reproduce --out`)",
    )
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

    p = sub.add_parser("evaluate", help="evaluate a saved Prompt-DT or Prompt Diffuser on a suite split")
    p.add_argument("model", help="folder or Hub repo id")
    add_suite_argument(p)
    p.add_argument("--split", choices=SPLITS, default="test", help="the tasks evaluated")
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
    p.add_argument(
        "--plm",
        default=None,
        help="the PLM folder of a Prompt Diffuser folder that does not hold one (e.g. <hub>/<suite>/pretrained, "
        "the generator before fine-tuning)",
    )
    p.add_argument(
        "--zero-shot",
        action="store_true",
        help="a Prompt Diffuser folder: give a task it holds no generator or data of prompts made from every task "
        "it learned (by default such a task is an error)",
    )
    p.add_argument("--record", action="store_true", help="write the results table into the folder's model card")
    add_common_options(
        p,
        "device",
        "seed",
        "threads",
        threads={
            "help": "torch threads (the returns depend on it: a batched forward's last bits do, and rollouts amplify them)"
        },
    )
    p.set_defaults(func=cmd_evaluate)
    if extend is not None:
        extend(sub, train)
    return parser


def main(argv: list[str] | None = None, extend: Extension | None = None) -> int:
    """Run the command ``argv`` (default: the process's arguments) with the subcommands of
    :func:`build_parser`; returns the exit status."""
    args = build_parser(extend).parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"promptrl: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout closed it (e.g. `promptrl suites | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not raise again
        return 1
    return 0
