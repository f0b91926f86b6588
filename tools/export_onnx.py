#!/usr/bin/env python
"""Thin wrapper: the same as `featx export` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
