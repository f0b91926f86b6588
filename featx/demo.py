"""`make demo`: build a featx pyramid, run it on a real photo, draw its feature maps, export it to
ONNX and check parity.

    python -m featx.demo [--model ResNet50FPN] [--image PATH] [--threads 2] [--no-export]

Weights: torchvision's ImageNet weights when they are in the torch hub cache (``$TORCH_HOME``),
otherwise a seeded random init (this machine cannot download them); the demo says which.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import featx
from featx.images import detection_batch, load_image, sample_image_path
from featx.report import format_table


def pyramid_rows(model: torch.nn.Module, outputs: Sequence[torch.Tensor]) -> list[list]:
    return [[info.name, info.stride, info.channels, tuple(o.shape)] for info, o in zip(model.feature_info, outputs)]


def pick_weights(model_name: str) -> tuple[Optional[str], str]:
    """``("DEFAULT", note)`` when torchvision's default weights are cached, else ``(None, note)``."""
    from torchvision.models import get_model_weights

    from featx.models import get_entry
    from featx.weights import hub_checkpoint_path

    try:  # the catalogue knows the architecture; no need to build the model to ask
        enum = get_model_weights(get_entry(model_name).arch)
    except (ValueError, KeyError):
        enum = None
    if enum is None:
        return None, "random init (no torchvision weights for this model)"
    path = hub_checkpoint_path(enum.DEFAULT.url)
    if path.is_file():
        return "DEFAULT", f"torchvision {enum.__name__}.{enum.DEFAULT.name} from {path}"
    return None, f"random init, seed 0 (torchvision weights not cached at {path}; see README: offline weights)"


def run(model_name: str = "ResNet50FPN", image: Optional[str] = None, weights: Optional[str] = None,
        repeats: int = 3) -> dict:
    path = image or sample_image_path()
    torch.manual_seed(0)
    model = featx.create_model(model_name, weights=weights).eval()
    batch = detection_batch([load_image(path)])
    times = []
    with torch.inference_mode():
        outputs = model(batch)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            outputs = model(batch)
            times.append(time.perf_counter() - t)
    return {"model": model_name, "image": str(path), "input": tuple(batch.shape), "outputs": outputs,
            "rows": pyramid_rows(model, outputs), "forward_s": statistics.median(times)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="featx demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python -m featx.demo --model ResNet18FPN --no-export")
    parser.add_argument("--model", default="ResNet50FPN", help="catalogue name (featx list)")
    parser.add_argument("--image", help="image file (default: matplotlib's sample photo)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export and parity steps")
    parser.add_argument("--export-dir", default="export", help="where the .onnx goes (default export/)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    weights, note = pick_weights(args.model)
    print(f"featx {featx.__version__} | {args.model} | weights: {note}")
    r = run(args.model, args.image, weights)
    print(f"image {r['image']}")
    print(f"input {'x'.join(map(str, r['input']))} (torchvision detection preprocessing: shorter side 800, "
          f"ImageNet mean/std, padded to /32) | {torch.get_num_threads()} threads\n")
    print(format_table(["level", "stride", "channels", "output shape"], r["rows"]))
    print(f"\nforward: {r['forward_s'] * 1000:.0f} ms (median of 3 after warm-up)")
    from featx.cli import run_viz

    out_dir = Path(args.export_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{args.model}_features.png"
    w, h, panels = run_viz(str(args.image or "sample"), args.model, str(png), weights)
    print(f"feature maps: {png} ({w}x{h} px, input + {panels - 1} levels)")
    if args.no_export:
        return 0

    from featx.onnx import export_onnx, ort_parity

    onnx_path = out_dir / f"{args.model}_dynamic_fp32.onnx"
    print(f"\n== ONNX export -> {onnx_path}")
    cfg = {"type": f"featx.{args.model}", **({"weights": weights} if weights else {})}
    e = export_onnx(cfg, onnx_path, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"wrote {e.path} ({e.size_mb:.1f} MB, opset {e.opset}, {e.exporter} exporter, {e.seconds:.1f} s); "
          f"input {' x '.join(map(str, e.inputs[0]['shape']))}")

    print("\n== ONNX Runtime parity (random inputs, every size at batch 1, the first also at batch 2)")
    p = ort_parity(onnx_path, repeats=3, log=lambda m: print(m, file=sys.stderr, flush=True))
    rows = [[x.output, f"{x.batch}x{x.size[0]}x{x.size[1]}", x.shape, f"{x.rel:.2e}", f"{x.cosine:.7f}",
             "pass" if x.passed else "FAIL"] for x in p.results]
    print(f"providers used: {', '.join(p.providers)}; gate: err/max|ref| <= {p.gate['max_rel']:g}, "
          f"cosine >= {p.gate['min_cos']}")
    print(format_table(["output", "input", "shape", "err/max|ref|", "cosine", "verdict"], rows))
    lat = p.latency_ms
    print(f"latency {'x'.join(map(str, lat['input']))}: ORT {lat['ort']:.0f} ms, PyTorch {lat['torch_eager']:.0f} ms "
          f"(ORT/PyTorch {lat['ort_over_torch']:.2f}x)")
    print(f"\n{'PASS' if p.passed else 'FAIL'}: parity {sum(x.passed for x in p.results)}/{len(p.results)} outputs")
    return 0 if p.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
