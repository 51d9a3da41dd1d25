"""Command-line option helpers: checked argument types, and options made from the fields of a settings
dataclass (type, default and help taken from the field), so a default lives in one place."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import math
import os
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


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


def suite_ref(value: str) -> str:
    """An argparse type: a built-in suite's name or a suite spec file's path, read and validated now
    (a bad spec is an error before any compute); the value is returned as given."""
    from promptrl.tasks.spec import load_spec

    try:
        load_spec(value)
    except (ValueError, FileNotFoundError) as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return value


def checked_tasks(spec: Any, tasks: Sequence[int] | None) -> list[int] | None:
    """``--tasks`` checked against a suite spec before any model or dataset is touched: the ids,
    ``None`` when not given (see :meth:`~promptrl.tasks.spec.SuiteSpec.check_tasks`)."""
    return None if tasks is None else spec.check_tasks(tasks, "--tasks")


def add_suite_argument(parser: argparse.ArgumentParser, *extra: str, **kwargs: Any) -> None:
    """The positional ``suite`` argument: a built-in suite's name or a spec file's path (``extra``:
    further accepted words, such as ``all``)."""
    from promptrl.tasks.spec import available_suites

    words = set(extra)

    def parse(value: str) -> str:
        return value if value in words else suite_ref(value)

    names = ", ".join([*extra, *available_suites()])
    kwargs["help"] = kwargs.get("help", "") + f" (a built-in suite: {names}; or a suite spec file, my-suite.json)"
    parser.add_argument("suite", type=parse, **kwargs)


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


def device_name(value: str) -> str:
    """``--device``: ``value`` if it names a torch device (``cpu``, ``cuda``, ``cuda:1``...), else an
    argparse error; whether this machine has it is checked where a model is put on it."""
    from promptrl.common.devices import parse_device

    try:
        parse_device(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("device: ")) from None
    return value


def given(args: argparse.Namespace, fields: Sequence[str]) -> dict[str, Any]:
    """The options among ``fields`` that the command line gave (not None), as keyword arguments."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


COMMON_OPTIONS: dict[str, dict[str, Any]] = {
    "device": {"type": device_name, "default": "cpu", "help": "torch device (cpu, cuda, cuda:1...)"},
    "seed": {"type": non_negative_int, "default": 0, "help": "random seed"},
    "threads": {"type": positive_int, "default": 1, "help": "torch threads"},
    "hub": {"default": "hub_models", "help": "where the shipped models live"},
}
"""Options several commands share."""


def add_common_options(parser: argparse.ArgumentParser, *names: str, **changes: Mapping[str, Any]) -> None:
    """Add the :data:`COMMON_OPTIONS` ``names``; ``changes[name]`` replaces some of an option's keywords."""
    for name in names:
        parser.add_argument(f"--{name}", **{**COMMON_OPTIONS[name], **changes.get(name, {})})
