"""One way to run an exported file: ONNX Runtime for ``.onnx``, OpenVINO for an IR ``.xml`` (or, asked
for, for an ``.onnx`` file, read by OpenVINO's ONNX frontend).

``open_session(path)`` returns a ``Session`` that says which runtime, version, device and execution
providers really run it, its input (name, shape with None for dynamic dims, numpy dtype) and output
names, and ``run(x) -> list of arrays``. Parity, benchmarks and int8 evaluation all go through it,
so every report names what really ran.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from featx.cpu import CpuInfo, cpu_info
from featx.deploy.openvino_hints import hinted_layers, read_without_hints, reference_kernel_layers
from featx.deploy.iobinding import BoundRunner
from featx.deploy.metadata import ir_featx_info
from featx.deploy.pt2_archive import aoti_device, is_aoti_package, read_pt2_metadata
from featx.errors import Int8SaturationWarning, ParityError, PlanarHintWarning

__all__ = ["Session", "open_session", "runtime_for", "int8_saturation_risk"]


@dataclass
class Session:
    """An exported model loaded in its runtime (see the module docstring)."""

    path: str
    runtime: str  # "onnxruntime" | "openvino"
    version: str
    device: str  # "cpu" | "cuda"
    providers: list[str]
    input_name: str
    input_shape: list[Optional[int]]
    input_dtype: type
    outputs: list[str]
    run: Callable[[np.ndarray], list[np.ndarray]] = field(repr=False)
    # torch tensors in and out where they are (ONNX Runtime: IO binding, featx.deploy.iobinding)
    run_tensor: Optional[Callable[[torch.Tensor], list[torch.Tensor]]] = field(default=None, repr=False)

    def run_on_device(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run on a torch tensor, outputs as torch tensors: device-resident (no host copy) where the runtime
        binds memory (ONNX Runtime), else through numpy on the host."""
        if self.run_tensor is not None:
            return self.run_tensor(x.to(torch.float16 if self.input_dtype == np.float16 else torch.float32))
        return [torch.from_numpy(np.asarray(o)) for o in self.run(x.detach().cpu().numpy().astype(self.input_dtype))]

    @property
    def static_shape(self) -> Optional[tuple[int, ...]]:
        return tuple(self.input_shape) if all(isinstance(d, int) for d in self.input_shape) else None  # type: ignore

    def describe(self) -> str:
        return f"{self.runtime} {self.version} on {self.device} ({', '.join(self.providers)})"


def runtime_for(path: Union[str, Path]) -> str:
    """``"openvino"`` for an ``.xml`` IR, ``"torch"`` for a ``.pt2`` (ExportedProgram or AOTInductor package),
    ``"onnxruntime"`` otherwise."""
    suffix = Path(path).suffix
    return "openvino" if suffix == ".xml" else "torch" if suffix == ".pt2" else "onnxruntime"


def _onnxruntime(path: Path, device: str, threads: Optional[int], tf32: bool) -> Session:
    import onnxruntime as ort  # one of two exclusive extras (onnxruntime / onnxruntime-gpu): imported on use

    available = ort.get_available_providers()
    cuda_ok = "CUDAExecutionProvider" in available and torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda_ok else "cpu"
    if device == "cuda" and not cuda_ok:
        raise ParityError(
            f"device 'cuda' asked, but CUDA is not usable here: onnxruntime providers {available}, "
            f"torch.cuda.is_available()={torch.cuda.is_available()}. Install featx[gpu] (onnxruntime-gpu, "
            "without onnxruntime) on a machine with an NVIDIA GPU, or use --device cpu.")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if device == "cpu":
        # the intra-op threads spin between ops within a run (its latency) but stop when Run() returns: spinning
        # on, they took a core of a 2-CPU machine from whatever ran next (an OpenVINO run right after ONNX Runtime:
        # 8-13% slower; DataLoader workers alike), at no cost to ONNX Runtime's own latency (64^2 and 512^2 inputs)
        options.add_session_config_entry("session.force_spinning_stop", "1")
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    provider_options = [{"use_tf32": int(tf32)}] if device == "cuda" else None
    try:
        session = ort.InferenceSession(str(path), options, providers=providers, provider_options=provider_options)
    except Exception as e:
        raise ParityError(f"ONNX Runtime cannot load {path}: {str(e)[:300]}") from None
    used = session.get_providers()
    if device == "cuda" and used[0] != "CUDAExecutionProvider":
        raise ParityError(f"asked for CUDA but ONNX Runtime runs on {used}; refusing to report a CPU result as CUDA")
    if device == "cpu":
        _warn_int8_saturation(path, session.get_modelmeta().custom_metadata_map.get("featx.int8"))
    inp = session.get_inputs()[0]
    name = inp.name
    dtype = np.float16 if "float16" in inp.type else np.float32
    return Session(str(path), "onnxruntime", ort.__version__, device, list(used), name,
                   [d if isinstance(d, int) else None for d in inp.shape], dtype,
                   [o.name for o in session.get_outputs()], lambda x: session.run(None, {name: x}),
                   BoundRunner(session, dtype))


