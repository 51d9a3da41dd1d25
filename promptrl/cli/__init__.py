"""The library's command line: task suites, datasets, PLM and generator training, evaluation. The parser is
in :mod:`promptrl.cli.parser`, what each subcommand does in :mod:`promptrl.cli.commands` and the option
helpers in :mod:`promptrl.cli.options`. The ``promptrl`` command is this command line extended with the
experiments' subcommands (``train expert``, ``reproduce``, ``ablate``), defined above the library in
``promptrl.experiments.cli``."""

from promptrl.cli.commands import command_line
from promptrl.cli.options import add_dataclass_options, field_docs, given, home
from promptrl.cli.parser import (
    GENERATOR_FIELDS,
    PLM_FIELDS,
    build_parser,
    main,
)

__all__ = [
    "GENERATOR_FIELDS",
    "PLM_FIELDS",
    "add_dataclass_options",
    "build_parser",
    "command_line",
    "field_docs",
    "given",
    "home",
    "main",
]
