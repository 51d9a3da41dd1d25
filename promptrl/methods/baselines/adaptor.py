"""Adaptor (Appendix F, after HDT without its hyper-network): a bottleneck adaptor and a FiLM layer
after every decoder block of the frozen PLM; only the adaptors train."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from promptrl.common.config_checks import check_int
from promptrl.data.windows import Segment
from promptrl.methods.base import FrozenPLMMethod, TrainingSettings, check_number

MAX_ADAPTOR_WIDTH = 1 << 16
"""Largest ``hidden`` an adaptor config may ask for."""


@dataclass
class AdaptorSettings(TrainingSettings):
    """Settings of :class:`Adaptor`."""

    hidden: int = 16
    """Bottleneck width of each adaptor (Appendix F: 16)."""
    max_prompts: int = 1000
    """Prompt windows kept per task for ``generate_prompt``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("hidden", self.hidden, 1, MAX_ADAPTOR_WIDTH)
        check_number("max_prompts", self.max_prompts, integer=True)


class BlockAdaptor(nn.Module):
    """``FiLM(h + U(GELU(D(h))))`` on a block's output ``h``: down-projection D to ``hidden``, GELU,
    up-projection U, residual, then a per-feature scale and shift. The identity at initialization
    (U is zero, the scale one, the shift zero)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.up(nn.functional.gelu(self.down(h)))
        return h * self.scale + self.shift


class Adaptor(FrozenPLMMethod):
    """A :class:`BlockAdaptor` after each of the PLM's decoder blocks (forward hooks, attached only
    while this method runs the PLM, so the PLM object itself behaves as before), trained with AdamW
    on the action loss over few-shot (history, prompt) windows; prompts are real windows of the
    task's data (as for Prompt-DT), also served by ``generate_prompt``.

    Trainable parameters: ``n_layer * (E*h + h + h*E + E + 2*E)`` (E = embed_dim, h = ``hidden``).
    """

    settings_class: ClassVar[type[AdaptorSettings]] = AdaptorSettings

    def _build(self) -> None:
        super()._build()
        p = self.plm.settings
        self.module.adaptors = nn.ModuleList(BlockAdaptor(p.embed_dim, self.settings.hidden) for _ in range(p.n_layer))

    @contextlib.contextmanager
    def _attached(self) -> Iterator[None]:
        """The PLM's blocks pass their output through the adaptors inside this context."""
        handles = [
            block.register_forward_hook(lambda _module, _args, out, adaptor=adaptor: adaptor(out))
            for block, adaptor in zip(self.plm.network.blocks, self.module.adaptors)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _forward(self, history: Segment, prompt: Segment | None, last_only: bool = False) -> torch.Tensor:
        with self._attached():
            return self.plm.network(history, prompt, last_only=last_only)
