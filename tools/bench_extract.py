#!/usr/bin/env python
"""Thin wrapper: the same as `featx bench-extract` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-extract", *sys.argv[1:]]))
