"""``python -m featx`` (and ``torchrun -m featx extract ...``): the featx command."""
import sys

if __name__ == "__main__":
    try:  # Ctrl-C while Python starts or between featx's own handlers: one line, not a traceback
        from featx.cli import main

        code = main()
    except KeyboardInterrupt:
        print("featx: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
