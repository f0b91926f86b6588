"""Check featx on a CUDA machine in one go: the CUDA tests, ``featx bench --device cuda`` and CUDA parity.

    python3 tools/gpu_check.py --out results/ [--stage torch|ort|all] [--model ResNet50FPN] [--quick]

``torch``: ``nvidia-smi``, the CUDA tests that need torch only, and the PyTorch entries of the GPU benchmark
(torchvision, featx eager, featx optimized, CUDA graphs) at fp32, TF32, fp16 and bf16. ``ort``: featx's
exports for a CUDA target (fp32 and fp16), CUDA parity of each (TF32 too), the ONNX Runtime tests and the
ONNX Runtime entries of the benchmark (CUDA provider with IO binding; TensorRT where onnxruntime offers it).
Each step's command, exit code, time and output go to ``OUT/<step>.log`` (JSON results beside them), and
``OUT/summary.json`` lists the steps. Every step has a time limit, and a failing step does not stop the
others. Run featx from the repository root (``python3 -m featx``); for an offline machine see
docs/deployment.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _step(out: Path, name: str, command: list[str], limit_s: int, summary: list[dict]) -> int:
    start = time.perf_counter()
    print(f"[{name}] {' '.join(command)}", flush=True)
    try:
        r = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit_s)
        code, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        code, text = 124, f"{partial}\ntimed out after {limit_s} s"
    except OSError as e:  # the program is not there (nvidia-smi on a machine without a driver)
        code, text = 127, f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    (out / f"{name}.log").write_text(f"$ {' '.join(command)}\nexit {code}, {seconds:.1f} s\n\n{text}")
    summary.append({"step": name, "exit": code, "seconds": round(seconds, 1)})
    tail = "\n".join(text.strip().splitlines()[-25:])
    print(f"[{name}] exit {code} in {seconds:.1f} s\n{tail}\n", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the logs and JSON results (created)")
    parser.add_argument("--stage", choices=("torch", "ort", "all"), default="all")
    parser.add_argument("--model", default="ResNet50FPN")
    parser.add_argument("--quick", action="store_true", help="one size, fewer repeats (a smoke run)")
    args = parser.parse_args()
    out = Path(args.out).resolve()  # the steps run in the repository; OUT is where the caller is
    out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable]
    featx = py + ["-m", "featx"]
    sizes = ["800x1216"]
    repeats = ["--repeats", "5" if args.quick else "20"]
    summary: list[dict] = []
    if args.stage in ("torch", "all"):
        _step(out, "nvidia-smi", ["nvidia-smi"], 60, summary)
        _step(out, "tests-torch", py + ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu_path.py",
                                        "tests/test_extract.py", "tests/accel/test_gpu_choice.py",
                                        "tests/test_detector_training.py", "-k",
                                        "cuda and not ort and not parity and not bound"], 300, summary)
        _step(out, "bench-torch", featx + ["bench", "--device", "cuda", "--model", args.model, "--sizes", *sizes,
                                           "--batch", "1", "8", "--entries", "torchvision", "featx", "featx_optimized",
                                           "featx_cuda_graph", "featx_tuned", "--precision", "fp32", "tf32", "fp16", "bf16", *repeats,
                                           "--json", str(out / "bench_torch.json")], 300, summary)
    if args.stage in ("ort", "all"):
        for precision, extra in (("fp32", []), ("fp16", ["--fp16"])):
            path = out / f"{args.model}_{precision}.onnx"
            _step(out, f"export-{precision}", featx + ["export", args.model, "-o", str(path), "--target", "cuda",
                                                       *extra], 180, summary)
            _step(out, f"parity-{precision}", featx + ["parity", str(path), "--device", "cuda", "--json",
                                                       str(out / f"parity_{precision}.json")], 180, summary)
        _step(out, "parity-tf32", featx + ["parity", str(out / f"{args.model}_fp32.onnx"), "--device", "cuda", "--tf32",
                                           "--json", str(out / "parity_tf32.json")], 180, summary)
        _step(out, "tests-ort", py + ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu_path.py", "-k",
                                      "cuda"], 240, summary)
        _step(out, "bench-ort", featx + ["bench", "--device", "cuda", "--model", args.model, "--sizes", *sizes,
                                         "--batch", "1", "8", "--entries", "torchvision", "featx_optimized",
                                         "featx_cuda_graph", "featx_ort", "featx_trt", "--precision", "fp32", "tf32",
                                         "fp16", *repeats, "--json", str(out / "bench_ort.json")], 300, summary)
    (out / "summary.json").write_text(json.dumps({"stage": args.stage, "model": args.model, "steps": summary,
                                                  "pythonpath": os.environ.get("PYTHONPATH", "")}, indent=1))
    failed = [s["step"] for s in summary if s["exit"] != 0]
    print(f"done: {len(summary) - len(failed)} of {len(summary)} steps passed" + (f"; failed: {', '.join(failed)}"
                                                                                   if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
