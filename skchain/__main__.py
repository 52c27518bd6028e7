"""``python -m skchain``: the ``skchain`` command line."""

import sys

from .bench._cli import main

if __name__ == "__main__":
    sys.exit(main())
