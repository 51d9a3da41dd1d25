"""The torch device a user names, checked before anything is put on it."""

from __future__ import annotations

import torch


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` if it names one (``cpu``, ``cuda``, ``cuda:1``...), else a
    ``ValueError`` naming ``device``; whether this machine has it is :func:`usable_device`'s check."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected a torch device such as cpu, cuda or cuda:1, got {device!r}") from None


def usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` if this torch can use it, else a ``ValueError`` naming ``device``
    and what was expected (a device name such as ``cpu``, ``cuda`` or ``cuda:1``, of a kind this torch
    has, with an index it has)."""
    checked = parse_device(device)
    if checked.type == "cpu":
        return checked
    backend = getattr(torch, checked.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise ValueError(f"device: {device!r} is not available to this torch build ({torch.__version__}); use cpu")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if checked.index is not None and checked.index >= count:
        raise ValueError(f"device: {device!r} does not exist; this machine has {count} {checked.type} device(s)")
    return checked
