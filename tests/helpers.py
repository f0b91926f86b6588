"""Test scaffolding: relative error, head dropping, in-process CLI runs."""
from __future__ import annotations

import torch

from featx.check import randomize_norm_stats  # noqa: F401  (re-exported for the tests)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max|out - ref| / max|ref| (the design's equivalence measure)."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def drop_head(state: dict, prefixes: tuple[str, ...] = ("fc.",)) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args: str) -> CliResult:
    """Run ``featx <args>`` in this process (what the console script and tools/*.py call)."""
    import contextlib
    import io

    from featx.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse usage errors and --help
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                err.write(e.code + "\n")
    return CliResult(code, out.getvalue(), err.getvalue())
