"""``python -m imgtools``: the command line."""

import sys

from imgtools.cli import main

sys.exit(main())
