"""Files that readers never see half-written: atomic files and checkpoint folders (written beside the old
copy and swapped in), CSV text, and optimizer moments as flat tensors for safetensors (no pickle)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a scratch folder; on success it replaces ``final`` (the old copy survives as
    ``<final>.old`` until the swap is done, and :func:`latest_folder` falls back to it)."""
    final = Path(final)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path`` (readers never see
    half a file), on an error it is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """``header`` and ``rows`` as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def latest_folder(final: Path, marker: str) -> Path | None:
    """The complete checkpoint folder (``final`` or its ``.old`` copy) holding ``marker``, if any."""
    final = Path(final)
    for folder in (final, final.with_name(final.name + ".old")):
        if (folder / marker).is_file():
            return folder
    return None


def saved_steps(folder: Path | None) -> int:
    """``steps_trained`` in ``folder/config.json``: 0 when there is no folder or no config yet."""
    config = None if folder is None else Path(folder) / CONFIG_NAME
    return json.loads(config.read_text()).get("steps_trained", 0) if config is not None and config.is_file() else 0


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as flat tensors ``<prefix>.<param id>.<key>``."""
    return {
        f"{prefix}.{pid}.{k}": torch.as_tensor(v).clone()
        for pid, st in opt.state_dict()["state"].items()
        for k, v in st.items()
    }


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Restore what :func:`optimizer_tensors` saved (hyperparameters come from the optimizer itself)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            pid, key = k[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[key] = v
    sd["state"] = state
    opt.load_state_dict(sd)
