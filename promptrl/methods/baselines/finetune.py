"""Prompt-DT-FT and Prompt-DT-FT-Full (Appendix F): every PLM parameter trains, on a copy."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

from promptrl.methods.base import FrozenPLMMethod, TrainingSettings, check_number
from promptrl.methods.plm import PromptDT


@dataclass
class FineTuneSettings(TrainingSettings):
    """Settings of :class:`FineTune` (Appendix F: AdamW, learning rate and weight decay 1e-4, 20 epochs)."""

    max_prompts: int = 1000
    """Prompt windows kept per task for ``generate_prompt``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("max_prompts", self.max_prompts, integer=True)


class FineTune(FrozenPLMMethod):
    """Full fine-tuning of a deep copy of the PLM on the target task's data (the PLM object you pass
    stays unchanged): AdamW over all parameters on the action loss of (history, prompt) windows,
    prompts cut from the same data (or ``prompt_data``) and served by ``generate_prompt``.

    - Prompt-DT-FT: ``FineTune(plm).learn(few_shot_data)`` (20 epochs of 100 steps by default).
    - Prompt-DT-FT-Full (the upper bound of Table 1): the same class on the test task's full dataset
      for 100 epochs: ``FineTune(plm).learn(suite.dataset(task, "expert"), epochs=100)``.

    Trainable parameters: all of the PLM's (``percentage() == 100``). Works with an MT-ORL PLM too.
    ``save_pretrained`` writes the original PLM to ``plm/`` and the fine-tuned weights to
    ``model.safetensors``.
    """

    settings_class: ClassVar[type[FineTuneSettings]] = FineTuneSettings
    requires_prompt: ClassVar[bool | None] = None

    def _adopt(self, plm: PromptDT) -> PromptDT:
        self.pretrained = plm
        # A deep copy of everything but the pre-training optimizer state.
        tuned = copy.deepcopy(plm, {id(plm._optimizer): None, id(plm._scheduler): None})
        tuned.network.requires_grad_(True).eval()
        return tuned

    def _build(self) -> None:
        super()._build()
        self.module.network = self.plm.network

    def _pretrained(self) -> PromptDT:
        return self.pretrained
