"""The fine-tuning demo (``featx finetune-demo``): scikit-learn's digits as an ImageFolder, ResNet-18
trained from scratch, a few validation images predicted, the best checkpoint exported to ONNX and
checked in ONNX Runtime."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional

from featx.deploy.onnx_export import export_onnx
from featx.deploy.parity import parity
from featx.models import target_config
from featx.options import DIGITS_CONFIG
from featx.report import format_table
from featx.shipped import shipped_config
from featx.train.digits import write_digits_imagefolder
from featx.train.predict import Predictor
from featx.train.runner import train

__all__ = ["DIGITS_CONFIG", "run_finetune_demo"]



def run_finetune_demo(work_dir: str = "work_dirs/finetune_demo", data_root: str = "data/digits",
                      config: str = DIGITS_CONFIG, cfg_options: Optional[dict] = None,
                      out: Callable[[str], None] = print,
                      log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> int:
    """Run the demo; returns 0 when the ONNX parity check passes."""
    config_path = shipped_config(config)
    data = Path(data_root)
    if not data.exists():
        r = write_digits_imagefolder(data)
        out(f"wrote {r['train']} train and {r['val']} val images of {r['classes']} classes to {r['root']}")
    result = train(str(config_path), work_dir=work_dir, data_root=str(data), cfg_options=cfg_options)
    metrics = result["metrics"] or json.loads((Path(work_dir) / "metrics.json").read_text())
    best = result["best_checkpoint"] or result["last_checkpoint"]
    samples = [sorted((data / "val" / str(d)).glob("*.png"))[0] for d in (0, 3, 7)]
    out(f"\npredicting {len(samples)} validation images with {Path(best).name}:")
    predictions = Predictor(best).predict(samples, topk=3)
    out(format_table(["image", "class", "prob"], [[p.image, p.top[0][0], f"{p.top[0][2]:.4f}"] for p in predictions]))
    onnx_path = Path(work_dir) / "classifier.onnx"
    e = export_onnx(target_config(str(best)), onnx_path, log=log)
    out(f"wrote {e.path} ({e.size_mb:.1f} MB)")
    p = parity(onnx_path, sizes=[(32, 32), (64, 64)], repeats=3, log=log)
    worst = max(x.rel for x in p.results)
    out(f"ONNX Runtime parity ({p.runtime}): {'PASS' if p.passed else 'FAIL'}, "
        f"worst err/max|ref| {worst:.2e}")
    final = metrics["final"]
    out(f"\nfine-tuning demo: val top-1 {final['top1']:.2f}% (epoch {final['epoch']}); work dir {work_dir}")
    return 0 if p.passed else 1
