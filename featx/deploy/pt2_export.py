"""PyTorch-native deployment files: a ``torch.export`` ExportedProgram (``.pt2``) and an AOTInductor package.

- ``export_pt2(model, path)``: the BN-folded model (as for ONNX) traced by ``torch.export.export`` with dynamic
  batch, height and width, saved by ``torch.export.save`` with featx's metadata in the archive's
  ``extra/featx.json``. ``torch.export.load(path).module()`` runs it with torch alone.
- ``export_pt2(model, path, aoti=True, device=...)``: the same program compiled ahead of time by AOTInductor
  (``torch._inductor.aoti_compile_and_package``) into a package with a shared library for ``device``; featx's
  metadata in the package's AOTI metadata (``featx.json``). ``torch._inductor.aoti_load_package(path)`` runs it
  from Python, ``torch::inductor::AOTIModelPackageLoader`` from C++.

Both are zip archives. :func:`featx.deploy.pt2_archive.read_pt2_metadata` reads featx's description from the archive's entries without
loading the program. Loading one is another matter: an AOTInductor package is a compiled library that runs as
native code, and an ExportedProgram is deserialized by torch's own code; featx loads either only when asked
explicitly (``trust_code=True``, ``--trust-code``): see docs/trust.md.
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch

from featx.deploy.onnx_export import (ExportResult, ExportSettings, dynamic_input_shapes, export_metadata,
                                      min_input_size)
from featx.deploy.pt2_archive import METADATA_ENTRY
from featx.errors import ExportError
from featx.features import as_output_tuple, input_channels
from featx.inference import prepare_for_inference
from featx.io import atomic_path
from featx.models import build_from_config, model_config
from featx.timing import heartbeat

__all__ = ["PT2_FORMATS", "export_pt2", "smallest_side"]

PT2_FORMATS = ("pt2", "aoti")


def smallest_side(net: torch.nn.Module, channels: int, start: int, limit: int = 4096) -> int:
    """The smallest square side >= ``start`` at which every output map is at least 2x2 (found on the meta device,
    by bisection: map sizes grow with the input). torch.export specializes a size of 1, so a program traced with
    dynamic shapes refuses inputs where a map would be 1 wide; from this side on, every input runs."""
    meta_net = copy.deepcopy(net).to("meta")

    def fits(side: int) -> bool:
        with torch.no_grad():
            outs = as_output_tuple(meta_net(torch.empty(1, channels, side, side, device="meta")))
        return all(min(o.shape[-2:]) >= 2 for o in outs)

    low, high = start, limit
    if not fits(high):
        return high
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if not fits(middle) else (low, middle)
    return low


def _input_ranges(program: Any) -> dict[str, list]:
    """The range of each dynamic input dim of an ExportedProgram (``{"height": [33, null], ...}``)."""
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name not in
                       program.graph_signature.inputs_to_parameters and n.name not in
                       program.graph_signature.inputs_to_buffers)
    ranges = {}
    for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
        dim = placeholder.meta["val"].shape[axis]
        if isinstance(dim, int):
            continue
        bounds = program.range_constraints.get(dim.node.expr)
        if bounds is not None:
            ranges[name] = [_bound(bounds.lower), _bound(bounds.upper)]
    return ranges


def _bound(value: Any) -> Optional[int]:
    """A range end as an int, None where it is unbounded (sympy's or torch's infinity)."""
    try:
        number = int(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None
    return number if abs(number) < 2**62 else None


def export_pt2(model: Union[str, dict], path: Union[str, Path], settings: Optional[ExportSettings] = None,
               seed: int = 0, log: Any = print, aoti: bool = False, device: str = "cpu") -> ExportResult:
    """Export a catalogue model (name) or a model config dict to ``path`` as an ExportedProgram, or with
    ``aoti`` as an AOTInductor package compiled for ``device`` ("cpu" or "cuda").

    Batch, height and width are dynamic unless ``settings.static_shape`` (their ranges, as torch.export infers
    them, are recorded in ``featx.input_ranges``, and the input's ``min_size`` is the smallest side at which every
    output map is at least 2x2: :func:`smallest_side`); fp32 only (``settings.fp16`` is refused: export fp16 to ONNX). Written atomically.
    """
    settings = settings or ExportSettings()
    settings.validate()
    if settings.fp16 or settings.winograd != "off":
        raise ExportError("pt2/aoti exports are fp32 without featx.accel's rewrites; drop --fp16/--winograd "
                          "(an AOTInductor package is already compiled for its device)")
    if device not in ("cpu", "cuda"):
        raise ExportError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("an AOTInductor package for cuda is compiled on a machine with CUDA; use --device cpu")
    start = time.perf_counter()
    cfg = model_config(model)
    net = prepare_for_inference(build_from_config(cfg, seed), inplace=True).to(device)
    minimum = min_input_size(net)
    if settings.static_shape is not None:
        h, w = settings.static_shape
        if min(h, w) < minimum:
            raise ExportError(f"static shape {h}x{w} is too small for {cfg['type']}: at least {minimum} per side")
        sample, shapes = torch.rand(settings.batch, input_channels(net), h, w, device=device), None
    else:
        # batch 2 and distinct sides, so the tracer specializes none of them
        sample, shapes = torch.rand(2, input_channels(net), 320, 352, device=device), dynamic_input_shapes()
    kind = "aoti" if aoti else "pt2"
    metadata = export_metadata(cfg, net, settings, seed, sample, minimum, f"torch.export ({kind})")
    metadata["featx.device"] = device
    log(f"exporting {cfg['type']} (torch.export{', AOTInductor for ' + device if aoti else ''}, {settings.name}) ...")
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with heartbeat(log, "tracing with torch.export"):
                program = torch.export.export(net, (sample,), dynamic_shapes=shapes, strict=False)
            if shapes is not None:
                ranges = _input_ranges(program)
                metadata["featx.input_ranges"] = json.dumps(ranges)
                described = json.loads(metadata["featx.input"])
                lower = max([described["min_size"]] + [r[0] for k, r in ranges.items() if k != "batch" and r[0]])
                described["min_size"] = smallest_side(net, input_channels(net), lower)
                metadata["featx.input"] = json.dumps(described)
            text = json.dumps(metadata)
            package = tmp.with_name(tmp.name + ".pt2")  # torch writes (AOTInductor: only) to names ending in .pt2
            try:
                if aoti:
                    from torch._inductor import aoti_compile_and_package

                    with heartbeat(log, f"compiling with AOTInductor for {device}"):
                        aoti_compile_and_package(program, package_path=str(package),
                                                 inductor_configs={"aot_inductor.metadata": {METADATA_ENTRY: text}})
                else:
                    torch.export.save(program, str(package), extra_files={METADATA_ENTRY: text})
                os.replace(package, tmp)
            finally:
                package.unlink(missing_ok=True)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"torch.export ({kind}) failed: {type(e).__name__}: {str(e)[:500]}") from e
        size_mb = tmp.stat().st_size / 1e6
    levels = json.loads(metadata["featx.levels"])
    dims = ["batch", input_channels(net), "height", "width"] if shapes else list(sample.shape)
    return ExportResult(str(path), size_mb, 0, f"torch.export ({kind})", [{"name": "input", "dtype": "float", "shape": dims}],
                        [{"name": lv["output"], "dtype": "float", "shape": ["batch", lv["channels"], f"~height/{lv['stride']}",
                                                                         f"~width/{lv['stride']}"]} for lv in levels],
                        time.perf_counter() - start, metadata)
