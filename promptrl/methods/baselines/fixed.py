"""Baselines without any tuning (Appendix F): Prompt-DT with expert or random prompts, and MT-ORL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from promptrl.methods.base import FrozenPLMMethod, MethodSettings, check_number
from promptrl.suites import load_suite
from promptrl.tasks.spec import QUALITIES


@dataclass
class FixedPromptSettings(MethodSettings):
    """Settings of :class:`FixedPrompt`."""

    quality: str = "expert"
    """Quality of the prompt data: ``expert`` (Prompt-DT-Expert), ``random`` (Prompt-DT-Random) or ``medium``."""
    max_prompts: int = 1000
    """Prompt windows kept per task (a seeded random subset of all whole windows)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {self.quality!r}")
        check_number("max_prompts", self.max_prompts, integer=True)


class FixedPrompt(FrozenPLMMethod):
    """Prompt-DT-Expert / Prompt-DT-Random: the frozen PLM with real prompts of the target task, no tuning.

    ``learn`` only stores the prompt source: whole K*-step windows of ``prompt_data``, else of
    ``few_shot_data``, else (when built with a promptrl task env) of that task's dataset of quality
    ``quality``. ``generate_prompt`` draws one of them per prompt, so ``evaluate(method, suite,
    prompt=None)`` and :class:`~promptrl.wrappers.PromptWrapper` use them. Nothing is trained:
    ``num_parameters() == 0``. Prompt-DT-Random: ``FixedPrompt(plm, quality="random").learn(
    suite.dataset(task, "random"))``.
    """

    settings_class: ClassVar[type[FixedPromptSettings]] = FixedPromptSettings

    def _learning_data(self, data: Any, prompt_data: Any) -> tuple[Any, Any]:
        source = prompt_data if prompt_data is not None else data
        if source is None:
            if self.env_task is None:
                raise ValueError(
                    "FixedPrompt.learn needs few_shot_data or prompt_data (or an env of a promptrl task, "
                    f"whose {self.settings.quality!r} dataset is then used)"
                )
            suite, task = self.env_task
            source = {task: load_suite(suite).dataset(task, self.settings.quality)}
        return source, None


class MTORL(FrozenPLMMethod):
    """MT-ORL: a Prompt-DT trained without prompts (``PromptDT(suite, use_prompt=False)``), run as is.

    It needs nothing new (the PLM's own ``predict`` works with PromptWrapper and ``evaluate``); this
    thin wrapper gives it the interface of the other baselines: ``learn`` only checks the data,
    ``generate_prompt`` returns empty prompts (wrappers never ask for them), ``num_parameters() == 0``.
    """

    requires_prompt: ClassVar[bool | None] = False

    def _learning_data(self, data: Any, prompt_data: Any) -> tuple[Any, Any]:
        return data, None  # only checked: MT-ORL does no adaptation
