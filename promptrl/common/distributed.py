"""The thin seam between single-process and data-parallel training with ``torch.distributed``.

Every helper here does the single-process thing (nothing, or the identity) when no process group
is initialized, so training code calls them unconditionally. Under a group (e.g. started by
``torchrun``), each rank draws its own batches (seeded by :func:`rank_seed`), gradients are
averaged over ranks, masked losses are normalized by the global number of valid tokens
(:func:`global_sum`), a stop decided on any rank stops all (:func:`any_rank`) and only rank 0
(:func:`is_main`) writes files, logs and progress bars.

>>> world()  # no process group: one process
Rank(rank=0, size=1, local_rank=0)
>>> rank_seed(7, Rank(0, 1, 0))  # one process keeps its seed
7
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


class Rank(NamedTuple):
    """Where this process stands in the process group (0, 1, 0 without one)."""

    rank: int
    size: int
    local_rank: int


def active() -> bool:
    """Whether a process group with more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> Rank:
    """This process's rank, the world size and the rank on this machine (``LOCAL_RANK``, set by torchrun)."""
    if not active():
        return Rank(0, 1, 0)
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files, logs and progress bars."""
    return world().rank == 0


def rank_seed(seed: int, where: Rank | None = None) -> int:
    """The seed of this rank's random draws: ``seed`` itself in a single process, else a 32-bit seed
    from child ``rank`` of ``numpy.random.SeedSequence(seed).spawn(size)`` (independent streams per rank)."""
    where = world() if where is None else where
    if where.size == 1:
        return seed
    child = np.random.SeedSequence(seed).spawn(where.size)[where.rank]
    return int(child.generate_state(1)[0])


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if active():
        dist.barrier()


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks (a new tensor, without gradient; ``value`` itself in a single process)."""
    if not active():
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (one all-reduce), so that every rank logs and checks the same numbers."""
    if not active() or not values:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    total = global_sum(torch.tensor(list(values.values()), dtype=torch.float64, device=device))
    return dict(zip(values, (total / dist.get_world_size()).tolist()))


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (e.g. a callback asking to stop)."""
    if not active():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    return bool(global_sum(torch.tensor([float(flag)], device=device)).item() > 0)


def average_gradients(grads: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients averaged over the ranks (one all-reduce of their concatenation); unchanged in a single process."""
    grads = list(grads)
    if not active() or not grads:
        return grads
    flat = global_sum(torch.cat([g.reshape(-1) for g in grads])) / dist.get_world_size()
    return [g.view_as(like) for g, like in zip(flat.split([g.numel() for g in grads]), grads)]


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (nothing in a single process)."""
    if not active():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged
    over the ranks during ``backward``; rank 0's weights broadcast on wrapping), or ``module`` itself
    in a single process. Call the wrapper for the forward pass; the module keeps the weights."""
    if not active():
        return module
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def backend_for(device: str | torch.device) -> str:
    """The process-group backend for a device: ``nccl`` for CUDA, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group_from_env(device: str) -> Iterator[str]:
    """Under ``torchrun`` (environment variable ``WORLD_SIZE`` > 1): initialize the default process
    group (gloo for a CPU device, NCCL for CUDA), yield this rank's device (``cuda:LOCAL_RANK`` for a
    CUDA device without an index) and destroy the group on exit. Otherwise, or when a group is already
    initialized, yield ``device`` unchanged and leave the process group alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        yield device
        return
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={size} asks for {size} processes, but this torch has no torch.distributed")
    kind = torch.device(device)
    if kind.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        kind = torch.device("cuda", local if kind.index is None else kind.index)
        torch.cuda.set_device(kind)
    dist.init_process_group(backend_for(kind))
    try:
        yield str(kind)
    finally:
        dist.destroy_process_group()
