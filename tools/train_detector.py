#!/usr/bin/env python
"""Thin wrapper: the same as `featx train-detector` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-detector", *sys.argv[1:]]))
