"""promptrl: few-shot adaptation of offline-RL policies by prompt generation (Prompt Diffuser)."""

from promptrl.envs import register_envs
from promptrl.suites import TaskSuite, available_suites, load_suite

register_envs()

__all__ = ["TaskSuite", "available_suites", "load_suite"]
__version__ = "0.1.0"
