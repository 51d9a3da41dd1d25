"""Checks of settings values, shared by the settings dataclasses that ``config.json`` holds.

A ``config.json`` may come from anyone, so every value is checked for its type and range, and the size
of the model it describes is checked against :data:`MAX_PARAMETERS` before anything is allocated."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

MAX_PARAMETERS = 2_000_000_000
"""Largest model (in parameters) a config may describe unless :data:`MAX_PARAMETERS_ENV` allows more."""
MAX_PARAMETERS_ENV = "PROMPTRL_MAX_PARAMETERS"
"""Environment variable that replaces :data:`MAX_PARAMETERS` (a positive integer)."""


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer (not a bool) in ``[minimum, maximum]``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def check_float(name: str, value: Any, minimum: float, maximum: float, *, open_max: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite number in ``[minimum, maximum]``
    (``[minimum, maximum)`` with ``open_max``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and minimum <= value and (value < maximum if open_max else value <= maximum)
    if not ok:
        raise ValueError(
            f"{name} must be a number in [{minimum:g}, {maximum:g}{')' if open_max else ']'}, got {value!r}"
        )


def check_bool(name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_optional_number(name: str, value: Any, *, positive: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is None or a finite (``positive``: > 0) number."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and not value > 0):
        raise ValueError(f"{name} must be None or a finite {'positive ' if positive else ''}number, got {value!r}")


def check_vector(name: str, value: Any, length: int | None = None, *, positive: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is None or a list of finite (``positive``: > 0)
    numbers, of ``length`` numbers when given."""
    if value is None:
        return
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be None or a list of numbers, got {repr(value)[:80]}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must be None or a list of {length} numbers, got {len(value)} values")
    for i, v in enumerate(value):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (positive and not v > 0):
            raise ValueError(f"{name}[{i}] must be a finite {'positive ' if positive else ''}number, got {v!r}")


def positive_env(name: str, default: float, kind: type = float, what: str = "a positive number") -> Any:
    """The positive, finite number of ``kind`` in environment variable ``name``, or ``default`` when it is
    unset or empty; any other value is a ValueError naming the variable and ``what`` it must be."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be {what}, got {text!r}")
    return value


def max_parameters() -> int:
    """The parameter limit: :data:`MAX_PARAMETERS_ENV` when set, else :data:`MAX_PARAMETERS`."""
    return positive_env(MAX_PARAMETERS_ENV, MAX_PARAMETERS, int, "a positive integer")


def check_parameter_count(what: str, count: int) -> None:
    """Raise a ValueError unless a model of ``count`` parameters (``what`` names it) is within :func:`max_parameters`."""
    limit = max_parameters()
    if count > limit:
        raise ValueError(
            f"{what} would have {count:.3g} parameters, more than the limit of {limit:.3g}; "
            f"set {MAX_PARAMETERS_ENV} to a larger integer to build it anyway"
        )
