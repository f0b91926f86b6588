"""The demo (``make demo`` / ``featx demo``): build a featx pyramid, run it on a real photo, draw its
feature maps, export it to ONNX and check parity in ONNX Runtime.

Weights: torchvision's ImageNet weights when they are in the torch hub cache (``$TORCH_HOME``),
otherwise a seeded random init (nothing is downloaded); the demo says which.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from featx.checkpoints import hub_checkpoint_path
from featx.deploy.onnx_export import export_onnx
from featx.deploy.parity import parity
from featx.images import detection_batch, load_image, sample_image_path
from featx.models import create_model, get_entry, torchvision_weights_enum
from featx.report import format_table
from featx.timing import median_ms
from featx.version import __version__
from featx.viz import render_feature_maps

__all__ = ["pick_weights", "pyramid_rows", "run", "run_demo"]


def pyramid_rows(model: torch.nn.Module, outputs: Sequence[torch.Tensor]) -> list[list]:
    return [[info.name, info.stride, info.channels, tuple(o.shape)] for info, o in zip(model.feature_info, outputs)]


def pick_weights(model_name: str) -> tuple[Optional[str], str]:
    """``("DEFAULT", note)`` when torchvision's default weights are cached, else ``(None, note)``."""
    enum = torchvision_weights_enum(get_entry(model_name).arch)  # known without building the model
    if enum is None:
        return None, "random init (no torchvision weights for this model)"
    path = hub_checkpoint_path(enum.DEFAULT.url)
    if path.is_file():
        return "DEFAULT", f"torchvision {enum.__name__}.{enum.DEFAULT.name} from {path}"
    return None, f"random init, seed 0 (torchvision weights not cached at {path}; see docs/weights.md: offline)"


def run(model_name: str = "ResNet50FPN", image: Optional[str] = None, weights: Optional[str] = None,
        repeats: int = 3) -> dict:
    """The model on the photo with torchvision's detection preprocessing; outputs, rows, median forward time."""
    path = image or sample_image_path()
    torch.manual_seed(0)
    model = create_model(model_name, weights=weights).eval()
    batch = detection_batch([load_image(path)])
    with torch.inference_mode():
        outputs = model(batch)
        forward_ms = median_ms(lambda: model(batch), repeats)
    return {"model": model_name, "image": str(path), "input": tuple(batch.shape), "outputs": outputs,
            "rows": pyramid_rows(model, outputs), "forward_s": forward_ms / 1000}


def run_demo(model_name: str = "ResNet50FPN", image: Optional[str] = None, export: bool = True,
             export_dir: str = "export", out: Callable[[str], None] = print,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> int:
    """The whole demo; ``out`` gets the report, ``log`` the progress. Returns 0 when parity passes."""
    weights, note = pick_weights(model_name)
    out(f"featx {__version__} | {model_name} | weights: {note}")
    r = run(model_name, image, weights)
    out(f"image {r['image']}")
    out(f"input {'x'.join(map(str, r['input']))} (torchvision detection preprocessing: shorter side 800, "
        f"ImageNet mean/std, padded to /32) | {torch.get_num_threads()} threads\n")
    out(format_table(["level", "stride", "channels", "output shape"], r["rows"]))
    out(f"\nforward: {r['forward_s'] * 1000:.0f} ms (median of 3 after warm-up)")
    out_dir = Path(export_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{model_name}_features.png"
    w, h, panels = render_feature_maps(str(image or "sample"), model_name, str(png), weights)
    out(f"feature maps: {png} ({w}x{h} px, input + {panels - 1} levels)")
    if not export:
        return 0

    onnx_path = out_dir / f"{model_name}_dynamic_fp32.onnx"
    out(f"\n== ONNX export -> {onnx_path}")
    cfg = {"type": f"featx.{model_name}", **({"weights": weights} if weights else {})}
    e = export_onnx(cfg, onnx_path, log=log)
    out(f"wrote {e.path} ({e.size_mb:.1f} MB, opset {e.opset}, {e.exporter} exporter, {e.seconds:.1f} s); "
        f"input {' x '.join(map(str, e.inputs[0]['shape']))}")

    out("\n== ONNX Runtime parity (random inputs, every size at batch 1, the first also at batch 2)")
    p = parity(onnx_path, repeats=3, log=log)
    rows = [[x.output, f"{x.batch}x{x.size[0]}x{x.size[1]}", x.shape, f"{x.rel:.2e}", f"{x.cosine:.7f}",
             "pass" if x.passed else "FAIL"] for x in p.results]
    out(f"ran on: {p.runtime}; gate: err/max|ref| <= {p.gate['max_rel']:g}, "
        f"cosine >= {p.gate['min_cos']}")
    out(format_table(["output", "input", "shape", "err/max|ref|", "cosine", "verdict"], rows))
    lat = p.latency_ms
    out(f"latency {'x'.join(map(str, lat['input']))}: ORT {lat['runtime']:.0f} ms, PyTorch {lat['torch_eager']:.0f} ms "
        f"(ORT/PyTorch {lat['runtime_over_torch']:.2f}x)")
    out(f"\n{'PASS' if p.passed else 'FAIL'}: parity {sum(x.passed for x in p.results)}/{len(p.results)} outputs")
    return 0 if p.passed else 1
