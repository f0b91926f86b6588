#!/usr/bin/env python
"""Thin wrapper: the same as `featx make-digits` (see --help): scikit-learn's digits as an ImageFolder."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-digits", *sys.argv[1:]]))
