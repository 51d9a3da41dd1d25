"""Where the units of an experiment grid run: in this process, in local worker processes, or as Ray tasks.

An executor maps a function over independent, picklable work items and yields ``(item, result)``
pairs as they finish, in whatever order; the caller records each result under the item's key, so
what a grid measures never depends on which worker ran a unit or when it finished. A worker that
dies mid-unit (killed, out of memory) has its units run again, up to ``max_retries`` times; an
exception raised by the function itself is not retried: it ends the map.

- :class:`LocalPool`: ``concurrent.futures.ProcessPoolExecutor`` with the "spawn" start method on
  this machine.
- :class:`RayExecutor`: one Ray task per unit with its own CPU/GPU request, on a Ray cluster
  (``address``) or on a Ray instance started here, bound to the loopback interface, without its
  dashboard and with usage reporting off. Needs ``pip install "promptrl[ray]"``.

Each worker sets ``torch.set_num_threads(threads)`` before a unit (default 1: units run side by side).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from promptrl.common.config_checks import check_int

__all__ = ["EXECUTORS", "Executor", "InProcess", "LocalPool", "RayExecutor", "make_executor"]

EXECUTORS = ("inprocess", "local", "ray")
"""The executor kinds :func:`make_executor` builds (``--executor`` of ``reproduce`` and ``ablate``)."""

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger(__name__)


def _call(fn: Callable[[T], R], item: T, threads: int | None) -> R:
    """Run one unit in a worker: set its torch threads, then call ``fn(item)``."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(item)


class Executor:
    """Maps a function over work items; use as a context manager (or call :meth:`close`)."""

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        """Yield ``(item, fn(item))`` for every item, each as soon as it is done."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (a later map starts new ones)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcess(Executor):
    """Runs every unit here, one after the other, in the order given."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, _call(fn, item, self.threads)


class LocalPool(Executor):
    """``workers`` spawned processes on this machine. When a worker dies, the pool breaks: it is
    started again and the units that had not finished are submitted again (each at most
    ``max_retries`` more times).

    :param workers: worker processes.
    :param threads: torch threads of each worker (None: torch's default).
    :param max_retries: how many times a unit runs again after its worker died.
    """

    def __init__(self, workers: int = 2, threads: int | None = 1, max_retries: int = 3) -> None:
        check_int("workers", workers, 1)
        self.workers = workers
        if threads is not None:
            check_int("threads", threads, 1)
        self.threads = threads
        check_int("max_retries", max_retries, 0)
        self.max_retries = max_retries
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        retries = dict.fromkeys(range(len(items)), 0)
        while retries:
            pool = self._start()
            futures: dict[Future, int] = {pool.submit(_call, fn, items[k], self.threads): k for k in retries}
            broken = False
            try:
                waiting = set(futures)
                while waiting:
                    done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                    for future in done:
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        k = futures[future]
                        del retries[k]
                        yield items[k], result
            finally:
                if broken or retries:  # a dead worker, or the caller stopped early: drop the unfinished units
                    for future in futures:
                        future.cancel()
            if broken:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
                for k in retries:
                    retries[k] += 1
                    if retries[k] > self.max_retries:
                        raise RuntimeError(f"a worker died {retries[k]} times while running {items[k]!r}")
                logger.warning("a worker died: %d unfinished unit(s) submitted again", len(retries))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _import_ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray is imported: no usage reports
    try:
        import ray
    except ImportError as err:
        raise ImportError('--executor ray needs Ray: pip install "promptrl[ray]"') from err
    return ray


class RayExecutor(Executor):
    """One Ray task per unit, each asking for ``cpus`` CPUs and ``gpus`` GPUs (fractions allowed);
    Ray runs a task again when its worker dies (``max_retries``).

    Connects to the cluster at ``address`` (e.g. ``"auto"`` or ``"ray://head:10001"``); without one,
    uses the Ray instance this process already started, or starts one here with ``num_cpus`` CPUs
    (default: all) that listens on the loopback interface only, with no dashboard. :meth:`close`
    shuts down only a Ray instance this executor started.

    :param address: a Ray cluster's address, or None for a local instance.
    :param cpus: CPUs per unit.
    :param gpus: GPUs per unit.
    :param threads: torch threads of each unit (None: torch's default).
    :param max_retries: how many times a unit runs again after its worker died.
    :param num_cpus: CPUs of a local instance started here.
    """

    def __init__(
        self,
        address: str | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
        threads: int | None = 1,
        max_retries: int = 3,
        num_cpus: int | None = None,
    ) -> None:
        for name, value in (("cpus", cpus), ("gpus", gpus)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if cpus == 0 and gpus == 0:
            raise ValueError("cpus and gpus must not both be 0: a unit needs a CPU or a GPU")
        self.address, self.cpus, self.gpus, self.num_cpus = address, float(cpus), float(gpus), num_cpus
        if threads is not None:
            check_int("threads", threads, 1)
        self.threads = threads
        check_int("max_retries", max_retries, 0)
        self.max_retries = max_retries
        self._started = False

    def _ray(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
            self._started = True
        return ray

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        ray = self._ray()
        remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries)(_call)
        refs = {remote.remote(fn, item, self.threads): k for k, item in enumerate(items)}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    k = refs.pop(ref)
                    yield items[k], ray.get(ref)
        finally:
            for ref in refs:  # the caller stopped early or a unit failed: the rest is not needed
                ray.cancel(ref)

    def close(self) -> None:
        if self._started:
            _import_ray().shutdown()
            self._started = False


def make_executor(
    kind: str = "inprocess",
    workers: int = 2,
    address: str | None = None,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 0.0,
    threads: int | None = 1,
    max_retries: int = 3,
) -> Executor | None:
    """The executor ``kind`` (one of :data:`EXECUTORS`); None for ``"inprocess"``, where the grid
    runs its cells here as it always has (with progress per task)."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
    if kind == "local":
        return LocalPool(workers, threads, max_retries)
    if kind == "ray":
        return RayExecutor(address, cpus_per_cell, gpus_per_cell, threads, max_retries)
    return None
