"""``featx train``, ``featx predict``, ``featx make-digits`` and ``featx finetune-demo``.

Argument parsing only; the work is in ``featx.train.runner``, ``.predict`` and ``.digits``.
Heavy imports happen inside the commands so ``featx --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["add_train", "add_predict", "add_make_digits", "add_finetune_demo"]

DIGITS_CONFIG = "configs/finetune/resnet18_digits.py"


# -- train ---------------------------------------------------------------------------------------
def add_train(sub) -> None:
    from mmengine.config import DictAction

    p = sub.add_parser(
        "train", help="fine-tune a featx backbone + classification head on an ImageFolder (mmengine Runner)",
        description="Fine-tune a classifier (featx backbone + pooling/dropout/linear head) with mmengine's Runner, "
                    "as a config in configs/finetune/ describes: data (ImageFolder with train/ and val/, or one folder "
                    "split by a seeded ratio), model, optimizer (paramwise backbone LR), warm-up + cosine schedule. "
                    "The data is checked before training (unreadable files skipped and counted; mismatched classes "
                    "are an error). Writes to the work dir: epoch_N.pth (last) and best_accuracy_top1_epoch_N.pth "
                    "(atomic), history.json, metrics.json, curves.png, confusion_matrix.png, and mmengine's logs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  featx make-digits data/digits && featx train configs/finetune/resnet18_digits.py\n"
               "  featx train configs/finetune/resnet50_imagefolder.py --data-root ~/data/flowers --work-dir runs/flowers\n"
               "  featx train configs/finetune/resnet18_digits.py --resume          # continue the last run\n"
               "  featx train CONFIG --cfg-options train_cfg.max_epochs=30 optim_wrapper.optimizer.lr=0.01\n"
               "  torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch   # DDP: gloo on CPU, nccl on GPU\n",
    )
    p.add_argument("config", help="an mmengine config file (configs/finetune/*.py)")
    p.add_argument("--work-dir", help="where checkpoints, logs and pictures go (default: work_dirs/<config name>)")
    p.add_argument("--data-root", help="ImageFolder root; overrides the config's train and val data_root")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="resume optimizer, schedule and epoch from CHECKPOINT, or without a value from the last "
                        "checkpoint in the work dir")
    p.add_argument("--amp", action="store_true", help="mixed precision (mmengine AmpOptimWrapper; needs CUDA)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                   help="override config keys, key=value (e.g. train_cfg.max_epochs=5)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                   help="'pytorch' when started by torchrun (distributed data parallel)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from featx.train.runner import train

    start = time.perf_counter()
    r = train(args.config, work_dir=args.work_dir, resume=args.resume, amp=args.amp, cfg_options=args.cfg_options,
              launcher=args.launcher, data_root=args.data_root)
    final = (r.get("metrics") or {}).get("final")
    if final:
        top5 = f"  top-5 {final['top5']:.2f}%" if final.get("top5") is not None else ""
        print(f"\nval top-1 {final['top1']:.2f}%{top5}  mean per-class {final['mean_class']:.2f}%  "
              f"(epoch {final['epoch']}, {final['count']} images, {time.perf_counter() - start:.0f} s)")
        print(f"best checkpoint: {r['best_checkpoint']}\nlast checkpoint: {r['last_checkpoint']}")
        print(f"pictures: {Path(r['work_dir']) / 'curves.png'}, {Path(r['work_dir']) / 'confusion_matrix.png'}")
    return 0


# -- predict -------------------------------------------------------------------------------------
def add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="classify images with a fine-tuned checkpoint (top-k classes and probabilities)",
        description="Classify image files (or every image under given folders) with a checkpoint written by "
                    "featx train. The checkpoint's own config gives the model and the validation preprocessing; "
                    "its class names label the output. Unreadable files are reported and make the exit code 1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  featx predict work_dirs/resnet18_digits/best_accuracy_top1_epoch_12.pth data/digits/val/7\n"
               "  featx predict CHECKPOINT a.jpg b.png --topk 3 --json predictions.json\n",
    )
    p.add_argument("checkpoint", help="a training checkpoint (epoch_N.pth or best_*.pth)")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout with no FILE)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from featx.report import format_table
    from featx.train.predict import Predictor, expand_image_paths

    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    paths = expand_image_paths(args.images)
    if not paths:
        raise FileNotFoundError(f"no images found in {' '.join(args.images)}")
    predictor = Predictor(args.checkpoint, device=args.device)
    results = predictor.predict(paths, topk=args.topk, batch_size=args.batch_size)
    failed = [r for r in results if r.error]
    if args.json == "-":
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        rows = []
        for r in results:
            if r.error:
                rows.append([r.image, "-", "-", f"error: {r.error}"])
            else:
                c, _, p = r.top[0]
                rows.append([r.image, c, f"{p:.4f}", "  ".join(f"{c2} {p2:.3f}" for c2, _, p2 in r.top[1:])])
        print(format_table(["image", "class", "prob", f"next {len(results[0].top) - 1 if results[0].top else 0}"], rows))
        if args.json:
            from featx.io import write_json

            write_json(args.json, [r.to_dict() for r in results])
    if failed:
        print(f"{len(failed)} of {len(results)} images could not be read", file=sys.stderr)
        return 1
    return 0


# -- digits --------------------------------------------------------------------------------------
def add_make_digits(sub) -> None:
    p = sub.add_parser(
        "make-digits", help="write scikit-learn's handwritten digits as an ImageFolder (train/ and val/)",
        description="Write the 1,797 real 8x8 handwritten digit scans bundled with scikit-learn as PNGs: "
                    "OUT/train/<digit>/*.png and OUT/val/<digit>/*.png, split per class by a seeded ratio.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  featx make-digits data/digits\n  featx make-digits data/digits --val-ratio 0.3 --seed 1 --overwrite\n",
    )
    p.add_argument("out", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--val-ratio", type=float, default=0.2, help="fraction of each class for val (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_make_digits)


def _cmd_make_digits(args) -> int:
    from featx.train.digits import write_digits_imagefolder

    r = write_digits_imagefolder(args.out, args.val_ratio, args.seed, args.overwrite)
    print(f"wrote {r['train']} train and {r['val']} val images of {r['classes']} classes to {r['root']}")
    return 0


# -- the fine-tuning demo ------------------------------------------------------------------------
def add_finetune_demo(sub) -> None:
    p = sub.add_parser(
        "finetune-demo", help="digits end to end: make the ImageFolder, train ResNet-18, predict, export to ONNX",
        description="The fine-tuning demo: writes scikit-learn's digits as an ImageFolder (if missing), trains "
                    f"{DIGITS_CONFIG} (ResNet-18 from scratch; about 4-5 minutes on 2 CPU cores), predicts a few "
                    "validation images with the best checkpoint, exports it to ONNX and checks ONNX Runtime parity.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  featx finetune-demo\n  featx finetune-demo --cfg-options train_cfg.max_epochs=3   # a quick look\n",
    )
    p.add_argument("--work-dir", default="work_dirs/finetune_demo", help="default work_dirs/finetune_demo")
    p.add_argument("--data-root", default="data/digits", help="where the digits ImageFolder is (or goes)")
    p.add_argument("--config", default=DIGITS_CONFIG, help=f"default {DIGITS_CONFIG}")
    p.add_argument("--cfg-options", nargs="+", default=None, help="passed to featx train")
    p.set_defaults(func=_cmd_finetune_demo)


def _cmd_finetune_demo(args) -> int:
    from featx.cli import main

    data = Path(args.data_root)
    if not data.exists():
        main(["make-digits", str(data)])
    train_args = ["train", args.config, "--work-dir", args.work_dir, "--data-root", str(data)]
    if args.cfg_options:
        train_args += ["--cfg-options", *args.cfg_options]
    if main(train_args) != 0:
        return 1
    metrics = json.loads((Path(args.work_dir) / "metrics.json").read_text())
    best = sorted(Path(args.work_dir).glob("best_*.pth"))[-1]
    samples = [sorted((data / "val" / str(d)).glob("*.png"))[0] for d in (0, 3, 7)]
    print(f"\npredicting {len(samples)} validation images with {best.name}:")
    main(["predict", str(best), *map(str, samples), "--topk", "3"])
    onnx_path = Path(args.work_dir) / "classifier.onnx"
    if main(["export", str(best), "-o", str(onnx_path)]) != 0:
        return 1
    rc = main(["parity", str(onnx_path), "--sizes", "32x32", "64x64", "--repeats", "3"])
    print(f"\nfine-tuning demo: val top-1 {metrics['final']['top1']:.2f}% (epoch {metrics['final']['epoch']}); "
          f"work dir {args.work_dir}")
    return rc
