#!/usr/bin/env python
"""Thin wrapper: the same as `featx predict` (see --help)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
