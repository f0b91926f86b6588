"""Train mmdet's own Faster R-CNN on featx's synthetic shapes set, with a featx ResNet and with mmdet's
ResNet, on the same budget, and print bbox mAP for both.

Everything but the backbone is mmdet's ``faster-rcnn_r50_fpn_1x_coco.py`` (RPN, RoI head, losses, SGD,
``CocoMetric``), trained by mmengine's ``Runner`` from random initialisation (nothing is downloaded).
The two runs differ only in ``model.backbone``: ``featx.ResNet`` (featx's registry, torchvision's
parameter names) or mmdet's ``ResNet``, both ``depth``, all stages trained, BatchNorm in train mode,
the same seed, data, schedule and neck (mmdet's FPN). Changes from the COCO config, the same for both:

- images are 128x128 (the shapes set), anchors ``scales=[4]`` (16-256 px; the objects are 14-56 px);
- ``--iters`` iterations at batch ``--batch``: linear warm-up over 50, then cosine to 1% of ``--lr``;
- gradient clipping at norm 10 (random init).

Both backbones start from Kaiming-normal convolutions; mmdet's ResNet also zero-initialises each block's last
BatchNorm (its default ``zero_init_residual=True``), featx's follows torchvision (``False``).

Usage::

    python tools/mmdet_shapes_accuracy.py --out work_dirs/mmdet_shapes --iters 300
    python tools/mmdet_shapes_accuracy.py --backbones featx --iters 20 --train 16 --val 8   # a smoke run

Writes ``<out>/results.json`` (mAP per backbone, iterations, seconds, the machine) and prints a table; with
``--results DIR`` also ``DIR/<cpu>-<threads>t-faster-rcnn-r<depth>-shapes-<versions>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Optional

BASE_CONFIG = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
WIDTHS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512], 50: [256, 512, 1024, 2048]}
BACKBONES = {
    "featx": lambda depth: dict(type="featx.ResNet", depth=depth, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                                norm_cfg=dict(type="BN", requires_grad=True), norm_eval=False, style="pytorch",
                                weights=None),
    "mmdet": lambda depth: dict(type="ResNet", depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                                norm_cfg=dict(type="BN", requires_grad=True), norm_eval=False, style="pytorch",
                                init_cfg=None),
}


def shapes_config(backbone: str, data: Path, work_dir: Path, depth: int = 18, iters: int = 300, batch: int = 8,
                  lr: float = 0.02, seed: int = 0, workers: int = 2):
    """mmdet's Faster R-CNN R-50-FPN COCO config with ``backbone`` ("featx" or "mmdet", ResNet-``depth``),
    pointed at a shapes set in COCO format (``data/{train,val}``, ``data/annotations``)."""
    from mmengine.config import Config

    from featx.detection.shapes import point_mmdet_config_at_shapes

    cfg = Config.fromfile(_base_config_path())
    cfg.custom_imports = dict(imports=["featx"], allow_failed_imports=False)
    cfg.model.backbone = BACKBONES[backbone](depth)
    cfg.model.neck.in_channels = WIDTHS[depth]
    cfg.model.rpn_head.anchor_generator.scales = [4]
    point_mmdet_config_at_shapes(cfg, data, batch_size=batch, workers=workers)
    cfg.val_dataloader.batch_size = cfg.test_dataloader.batch_size = 8
    warmup = min(50, max(1, iters // 5))
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=warmup),
        dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup, end=iters, T_max=iters - warmup, eta_min=lr * 0.01),
    ]
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.optim_wrapper.clip_grad = dict(max_norm=10)
    cfg.randomness = dict(seed=seed)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=iters)
    cfg.default_hooks.logger.interval = 20
    cfg.log_processor = dict(type="LogProcessor", window_size=20, by_epoch=False)
    cfg.work_dir = str(work_dir)
    cfg.visualizer.vis_backends = [dict(type="LocalVisBackend")]
    return cfg


def _base_config_path() -> str:
    """The file mmdet ships for ``mmdet::faster_rcnn/...`` (read through mmengine like any config)."""
    import mmdet

    return str(Path(mmdet.__file__).parent / ".mim" / "configs" / BASE_CONFIG.split("::", 1)[1])


def train_and_evaluate(backbone: str, data: Path, work_dir: Path, **options) -> dict:
    """One run: mmengine's Runner trains, then mmdet's CocoMetric scores the val split."""
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    register_all_modules(init_default_scope=False)
    cfg = shapes_config(backbone, data, work_dir, **options)
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    metrics = runner.val()
    return dict(backbone=backbone, backbone_class=f"{type(runner.model.backbone).__module__}.{type(runner.model.backbone).__name__}",
                iters=cfg.train_cfg["max_iters"], train_seconds=round(seconds, 1),
                mAP_50=round(float(metrics["coco/bbox_mAP_50"]), 4), mAP=round(float(metrics["coco/bbox_mAP"]), 4),
                mAP_75=round(float(metrics["coco/bbox_mAP_75"]), 4))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="The two runs share data, seed, schedule, neck and heads; only the backbone differs.")
    parser.add_argument("--out", type=Path, default=Path("work_dirs/mmdet_shapes"), help="work folder (data, logs, results.json)")
    parser.add_argument("--backbones", default="featx,mmdet", help="comma list of featx, mmdet (default both)")
    parser.add_argument("--depth", type=int, default=18, choices=sorted(WIDTHS), help="ResNet depth (default 18)")
    parser.add_argument("--iters", type=int, default=300, help="training iterations per run (default 300)")
    parser.add_argument("--batch", type=int, default=8, help="training batch size (default 8)")
    parser.add_argument("--lr", type=float, default=0.02, help="peak SGD learning rate (default 0.02)")
    parser.add_argument("--train", type=int, default=600, help="training images generated (default 600)")
    parser.add_argument("--val", type=int, default=150, help="validation images generated (default 150)")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="also write the result as files named by hardware and versions here")
    args = parser.parse_args(argv)
    names = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKBONES]
    if unknown or not names:
        parser.error(f"--backbones takes {', '.join(BACKBONES)}; got {args.backbones!r}")
    if args.iters < 2:
        parser.error("--iters must be at least 2")

    from featx.detection.shapes import make_shapes_dataset

    data = args.out / "shapes"
    if not (data / "annotations" / "instances_val.json").is_file():
        make_shapes_dataset(data, num_train=args.train, num_val=args.val, size=128, seed=args.seed)
    results = []
    for name in names:
        print(f"== {name} ResNet-{args.depth}: {args.iters} iterations, batch {args.batch}", flush=True)
        results.append(train_and_evaluate(name, data, args.out / name, depth=args.depth, iters=args.iters,
                                          batch=args.batch, lr=args.lr, seed=args.seed, workers=args.workers))
    report = make_report(results, depth=args.depth, batch=args.batch, lr=args.lr, iters=args.iters,
                         train_images=args.train, val_images=args.val, seed=args.seed)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print("\n".join(result_table(results)))
    if args.results:
        print("wrote", *write_result_files(report, args.results))
    return 0


def make_report(results: list[dict], **settings) -> dict:
    """The runs' results with the settings, the machine (CPU model, ISA flags, threads) and the versions."""
    import mmcv
    import mmdet
    import torch

    from featx.cpu import cpu_info

    cpu = cpu_info()
    return dict(results=results, config=BASE_CONFIG, **settings,
                machine=dict(cpu=cpu.model, isa=cpu.isa, flags=list(cpu.flags), threads=torch.get_num_threads()),
                versions=dict(torch=torch.__version__, mmdet=mmdet.__version__, mmcv=mmcv.__version__,
                              python=platform.python_version()))


