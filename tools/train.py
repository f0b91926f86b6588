#!/usr/bin/env python
"""Thin wrapper: the same as `featx train` (see --help). Distributed:
torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch"""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
