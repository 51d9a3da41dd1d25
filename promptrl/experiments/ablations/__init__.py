"""The ablations of the Prompt Diffuser paper, each one function and one ``promptrl ablate <name> <suite>``:

- ``init`` (Table 2): prompt initialization (expert / medium / random windows) x fine-tuning data
  quality, for Prompt-Tuning DT and the Prompt Diffuser (whose generation is conditioned on the
  initial prompts' y, Algorithm 1 line 9).
- ``update-rules`` (Fig. 3): the Prompt Diffuser fine-tuned with each gradient rule (dm, dt, sum,
  projection), relative to dm.
- ``zero-shot`` (Table 9): few-shot methods against zero-shot ones that see no data of the test task
  (Prompt-DT with training-task prompts; the pre-trained generator conditioned on the target return).
- ``prompts`` (Table 6, Fig. 5): linear CKA of Prompt-Tuning DT's and the Prompt Diffuser's prompts to
  the expert windows they start from, and a t-SNE plot of the three.
- ``denoising`` (Fig. 4): the reverse process of a shipped Prompt Diffuser, plotted.
- ``prompt-length`` (Table 8): a PLM and a generator per prompt length K* (trained here, at a budget
  given on the command line), fine-tuned and evaluated like Table 1's Prompt Diffuser.
- ``plm-budget`` (not in the paper): one PLM measured at several fractions of the reference training
  budget, each with expert prompts, Prompt-Tuning DT and the Prompt Diffuser under two update rules,
  and the paper's ordering tested at each budget.
- ``generator`` (Table 5): the diffusion generator against a conditional VAE pre-trained and
  fine-tuned the same way, on each suite.
- ``temperature`` (not in the paper): the Prompt Diffuser's sampling temperature chosen on the
  validation tasks (training tasks where a suite has none), never the test tasks.
- ``noise-net`` (not in the paper): the noise network's architecture chosen the same way, each
  candidate pre-trained as the shipped generator was.

One module each: :mod:`.initialization`, :mod:`.gradient_rules`, :mod:`.few_vs_zero_shot`,
:mod:`.prompts`, :mod:`.reverse_process`, :mod:`.prompt_lengths`, :mod:`.plm_budgets`,
:mod:`.temperature`, :mod:`.noise_network` and :mod:`.generator`; what they share is in :mod:`.common`.

Every adaptation uses the shipped models of ``hub_models/<suite>/`` and the few-shot data of
:mod:`promptrl.experiments.reproduce`; each (setting, seed) is cached as JSON under ``<out>/runs/``, so a rerun
resumes. The grids of ``init``, ``update-rules``, ``zero-shot`` and ``prompt-length`` take an ``executor``
(``promptrl.experiments.executors``) that runs their (setting, seed, test task) units on worker
processes or a Ray cluster. Results go to ``<out>/<name>-<suite>.md`` and ``.csv`` (and ``.png``), the paper beside ours.
Plots need matplotlib and t-SNE scikit-learn (``pip install "promptrl[plots]"``).
"""

from promptrl.experiments.ablations.common import DEFAULT_BUDGET, UPDATE_RULES, context, measure, measure_all
from promptrl.experiments.ablations.few_vs_zero_shot import zero_shot
from promptrl.experiments.ablations.generator import generative_models
from promptrl.experiments.ablations.gradient_rules import TABLE1_RULES, update_rules
from promptrl.experiments.ablations.initialization import prompt_initialization
from promptrl.experiments.ablations.noise_network import NOISE_NETWORKS, noise_network_selection
from promptrl.experiments.ablations.plm_budgets import (
    PLM_BUDGET_ADAPTATION,
    PLM_BUDGET_CHECKS,
    PLM_BUDGET_COLUMNS,
    PLM_BUDGET_FRACTIONS,
    REFERENCE_BATCH_PER_TASK,
    REFERENCE_PLM_STEPS,
    plm_budget,
)
from promptrl.experiments.ablations.prompt_lengths import PROMPT_LENGTHS, prompt_length
from promptrl.experiments.ablations.prompts import linear_cka, prompt_features, prompt_similarity
from promptrl.experiments.ablations.reverse_process import MAX_REAL_WINDOWS, denoising
from promptrl.experiments.ablations.temperature import TEMPERATURES, temperature_selection

ABLATIONS = (
    "init",
    "update-rules",
    "zero-shot",
    "prompts",
    "denoising",
    "prompt-length",
    "plm-budget",
    "temperature",
    "noise-net",
    "generator",
)
DEFAULT_SUITES = {
    "init": "cheetah-vel",
    "update-rules": "all",
    "zero-shot": "ant-dir-ood",
    "prompts": "ant-dir-ood",
    "denoising": "cheetah-vel",
    "prompt-length": "cheetah-vel",
    "plm-budget": "cheetah-vel",
    "temperature": "cheetah-vel",
    "noise-net": "ant-dir",
    "generator": "all",
}
"""The suite each ablation runs on by default: the paper's ("all": the Table 1 suites)."""

__all__ = [
    "ABLATIONS",
    "DEFAULT_BUDGET",
    "DEFAULT_SUITES",
    "MAX_REAL_WINDOWS",
    "NOISE_NETWORKS",
    "PLM_BUDGET_ADAPTATION",
    "PLM_BUDGET_CHECKS",
    "PLM_BUDGET_COLUMNS",
    "PLM_BUDGET_FRACTIONS",
    "PROMPT_LENGTHS",
    "REFERENCE_BATCH_PER_TASK",
    "REFERENCE_PLM_STEPS",
    "TABLE1_RULES",
    "TEMPERATURES",
    "UPDATE_RULES",
    "context",
    "denoising",
    "generative_models",
    "linear_cka",
    "measure",
    "measure_all",
    "noise_network_selection",
    "plm_budget",
    "prompt_features",
    "prompt_initialization",
    "prompt_length",
    "prompt_similarity",
    "temperature_selection",
    "update_rules",
    "zero_shot",
]
