"""The training loop every promptrl model uses, and the checks of its budget and settings.

:func:`train` calls a step function ``total_steps`` times with a tqdm progress bar, counts the steps
in the model's ``settings.steps_trained``, stops on a non-finite loss and lets a callback (a plain
callable returning False) stop early. :func:`training_budget` turns ``learn``'s ``total_steps`` or
``epochs`` x ``steps_per_epoch`` into a number of steps.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from promptrl.common.distributed import any_rank, is_main, mean_over_ranks

Callback = Callable[[dict[str, Any]], "bool | None"]
"""Called after every update with ``{"step", <losses>, "model"}``; returning False stops training."""

_RUN_BAR: contextvars.ContextVar[Any] = contextvars.ContextVar("promptrl_run_bar", default=None)


@contextlib.contextmanager
def run_progress(model: Any, total_steps: int, progress_bar: bool = True) -> Iterator[Any]:
    """One progress bar over a whole (chunked, resumable) run: from the model's ``steps_trained`` to
    ``total_steps``. Every :func:`train` inside the block advances this bar instead of opening its own."""
    bar = tqdm(
        total=total_steps,
        initial=model.settings.steps_trained,
        desc=type(model).__name__,
        disable=not (progress_bar and is_main()),
    )
    token = _RUN_BAR.set(bar)
    try:
        yield bar
    finally:
        _RUN_BAR.reset(token)
        bar.close()


def check_number(name: str, value: Any, *, integer: bool = False, minimum: float = 0.0, strict: bool = True) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a (strictly, if ``strict``) larger-than-``minimum`` number."""
    kind = (int,) if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {bound}, got {value!r}")


def check_callback(callback: Any) -> None:
    """Raise a TypeError unless ``callback`` is callable or None."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")


def training_budget(
    total_steps: int | None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    settings: Any = None,
) -> int:
    """The number of updates ``learn`` makes: ``total_steps``, or ``epochs`` x ``steps_per_epoch`` (the
    paper's way of giving the budget, Table 4), each defaulting to the field of that name of
    ``settings`` (else 1). Giving ``total_steps`` together with either of the others is a ValueError.

    >>> training_budget(None, epochs=20, steps_per_epoch=100)
    2000
    >>> training_budget(2000)
    2000
    """
    if total_steps is not None:
        if epochs is not None or steps_per_epoch is not None:
            raise ValueError(
                f"give total_steps or epochs/steps_per_epoch, not both: got total_steps={total_steps!r}, "
                f"epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}"
            )
        check_number("total_steps", total_steps, integer=True)
        return total_steps
    epochs = getattr(settings, "epochs", 1) if epochs is None else epochs
    steps_per_epoch = getattr(settings, "steps_per_epoch", 1) if steps_per_epoch is None else steps_per_epoch
    check_number("epochs", epochs, integer=True)
    check_number("steps_per_epoch", steps_per_epoch, integer=True)
    return epochs * steps_per_epoch


def train(
    model: Any,
    module: nn.Module,
    step: Callable[[], dict[str, float]],
    total_steps: int,
    callback: Callback | None = None,
    progress_bar: bool = True,
) -> None:
    """Run ``step`` (one update; returns its losses by name) ``total_steps`` times on ``module`` in train mode.

    After every update ``model.settings.steps_trained`` grows by one, a non-finite loss raises
    FloatingPointError, the progress bar shows the losses and ``callback({"step": steps_trained,
    **losses, "model": model})`` may stop training by returning False. ``module`` is back in eval
    mode afterwards, also after an error.

    Under a ``torch.distributed`` process group every rank runs this loop: the losses are averaged
    over the ranks before they are checked, shown or passed on (so all ranks see the same numbers),
    a callback returning False on any rank stops every rank after the same update, and only rank 0
    shows a progress bar. Inside :func:`run_progress` the run's bar is advanced instead of a new one.
    """
    check_callback(callback)
    settings = model.settings
    shared = _RUN_BAR.get()
    bar = shared or tqdm(total=total_steps, desc=type(model).__name__, disable=not (progress_bar and is_main()))
    module.train()
    try:
        for _ in range(total_steps):
            values = mean_over_ranks(step())
            settings.steps_trained += 1
            if not all(math.isfinite(v) for v in values.values()):
                raise FloatingPointError(f"training loss became non-finite at step {settings.steps_trained}: {values}")
            bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})
            bar.update()
            stop = (
                callback is not None and callback({"step": settings.steps_trained, **values, "model": model}) is False
            )
            if any_rank(stop):
                break
    finally:
        if shared is None:
            bar.close()
        module.eval()


def train_in_chunks(
    model: Any,
    total_steps: int,
    chunk_steps: int,
    learn: Callable[[int], Any],
    save: Callable[[], Any],
    names: tuple[str, str] = ("total_steps", "chunk_steps"),
    progress_bar: bool = True,
) -> None:
    """Resumable training: ``learn(n)`` in chunks of at most ``chunk_steps`` updates, each followed by
    ``save()``, until ``model.settings.steps_trained`` reaches ``total_steps``. A model loaded from the
    last save continues where it stopped; one already trained that far does nothing. One progress bar
    (see :func:`run_progress`) covers the run from the loaded step on. ``names``: what the caller calls
    the two counts, for the error a bad value gets.

    A chunk ends at the next multiple of ``chunk_steps``, so that a run resumed from any save passes
    through the same chunk boundaries as one that never stopped."""
    check_number(names[0], total_steps, integer=True)
    check_number(names[1], chunk_steps, integer=True)
    with run_progress(model, total_steps, progress_bar):
        while model.settings.steps_trained < total_steps:
            done = model.settings.steps_trained
            learn(min(chunk_steps - done % chunk_steps, total_steps - done))
            save()
