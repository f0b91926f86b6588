#!/usr/bin/env python
"""Thin wrapper: the same as `featx bench` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
