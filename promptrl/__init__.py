"""promptrl: few-shot adaptation of offline-RL policies by prompt generation (Prompt Diffuser)."""

from promptrl.evaluation import EvalResult, evaluate
from promptrl.methods.baselines import (
    MTORL,
    Adaptor,
    FineTune,
    FixedPrompt,
    PromptTuningDT,
    SoftPrompt,
    VAEPromptGenerator,
)
from promptrl.methods.diffuser import PromptDiffuser
from promptrl.methods.plm import PromptDT
from promptrl.suites import TaskSuite, available_suites, load_suite
from promptrl.tasks.envs import register_envs
from promptrl.wrappers import PromptWrapper, VectorPromptWrapper

register_envs()

__all__ = [
    "MTORL",
    "Adaptor",
    "EvalResult",
    "FineTune",
    "FixedPrompt",
    "PromptDT",
    "PromptDiffuser",
    "PromptTuningDT",
    "PromptWrapper",
    "SoftPrompt",
    "TaskSuite",
    "VAEPromptGenerator",
    "VectorPromptWrapper",
    "available_suites",
    "evaluate",
    "load_suite",
]
__version__ = "0.1.0"
