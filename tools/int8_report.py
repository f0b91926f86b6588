"""Thin wrapper: the same as `featx int8-report` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["int8-report", *sys.argv[1:]]))
