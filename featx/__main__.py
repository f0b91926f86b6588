"""``python -m featx`` (and ``torchrun -m featx extract ...``): the featx command."""
import sys

if __name__ == "__main__":
    try:
        from featx.cli import main
    except KeyboardInterrupt:  # Ctrl-C while Python starts: one line, not an import traceback
        print("featx: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
