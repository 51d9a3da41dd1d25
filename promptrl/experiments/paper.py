"""What the Prompt Diffuser paper reports: the layout of its Table 1, the ordering it claims, and its
numbers (``paper_tables.json``), which the experiments print beside ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAPER_TABLES = Path(__file__).resolve().parent / "paper_tables.json"
"""The paper's reported numbers, one key per table or figure (``"table1"``, ``"table2_cheetah_vel"``...)."""

TABLE1_SUITES = ("cheetah-dir", "cheetah-vel", "ant-dir", "mw-reach")
"""The suites of Table 1 (its rows)."""
METHODS = (
    "Prompt-DT-Random",
    "Prompt-DT-Expert",
    "MT-ORL",
    "Soft Prompt",
    "Adaptor",
    "Prompt-DT-FT",
    "Prompt-Tuning DT",
    "Prompt Diffuser",
    "Prompt-DT-FT-Full",
)
"""The methods of Table 1 (its columns), in the paper's order."""
VARIANTS = ("Prompt Diffuser (dt)", "Prompt Diffuser (T=0)")
"""Methods the reproduction runs beside the paper's columns (tabulated after them): the Prompt Diffuser
fine-tuned with the L_DT-only rule (Eq. 19), and the Prompt Diffuser sampled at temperature 0 (beta = 0
in Eq. 16)."""

ORDERING = (
    ("Prompt Diffuser", ">=", "Prompt-Tuning DT"),
    ("Prompt-Tuning DT", ">=", "Prompt-DT-Expert"),
    ("Prompt-DT-Expert", ">", "Prompt-DT-Random"),
    ("Prompt-DT-Random", ">", "MT-ORL"),
)
"""The paper's ordering of the Table 1 columns (Prompt Diffuser >= Prompt-Tuning DT >= Expert > Random > MT-ORL)..."""
NOT_ADAPTED = ("Prompt-DT-Random", "Prompt-DT-Expert", "MT-ORL")
"""Table 1 columns that train nothing on the test task (their numbers do not depend on the adaptation budget)."""
TABLE4_STEPS = {"adaptation": 2_000, "full": 10_000}
"""Table 4's budget: gradient steps of the few-shot adaptation, and of Prompt-DT-FT-Full on the whole dataset."""
GAP_BAR = 0.10
"""...and the Prompt Diffuser within 10% of Prompt-DT-FT-Full: the plain relative gap |PD - FT-Full| / |FT-Full|."""


def paper(key: str) -> Any:
    """The paper's numbers of one table or figure (a key of :data:`PAPER_TABLES`)."""
    tables = json.loads(PAPER_TABLES.read_text())
    if key not in tables:
        raise KeyError(f"no paper table {key!r}; choose from {sorted(k for k in tables if not k.startswith('_'))}")
    return tables[key]


def paper_table() -> dict[str, Any]:
    """Table 1 of the paper: ``"columns"`` (its methods), and per suite one ``[mean, std]`` (or None) per column."""
    return paper("table1")
