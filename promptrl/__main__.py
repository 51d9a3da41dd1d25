"""``python -m promptrl``: the ``promptrl`` command."""

import sys

from promptrl.cli import main

sys.exit(main())
