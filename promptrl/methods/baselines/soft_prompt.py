"""Soft Prompt (Appendix F): the prompt's embedded tokens are free parameters tuned with AdamW."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from promptrl.data.episodes import Episode
from promptrl.data.windows import Segment
from promptrl.methods.base import FrozenPLMMethod, TrainingSettings


@dataclass
class SoftPromptSettings(TrainingSettings):
    """Settings of :class:`SoftPrompt` (Appendix F: AdamW, learning rate and weight decay 1e-4)."""


class OneTaskPrompt(FrozenPLMMethod):
    """Base of the methods that tune one prompt for one task, initialized from a real prompt window
    (drawn, seeded, from ``prompt_data`` or the few-shot data) and kept in the prompt bank;
    ``generate_prompt`` returns that window (SoftPrompt) or the tuned prompt (PromptTuningDT)."""

    def _prepare(self, tasks: dict[int, list[Episode]], prompts: dict[int, list[Episode]]) -> None:
        if len(tasks) != 1 or set(prompts) != set(tasks):
            raise ValueError(
                f"{type(self).__name__} tunes one prompt for one task: few_shot_data (and prompt_data) must "
                f"hold a single task, got tasks {sorted(tasks)} (prompts: {sorted(prompts)}); adapt one per task"
            )
        if len(self.bank) and int(self.bank.task[0]) not in tasks:
            raise ValueError(
                f"this {type(self).__name__} was tuned for task {int(self.bank.task[0])}, not {sorted(tasks)}: "
                "adapt a new one for another task"
            )
        if len(self.bank) == 0:  # a later learn() goes on from the tuned prompt
            self.bank.fill(prompts, 1, self._rng)
            with torch.no_grad():
                self._initialize(self.plm._segment(self.bank.observation([0])))
        self._make_sampler(tasks, None)

    def _initialize(self, prompt: Segment) -> None:
        """Set the tuned prompt from a real (normalized) prompt segment of batch size 1."""
        raise NotImplementedError


class SoftPrompt(OneTaskPrompt):
    """Soft prompt: the 3K* embedded prompt tokens (K* (rtg, state, action) tokens of width
    ``embed_dim``) are free parameters, initialized by embedding a real prompt window of the task,
    tuned with AdamW on the frozen PLM's action loss over few-shot history windows.

    Trainable parameters: ``3 * K* * embed_dim``. ``predict`` uses the soft prompt and ignores the
    observation's ``prompt_*`` entries (``generate_prompt`` returns the initial real window only so
    that wrappers have a prompt to show).
    """

    settings_class: ClassVar[type[SoftPromptSettings]] = SoftPromptSettings

    def _build(self) -> None:
        super()._build()
        p = self.plm.settings
        self.module.tokens = nn.Parameter(torch.zeros(3 * p.prompt_length, p.embed_dim, device=self.device))

    def _initialize(self, prompt: Segment) -> None:
        self.module.tokens.copy_(self.plm.network.prompt_embed(prompt)[0])

    def _forward(self, history: Segment, prompt: Segment | None, last_only: bool = False) -> torch.Tensor:
        tokens = self.module.tokens
        return self.plm.network(
            history, prompt_tokens=tokens.expand(history.timesteps.shape[0], *tokens.shape), last_only=last_only
        )
