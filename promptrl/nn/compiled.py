"""Opt-in compilation of the fixed-shape hot loops (the PLM's train step, the diffusion reverse chain):
``torch.compile`` on CUDA devices, by default with CUDA graphs (``mode="reduce-overhead"``), so that a
step costs one graph launch instead of hundreds of kernel launches; elsewhere the plain function.

>>> import torch
>>> from promptrl.nn.compiled import maybe_compile
>>> layer = torch.nn.Linear(3, 2)
>>> maybe_compile(layer, "cpu") is layer  # the CPU keeps the plain path
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

COMPILE_MODES: tuple[str, ...] = ("reduce-overhead", "default", "max-autotune", "max-autotune-no-cudagraphs")
"""The ``torch.compile`` modes :func:`maybe_compile` accepts; ``reduce-overhead`` captures CUDA graphs."""

F = TypeVar("F", bound=Callable)


def will_compile(device: torch.device | str, enabled: bool = True) -> bool:
    """Whether :func:`maybe_compile` compiles for ``device``: when ``enabled`` and ``device`` is a CUDA device."""
    return bool(enabled) and torch.device(device).type == "cuda"


def maybe_compile(fn: F, device: torch.device | str, enabled: bool = True, mode: str = "reduce-overhead") -> F:
    """``torch.compile(fn, mode=mode)`` when :func:`will_compile` says so, else ``fn`` itself.

    :param fn: a function or ``nn.Module`` whose calls keep their shapes (each new shape compiles again).
    :param device: where ``fn`` runs.
    :param enabled: False always gives ``fn``.
    :param mode: one of :data:`COMPILE_MODES`. With ``reduce-overhead`` the outputs of a call live in
        CUDA-graph memory that the next call overwrites: read (or clone) them before calling again.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"mode must be one of {COMPILE_MODES}, got {mode!r}")
    if not will_compile(device, enabled):
        return fn
    return torch.compile(fn, mode=mode)
