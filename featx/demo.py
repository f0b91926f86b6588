"""`make demo`: build a featx pyramid, run it on a real photo, print the pyramid table.

    python -m featx.demo [--model ResNet50FPN] [--image PATH] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional, Sequence

import torch

import featx
from featx.images import detection_batch, load_image, sample_image_path
from featx.report import format_table


def pyramid_rows(model: torch.nn.Module, outputs: Sequence[torch.Tensor]) -> list[list]:
    return [[info.name, info.stride, info.channels, tuple(o.shape)] for info, o in zip(model.feature_info, outputs)]


def run(model_name: str = "ResNet50FPN", image: Optional[str] = None, repeats: int = 3) -> dict:
    path = image or sample_image_path()
    model = featx.create_model(model_name).eval()
    batch = detection_batch([load_image(path)])
    times = []
    with torch.inference_mode():
        outputs = model(batch)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            outputs = model(batch)
            times.append(time.perf_counter() - t)
    return {"model": model_name, "image": str(path), "input": tuple(batch.shape), "outputs": outputs,
            "rows": pyramid_rows(model, outputs), "forward_s": statistics.median(times), "model_obj": model}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="featx demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python -m featx.demo --model ResNet18FPN")
    parser.add_argument("--model", default="ResNet50FPN", help="catalogue name (featx.list_models())")
    parser.add_argument("--image", help="image file (default: matplotlib's sample photo)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(args.model, args.image)
    print(f"featx {featx.__version__} | {r['model']} | image {r['image']}")
    print(f"input {'x'.join(map(str, r['input']))} (torchvision detection preprocessing: shorter side 800, "
          f"ImageNet mean/std, padded to /32) | {torch.get_num_threads()} threads\n")
    print(format_table(["level", "stride", "channels", "output shape"], r["rows"]))
    print(f"\nforward: {r['forward_s'] * 1000:.0f} ms (median of 3 after warm-up, random init weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
