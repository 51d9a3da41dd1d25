"""The command line's options: those made from settings dataclasses, the commands quoted in the
results and model cards (parsed, not run), bad values and every command's --help."""

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from promptrl.cli import GENERATOR_FIELDS, PLM_FIELDS, add_dataclass_options, field_docs, given
from promptrl.experiments.cli import BUDGET_FIELDS, SAC_FIELDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
QUOTED = re.compile(r"promptrl (?:train|reproduce|ablate|evaluate|data)[^`]*")


@dataclass
class Example:
    """A dataclass with one field of each kind an option is made for."""

    count: int = 3
    """How many."""
    rate: float = 0.5
    """A  rate, see :func:`~some.module.thing` and ``value``."""
    name: str = "a"
    """A name."""
    flag: bool = True
    """Turns it on."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Two numbers."""
    sizes: list[int] | None = None
    """Some sizes."""
    limit: int | None = None
    """An optional limit."""
    table: dict[str, int] | None = None
    """No option can set this."""


def example_parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example", exit_on_error=False)
    add_dataclass_options(parser, Example, ["count", "rate", "name", "flag", "betas", "sizes", "limit"], **kwargs)
    return parser


def test_options_take_type_help_and_default_from_the_fields():
    parser = example_parser()
    fields = ["count", "rate", "name", "flag", "betas", "sizes", "limit"]
    assert given(parser.parse_args([]), fields) == {}  # nothing given: the dataclass keeps its defaults
    args = parser.parse_args(
        shlex.split("--count 7 --rate 2e-3 --name b --no-flag --betas 0.8 0.9 --sizes 1 2 3 --limit 0")
    )
    assert given(args, fields) == {
        "count": 7,
        "rate": 2e-3,
        "name": "b",
        "flag": False,
        "betas": [0.8, 0.9],
        "sizes": [1, 2, 3],
        "limit": 0,
    }
    assert Example(**given(args, fields)).flag is False
    text = " ".join(parser.format_help().split())
    assert "--count COUNT How many. (default: 3)" in text
    assert "A rate, see thing and value. (default: 0.5)" in text  # reST markup removed, whitespace collapsed
    assert "--flag, --no-flag Turns it on. (default: on)" in text
    assert "--betas FLOAT FLOAT Two numbers. (default: 0.9 0.95)" in text
    assert "--sizes INT [INT ...]" in text and "(default: none)" in text
    assert field_docs(Example)["limit"] == "An optional limit."


def test_overrides_flags_and_defaults_text():
    parser = example_parser(
        overrides={"count": {"flags": ["--how-many"]}, "name": {"choices": ("a", "b")}},
        defaults_text={"rate": "the saved one"},
        note=" here",
    )
    assert parser.parse_args(["--how-many", "2"]).count == 2
    text = " ".join(parser.format_help().split())
    assert "(default: the saved one here)" in text and "(default: 3 here)" in text
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--name", "c"])


def test_bad_fields_and_types_are_named():
    with pytest.raises(ValueError, match="Example has no field 'cont'"):
        add_dataclass_options(argparse.ArgumentParser(), Example, ["cont"])
    with pytest.raises(TypeError, match=r"Example\.table .*no command-line option"):
        add_dataclass_options(argparse.ArgumentParser(), Example, ["table"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "plm", "mw-reach", "--learning-rate", "fast"], "--learning-rate: expected a finite number > 0"),
        (["train", "plm", "mw-reach", "--learning-rate", "0"], "--learning-rate: expected a finite number > 0"),
        (["train", "plm", "mw-reach", "--bf16", "maybe"], "--bf16: expected auto, on or off, got 'maybe'"),
        (["train", "plm", "mw-reach", "--batch-per-task", "0"], "--batch-per-task: expected a positive integer, got 0"),
        (["train", "plm", "mw-reach", "--prompt-window", "first"], "--prompt-window: invalid choice: 'first'"),
        (["train", "diffuser", "mw-reach", "--temperature", "2"], "--temperature: expected a finite number in [0, 1]"),
        (["train", "diffuser", "mw-reach", "--update", "fast"], "--update: invalid choice: 'fast'"),
        (["train", "expert", "cheetah-vel", "--updates", "0"], "--updates: expected a positive integer, got 0"),
        (["train", "expert", "cheetah-vel", "--gamma", "nan"], "--gamma: expected a finite number in [0, 1]"),
        (["reproduce", "mw-reach", "--steps-per-epoch", "-1"], "--steps-per-epoch: expected a positive integer"),
        (["ablate", "init", "--epochs", "x"], "--epochs: expected a positive integer, got 'x'"),
        (
            ["evaluate", "hub_models/mw-reach", "mw-reach", "--device", "gpu"],
            "--device: expected a torch device such as",
        ),
    ],
)
def test_bad_values_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_a_device_this_torch_cannot_use_is_named():
    """The API and --device check the device before a model is put on it."""
    import torch

    from promptrl.common.devices import usable_device

    assert usable_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device: expected a torch device such as cpu, cuda or cuda:1, got 'gpu'"):
        usable_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device: 'cuda:0' is not available to this torch build"):
            usable_device("cuda:0")
    else:
        with pytest.raises(ValueError, match=r"device: 'cuda:999' does not exist"):
            usable_device("cuda:999")


