#!/usr/bin/env python
"""Compare a featx model with its torchvision reference on the same checkpoint (= `featx check-weights`)."""
import sys

from featx.cli import main

if __name__ == "__main__":
    sys.exit(main(["check-weights", *sys.argv[1:]]))
