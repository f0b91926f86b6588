#!/usr/bin/env python
"""Thin wrapper: the same as `featx parity` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["parity", *sys.argv[1:]]))
