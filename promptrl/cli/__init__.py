"""The ``promptrl`` command: task suites, datasets, training, evaluation, the Table 1 reproduction and the
ablations. :func:`main` is the entry point; the parser is in :mod:`promptrl.cli.parser`, what each
subcommand does in :mod:`promptrl.cli.commands` and the option helpers in :mod:`promptrl.cli.options`."""

from promptrl.cli.commands import command_line
from promptrl.cli.options import add_dataclass_options, field_docs, given, home
from promptrl.cli.parser import (
    ABLATION_BUDGET_FIELDS,
    BUDGET_FIELDS,
    GENERATOR_FIELDS,
    PLM_FIELDS,
    SAC_FIELDS,
    build_parser,
    main,
)

__all__ = [
    "ABLATION_BUDGET_FIELDS",
    "BUDGET_FIELDS",
    "GENERATOR_FIELDS",
    "PLM_FIELDS",
    "SAC_FIELDS",
    "add_dataclass_options",
    "build_parser",
    "command_line",
    "field_docs",
    "given",
    "home",
    "main",
]
