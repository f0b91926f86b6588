"""Thin wrapper: the same as `featx extract` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
