"""Which execution provider ran each node of an ONNX file: ONNX Runtime assigns nodes it cannot run on the
asked provider (CUDA, TensorRT) to the CPU silently, and a CPU node in a GPU graph costs two copies per call.
One profiled run tells: the profile names the provider of every kernel it timed."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np

from featx.io import scratch_dir

__all__ = ["provider_placement", "off_device_nodes"]

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def provider_placement(path: Union[str, Path], device: str, x: np.ndarray) -> dict[str, dict[str, int]]:
    """``{provider: {op type: nodes}}`` for ``path`` run once on ``x`` in ONNX Runtime on ``device``
    ("cpu" or "cuda"), from the run's profile (every node that ran, once)."""
    import onnxruntime as ort

    with scratch_dir() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "placement")
        session = ort.InferenceSession(str(path), options, providers=PROVIDERS[device])
        session.run(None, {session.get_inputs()[0].name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    seen: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args and "op_name" in args:
            seen[event["name"].removesuffix("_kernel_time").removesuffix("_fence_before").removesuffix("_fence_after")] = (
                args["provider"], args["op_name"])
    placement: dict[str, Counter] = {}
    for provider, op in seen.values():
        placement.setdefault(provider, Counter())[op] += 1
    return {provider: dict(sorted(ops.items())) for provider, ops in sorted(placement.items())}


def off_device_nodes(placement: dict[str, dict[str, int]], provider: str) -> dict[str, dict[str, int]]:
    """The part of ``placement`` not on ``provider`` (empty when every node ran there)."""
    return {p: ops for p, ops in placement.items() if p != provider}