def int8_saturation_risk(int8_info: Any, cpu: CpuInfo) -> Optional[str]:
    """Why an int8 file (its ``featx.int8`` metadata) may lose accuracy on ``cpu``, or None. Without VNNI,
    both runtimes multiply u8 activations by s8 weights with instructions whose 16-bit pair sums saturate;
    7-bit weights (ONNX Runtime's ``reduce_range``, NNCF's overflow fix) avoid that, and featx leaves them off
    only when quantizing on a VNNI CPU (:mod:`featx.deploy.quantize`). Such a file is fast and exact on the
    VNNI machine it was made on, not on an AVX2-only one."""
    if not isinstance(int8_info, dict) or cpu.vnni:
        return None
    onnxruntime = int8_info.get("format") == "QDQ"
    # ONNX Runtime files from before featx chose reduce_range per CPU say nothing of it: they have 8-bit weights
    if int8_info.get("overflow_fix", "disable" if onnxruntime else None) != "disable":
        return None
    fix = "ONNX Runtime's reduce_range (7-bit weights)" if onnxruntime else "NNCF's overflow fix"
    return (f"it was quantized without {fix} (on {int8_info.get('cpu') or 'a CPU with VNNI'}), and this "
            f"CPU ({cpu.model}: {cpu.isa}) has no VNNI: its u8 x s8 products can saturate and lose accuracy. Quantize "
            "it again here, or with --overflow-fix enable for CPUs without VNNI, and check it with featx parity")


def _warn_int8_saturation(path: Path, int8_info: Any) -> None:
    """Warn (:class:`featx.errors.Int8SaturationWarning`) when ``int8_saturation_risk`` finds one on this CPU;
    ``int8_info`` as decoded from an IR, or the JSON text of an ONNX file's ``featx.int8`` entry."""
    if isinstance(int8_info, str):
        try:
            int8_info = json.loads(int8_info)
        except ValueError:
            return
    risk = int8_saturation_risk(int8_info, cpu_info())
    if risk:
        warnings.warn(f"{path}: {risk}", Int8SaturationWarning, stacklevel=4)


def _openvino(path: Path, device: str, threads: Optional[int]) -> Session:
    import openvino as ov  # the optional `openvino` extra

    if device == "cuda":
        raise ParityError("OpenVINO runs featx's IRs on the CPU here; use --device cpu (or auto)")
    if path.suffix != ".xml":  # an ONNX file, read by OpenVINO's ONNX frontend
        if not path.is_file():
            raise ParityError(f"ONNX file not found: {path}")
    elif not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ParityError(f"OpenVINO IR not found: {path} and {path.with_suffix('.bin').name} are both needed")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}  # no silent bf16 on CPUs that have it: parity means fp32 here
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        model = core.read_model(str(path))
        compiled = core.compile_model(model, "CPU", config)
        # a hint written for another CPU may name a kernel this one lacks: such a layer runs the reference kernel
        # (seconds a call), so it is compiled again as the plugin would choose
        slow = reference_kernel_layers(compiled, hinted_layers(model)) if path.suffix == ".xml" else set()
        if slow:
            compiled = core.compile_model(read_without_hints(path, slow), "CPU", config)
            named = ", ".join(sorted(slow)[:3]) + (", ..." if len(slow) > 3 else "")
            warnings.warn(f"{path}: OpenVINO has no kernel on this CPU for the kernel hint on {len(slow)} "
                          f"layer{'s' if len(slow) > 1 else ''} ({named}) and would run {'them' if len(slow) > 1 else 'it'} "
                          "on its reference kernel; compiled without the hint there. Export the IR on this machine for "
                          "its own choices.", PlanarHintWarning, stacklevel=3)
    except Exception as e:
        raise ParityError(f"OpenVINO cannot load {path}: {str(e)[:300]}") from None
    _warn_int8_saturation(path, ir_featx_info(model).get("int8"))
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)
    # the names the IR declares: compiling can merge tensors (a no-op crop removed in a static IR) and give an output
    # a second name that get_any_name() may return instead ('/neck/fpn_convs.0/conv/Reshape_6_output_0' for p2)
    names = [o.get_any_name() for o in model.outputs]
    inp = compiled.inputs[0]
    shape = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
    dtype = np.float16 if inp.get_element_type().get_type_name() == "f16" else np.float32

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: x})
        return [np.asarray(result[o]) for o in outputs]

    return Session(str(path), "openvino", ov.get_version().split("-")[0], "cpu",
                   [f"CPU: {core.get_property('CPU', 'FULL_DEVICE_NAME')}"], inp.get_any_name(), shape, dtype,
                   names, run)


