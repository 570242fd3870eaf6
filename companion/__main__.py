"""``python -m companion``: the command-line trainer (see :mod:`companion.cli`)."""

import sys

from companion.cli import main

sys.exit(main())
