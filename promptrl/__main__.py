"""``python -m promptrl``: the ``promptrl`` command."""

import sys

from promptrl.experiments.cli import main

sys.exit(main())