def quoted_commands() -> list[str]:
    """The commands the results and model cards quote, without placeholders (``<suite>``) or cut-off quotes."""
    found = set()
    for path in [*(ROOT / "results").rglob("*.md"), *(ROOT / "hub_models").rglob("*.md")]:
        found.update(m.strip() for m in QUOTED.findall(path.read_text()))
    commands = []
    for command in sorted(found):
        try:
            words = shlex.split(command)
        except ValueError:  # a command cut off in prose
            continue
        if "<" not in command and len(words) > 2:
            commands.append(command)
    return commands


def test_the_quoted_commands_are_found():
    commands = quoted_commands()
    assert len(commands) >= 50
    assert {c.split()[1] for c in commands} == {"train", "reproduce", "ablate", "evaluate", "data"}


@pytest.mark.parametrize("command", quoted_commands())
def test_quoted_commands_parse(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


def parse(command: str) -> argparse.Namespace:
    return build_parser().parse_args(shlex.split(command))


def test_quoted_commands_keep_their_meaning():
    args = parse(
        "train plm cheetah-vel --no-prompt --batch-per-task 4 --warmup-steps 500 --learning-rate 2e-4 "
        "--checkpoint-steps 2500 --eval-episodes 3 --threads 1 --device cuda --steps 26500"
    )
    assert given(args, PLM_FIELDS) == {
        "use_prompt": False,
        "batch_per_task": 4,
        "warmup_steps": 500,
        "learning_rate": 2e-4,
    }
    assert (args.steps, args.checkpoint_steps, args.eval_episodes, args.threads, args.device, args.seed) == (
        26500,
        2500,
        3,
        1,
        "cuda",
        0,
    )
    args = parse("train plm mw-reach --prompt-window last --bf16 on")
    assert given(args, PLM_FIELDS) == {"prompt_window": "last", "bf16": True}
    assert given(parse("train plm mw-reach --bf16 auto"), PLM_FIELDS) == {}  # auto: the library decides
    args = parse("train diffuser cheetah-vel --stage finetune --temperature 0")
    assert args.stage == "finetune" and given(args, GENERATOR_FIELDS) == {"temperature": 0.0} and args.epochs is None
    assert given(parse("train diffuser cheetah-vel --bf16-plm"), GENERATOR_FIELDS) == {"bf16_plm": True}
    args = parse(
        "reproduce cheetah-vel ant-dir cheetah-dir --collect --seeds 1 --episodes 5 --epochs 20 "
        "--methods Prompt-DT-Expert 'Prompt Diffuser' 'Prompt Diffuser (T=0)'"
    )
    assert args.suite == ["cheetah-vel", "ant-dir", "cheetah-dir"] and args.collect
    assert given(args, BUDGET_FIELDS) == {"seeds": 1, "episodes": 5, "epochs": 20}
    assert args.methods == ["Prompt-DT-Expert", "Prompt Diffuser", "Prompt Diffuser (T=0)"]
    args = parse("train expert cheetah-vel --updates 2000 --n-envs 2 --seed 3 --lr 1e-3")
    assert given(args, SAC_FIELDS) == {"total_updates": 2000, "n_envs": 2, "seed": 3, "lr": 1e-3}


def test_reproduce_budget_options_replace_the_chosen_budget(monkeypatch):
    """Options not given keep the full (or --quick) budget's values."""
    import promptrl.experiments.reproduce as r

    seen = {}
    monkeypatch.setattr(r, "reproduce_suite", lambda name, budget, *a, **k: seen.setdefault(name, budget) and {})
    monkeypatch.setattr(r, "write_results", lambda *a: Path("table1.md"))
    assert main(["reproduce", "mw-reach", "--quick", "--episodes", "2", "--steps-per-epoch", "5", "--collect"]) == 0
    assert seen["mw-reach"] == r.Budget(
        seeds=r.QUICK.seeds, episodes=2, epochs=r.QUICK.epochs, steps_per_epoch=5, full_epochs=r.QUICK.full_epochs
    )


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of ``parser`` (``()``, ``("train",)``, ``("train", "plm")``...)."""
    paths = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += subcommands(child, (*path, name))
    return paths


@pytest.mark.parametrize("path", subcommands(build_parser()), ids=lambda p: " ".join(p) or "promptrl")
def test_every_command_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: promptrl" + "".join(f" {p}" for p in path)) and "-h, --help" in out


def test_python_dash_m_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "promptrl", "train", "plm", "--help"], capture_output=True, text=True, check=True
    )
    assert "--no-prompt" in done.stdout and "--batch-per-task" in done.stdout