def result_table(results: list[dict]) -> list[str]:
    header = f"{'backbone':8} {'class':38} {'iters':>5} {'train s':>8} {'mAP@0.5':>8} {'mAP':>6} {'mAP@0.75':>8}"
    return [header] + [f"{r['backbone']:8} {r['backbone_class']:38} {r['iters']:5d} {r['train_seconds']:8.0f} "
                       f"{r['mAP_50']:8.3f} {r['mAP']:6.3f} {r['mAP_75']:8.3f}" for r in results]


def write_result_files(report: dict, folder: Path) -> tuple[Path, Path]:
    """``folder/<cpu>-<threads>t-faster-rcnn-r<depth>-shapes-mmdet-<v>-torch-<v>.{json,md}``."""
    m, v = report["machine"], report["versions"]
    flags = set(m["flags"])
    level = ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "cpu") + ("-vnni" if "avx512_vnni" in flags else "")
    slug = re.sub(r"[^a-z0-9.]+", "-", f"{m['cpu']} {level} {m['threads']}t faster-rcnn r{report['depth']} shapes "
                                        f"mmdet {v['mmdet']} torch {v['torch'].split('+')[0]}".lower()).strip("-")
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{slug}.json", folder / f"{slug}.md"
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(
        f"# mmdet Faster R-CNN (R-50-FPN config, ResNet-{report['depth']} backbone) on featx's shapes set: featx's ResNet vs mmdet's\n\n"
        f"`python tools/mmdet_shapes_accuracy.py --iters {report['iters']}` ({report['train_images']} train / "
        f"{report['val_images']} val images, batch {report['batch']}, lr {report['lr']}, seed {report['seed']}); mmdet's "
        f"COCO bbox metrics on the val split. Train seconds include the other work the machine was doing. Only the "
        f"backbone differs; both start from Kaiming-normal convolutions, and mmdet's ResNet also zero-initialises each "
        f"block's last BatchNorm (its default `zero_init_residual=True`; featx's follows torchvision: False).\n\n"
        f"CPU: {m['cpu']}, {m['isa']}, {m['threads']} threads. torch {v['torch']}, mmdet {v['mmdet']}, "
        f"mmcv {v['mmcv']}.\n\n```\n" + "\n".join(result_table(report["results"])) + "\n```\n")
    return json_path, md_path


if __name__ == "__main__":
    sys.exit(main())
