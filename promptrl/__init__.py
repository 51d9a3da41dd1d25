"""promptrl: few-shot adaptation of offline-RL policies by prompt generation (Prompt Diffuser)."""

from promptrl.envs import register_envs
from promptrl.evaluation import EvalResult, evaluate
from promptrl.plm import PromptDT
from promptrl.suites import TaskSuite, available_suites, load_suite
from promptrl.diffuser import PromptDiffuser
from promptrl.wrappers import PromptWrapper, VectorPromptWrapper

register_envs()

__all__ = ["EvalResult", "PromptDT", "PromptDiffuser", "PromptWrapper", "TaskSuite", "VectorPromptWrapper", "available_suites", "evaluate", "load_suite"]
__version__ = "0.1.0"
