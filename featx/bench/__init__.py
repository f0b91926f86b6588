"""Benchmarks: featx timed against its peers in one run, and the result files that name their hardware.

    cpu      ``featx bench``: interleaved rounds of featx's paths against torchvision, timm, ONNX Runtime, OpenVINO
    gpu      ``featx bench --device cuda``: the GPU paths at each precision, CUDA-event timings
    extract  ``featx bench-extract``: ``featx extract`` end to end against a plain loop over the same images
    results  result files (``<hardware>-<versions>.json`` and ``.md``), their index, and the one table builder

``featx.bench.run_benchmark`` and the other names of :mod:`featx.bench.cpu` load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    cpu = importlib.import_module("featx.bench.cpu")
    if name in cpu.__all__:
        return getattr(cpu, name)
    raise AttributeError(f"module 'featx.bench' has no attribute {name!r}")
