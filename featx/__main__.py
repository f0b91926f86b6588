"""``python -m featx`` (and ``torchrun -m featx extract ...``): the featx command."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main())
