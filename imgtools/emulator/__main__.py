"""``python -m imgtools.emulator``: run the emulator in the foreground (see ``command``)."""

import sys

from imgtools.emulator.command import build_parser, config_from, main

__all__ = ["build_parser", "config_from", "main"]

if __name__ == "__main__":
    sys.exit(main())
