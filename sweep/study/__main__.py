"""`python -m sweep.study CMD ...`: the same as `motion-sweep study CMD ...`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