def open_session(path: Union[str, Path], device: str = "auto", threads: Optional[int] = None,
                 tf32: bool = False, runtime: Optional[str] = None, trust_code: bool = False) -> Session:
    """Load ``path`` in its runtime (``runtime_for``, or ``runtime``: "openvino" also reads an ``.onnx``
    file, through OpenVINO's ONNX frontend) on ``device`` ("auto", "cpu", "cuda"; CUDA fails loudly when it
    cannot really run there). An int8 file with 8-bit weights (quantized without ONNX Runtime's reduce_range or
    NNCF's overflow fix) warns (:class:`featx.errors.Int8SaturationWarning`, see :func:`int8_saturation_risk`)
    when it runs on a CPU without VNNI. A ``.pt2`` file is loaded only with ``trust_code`` (an AOTInductor
    package is a compiled library: loading it runs its code)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ParityError(f"device must be auto, cuda or cpu, got {device!r}")
    path = Path(path)
    runtime = runtime or runtime_for(path)
    if runtime == "torch" or path.suffix == ".pt2":
        return _pt2(path, device, threads, trust_code)
    if runtime == "onnxruntime" and path.suffix == ".xml":
        raise ParityError(f"ONNX Runtime cannot run an OpenVINO IR ({path})")
    if runtime == "openvino":
        return _openvino(path, device, threads)
    if runtime == "onnxruntime":
        return _onnxruntime(path, device, threads, tf32)
    raise ParityError(f"runtime must be onnxruntime, openvino or torch, got {runtime!r}")


def _pt2(path: Path, device: str, threads: Optional[int], trust_code: bool) -> Session:
    """A ``.pt2`` in torch: ``torch.export.load(path).module()`` for an ExportedProgram, AOTInductor's loader
    for a package (compiled for one device: the one its metadata names must be the one asked)."""
    aoti = is_aoti_package(path)
    if not trust_code:
        what = ("an AOTInductor package: a compiled library, and loading it runs its native code" if aoti else
                "a torch.export program: torch's deserializer rebuilds and runs its graph")
        raise ParityError(f"{path} is {what}. Load it only if you trust where it came from: --trust-code "
                          "(Python: trust_code=True); docs/trust.md says where the line is")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ParityError("device 'cuda' asked, but torch.cuda.is_available() is False here; use --device cpu")
    if threads:
        torch.set_num_threads(threads)
    meta = read_pt2_metadata(path)
    levels = meta.get("levels") if isinstance(meta.get("levels"), list) else []
    names = [lv.get("output") for lv in levels if isinstance(lv, dict)]
    try:
        if aoti:
            from torch._inductor import aoti_load_package

            built_for = aoti_device(path)
            if built_for != device:
                raise ParityError(f"{path} was compiled by AOTInductor for {built_for}; it runs there only")
            runner = aoti_load_package(str(path))
            kind, version = "AOTInductor", torch.__version__
        else:
            runner = torch.export.load(str(path)).module().to(device)
            kind, version = "torch.export", torch.__version__
    except ParityError:
        raise
    except Exception as e:
        raise ParityError(f"torch cannot load {path}: {type(e).__name__}: {str(e)[:300]}") from None

    def run_tensor(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            out = runner(x.to(device))
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def run(x: np.ndarray) -> list[np.ndarray]:
        return [o.detach().cpu().numpy() for o in run_tensor(torch.from_numpy(x))]

    static = meta.get("static_shape")
    shape = list(static) if isinstance(static, list) and len(static) == 4 else [None, None, None, None]
    return Session(str(path), kind, version, device, [f"torch ({device})"], "input", shape, np.float32,
                   [n for n in names if isinstance(n, str)], run, run_tensor)
