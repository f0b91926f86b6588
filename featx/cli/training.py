"""``featx train``, ``predict``, ``make-digits`` and ``train-detector``: fine-tuning a classifier on an
ImageFolder and a torchvision detector on COCO-format data."""
from __future__ import annotations

import json
import time
from pathlib import Path

from featx.cli.common import CfgOptions, add_command, int_at_least, log, non_negative_float, writable_file

__all__ = ["COMMANDS"]


def _add_train(sub) -> None:
    p = add_command(
        sub, "train", verbose_help="also show mmengine's full log on the console (environment, config, hooks, periodic "
                                   "lines; it is always written to the work dir's log file), and the libraries' own "
                                   "log lines", help="fine-tune a featx backbone + classification head on an ImageFolder (mmengine Runner)",
        description="Fine-tune a classifier (featx backbone + pooling/dropout/linear head) with mmengine's Runner, "
                    "as a config in configs/finetune/ describes: data (ImageFolder with train/ and val/, or one folder "
                    "split by a seeded ratio), model, optimizer (paramwise backbone LR), warm-up + cosine schedule. "
                    "The data is checked before training (unreadable files skipped and counted; mismatched classes "
                    "are an error). Writes to the work dir: epoch_N.pth (last), best_accuracy_top1_epoch_N.pth and the "
                    "same file as best.pth (atomic), history.json, metrics.json, curves.png, confusion_matrix.png, and mmengine's logs.",
        epilog="examples:\n"
               "  featx make-digits data/digits && featx train configs/finetune/resnet18_digits.py\n"
               "  featx train configs/finetune/resnet50_imagefolder.py --data-root ~/data/flowers --work-dir runs/flowers\n"
               "  featx train configs/finetune/resnet18_digits.py --resume          # continue the last run\n"
               "  featx train CONFIG --cfg-options train_cfg.max_epochs=30 optim_wrapper.optimizer.lr=0.01\n"
               "  torchrun --nproc_per_node=2 -m featx train CONFIG --launcher pytorch   # DDP: gloo on CPU, nccl on GPU\n",
    )
    p.add_argument("config", help="an mmengine config file (configs/finetune/*.py)")
    p.add_argument("--work-dir", help="where checkpoints, logs and pictures go (default: work_dirs/<config name>)")
    p.add_argument("--data-root", help="ImageFolder root; overrides the config's train and val data_root")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="resume optimizer, schedule and epoch from CHECKPOINT, or without a value from the last "
                        "checkpoint in the work dir")
    p.add_argument("--amp", action="store_true", help="mixed precision (mmengine AmpOptimWrapper; needs CUDA)")
    p.add_argument("--cfg-options", nargs="+", action=CfgOptions, default=None,
                   help="override config keys, key=value (e.g. train_cfg.max_epochs=5)")
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                   help="'pytorch' when started by torchrun (distributed data parallel)")
    p.set_defaults(func=_cmd_train, on_interrupt="rerun the same command with --resume to continue from the last checkpoint")


def _cmd_train(args) -> int:
    from featx.train.runner import train

    start = time.perf_counter()
    r = train(args.config, work_dir=args.work_dir, resume=args.resume, amp=args.amp, cfg_options=args.cfg_options,
              launcher=args.launcher, data_root=args.data_root, verbose=getattr(args, "verbose", False))
    final = (r.get("metrics") or {}).get("final")
    if final:
        top5 = f"  top-5 {final['top5']:.2f}%" if final.get("top5") is not None else ""
        print(f"\nval top-1 {final['top1']:.2f}%{top5}  mean per-class {final['mean_class']:.2f}%  "
              f"(epoch {final['epoch']}, {final['count']} images, {time.perf_counter() - start:.0f} s)")
        print(f"best checkpoint: {r['best_checkpoint']}\nlast checkpoint: {r['last_checkpoint']}")
        print(f"pictures: {Path(r['work_dir']) / 'curves.png'}, {Path(r['work_dir']) / 'confusion_matrix.png'}")
    if r.get("log_file"):
        print(f"full log: {r['log_file']}")
    return 0


def _add_predict(sub) -> None:
    p = add_command(
        sub, "predict", help="classify images with a fine-tuned checkpoint (top-k classes and probabilities)",
        description="Classify image files (or every image under given folders) with a checkpoint written by "
                    "featx train. The checkpoint's own config gives the model and the validation preprocessing; "
                    "its class names label the output. Unreadable files are reported and make the exit code 1.",
        epilog="examples:\n"
               "  featx predict work_dirs/resnet18_digits/best.pth data/digits/val/7\n"
               "  featx predict CHECKPOINT a.jpg b.png --topk 3 --json predictions.json\n",
    )
    p.add_argument("checkpoint", help="a training checkpoint (epoch_N.pth or best_*.pth)")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--topk", type=int_at_least(1), default=5, help="classes per image (default 5)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (or stdout with no FILE)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="images per forward pass (default 32)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from featx.images import expand_image_paths
    from featx.io import write_json
    from featx.report import format_table
    from featx.train.predict import Predictor

    if args.json not in (None, "-"):
        writable_file(args.json)
    paths = expand_image_paths(args.images)
    if not paths:
        raise FileNotFoundError(f"no images found in {' '.join(args.images)}")
    results = Predictor(args.checkpoint, device=args.device).predict(paths, topk=args.topk, batch_size=args.batch_size)
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
            write_json(args.json, [r.to_dict() for r in results])
    if failed:
        log(f"{len(failed)} of {len(results)} images could not be read")
        return 1
    return 0


def _add_make_digits(sub) -> None:
    p = add_command(
        sub, "make-digits", help="write scikit-learn's handwritten digits as an ImageFolder (train/ and val/)",
        description="Write the 1,797 real 8x8 handwritten digit scans bundled with scikit-learn as PNGs: "
                    "OUT/train/<digit>/*.png and OUT/val/<digit>/*.png, split per class by a seeded ratio.",
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


def _add_train_detector(sub) -> None:
    p = add_command(
        sub, "train-detector", help="fine-tune a torchvision Faster R-CNN with a featx backbone on COCO-format data",
        description="Train torchvision's Faster R-CNN with a featx composite as its backbone on a COCO-format dataset "
                    "(ROOT/train, ROOT/val, ROOT/annotations/instances_{train,val}.json), then report COCO bbox mAP "
                    "on val (pycocotools). With --make-shapes it first writes a synthetic shapes dataset there. "
                    "The trained weights are saved only with --out.",
        epilog="examples:\n"
               "  featx train-detector data/shapes --make-shapes --minutes 15 --out work_dirs/shapes\n"
               "  featx train-detector data/coco_subset --model ResNet50FPN --weights DEFAULT --iters 2000 --out runs/coco\n",
    )
    p.add_argument("root", help="dataset root (COCO layout)")
    p.add_argument("--make-shapes", action="store_true", help="generate the shapes dataset into ROOT first")
    p.add_argument("--num-train", type=int_at_least(1), default=600, help="with --make-shapes: training images (default 600)")
    p.add_argument("--num-val", type=int_at_least(1), default=150, help="with --make-shapes: validation images (default 150)")
    p.add_argument("--model", default="ResNet18FPN", help="featx composite with an FPN (default ResNet18FPN)")
    p.add_argument("--weights", help="weights for the composite (default: random init)")
    p.add_argument("--iters", type=int_at_least(1), default=500, help="training iterations (cosine schedule length; default 500)")
    p.add_argument("--minutes", type=non_negative_float, default=15.0, help="stop training after this many minutes (default 15); a run stopped before --iters says "
                        "how far it got (log, summary and metrics.json)")
    p.add_argument("--fit-schedule", action="store_true",
                   help="when --iters cannot finish within --minutes at the measured pace, shorten the cosine schedule "
                        "to fit so the learning rate anneals (measured on the shapes set in 3 minutes: mAP@0.5 0.34 "
                        "fitted against 0.59 cut at a high learning rate; it pays for longer budgets, if at all)")
    p.add_argument("--batch", type=int_at_least(1), default=8, help="images per iteration (default 8)")
    p.add_argument("--lr", type=non_negative_float, default=0.02, help="peak SGD learning rate (default 0.02)")
    p.add_argument("--warmup", type=int_at_least(0), default=50, help="linear warm-up iterations (default 50)")
    p.add_argument("--image-size", type=int_at_least(32, 2048), default=128, help="resize images to this side (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where the detector trains and is evaluated: cpu (default), cuda or cuda:N")
    p.add_argument("--out", help="folder for detector.pth and metrics.json (without it nothing is saved)")
    p.set_defaults(func=_cmd_train_detector)


def _cmd_train_detector(args) -> int:
    from featx.detection.shapes import make_shapes_dataset
    from featx.detection.train import DetectorTrainConfig, train_detector
    from featx.io import write_json
    from featx.models import get_entry

    from featx.devices import checked_device

    checked_device(args.device)  # before writing a dataset
    entry = get_entry(args.model)
    if entry.pyramid is None:
        raise ValueError(f"train-detector needs a composite with an FPN (a pyramid of equal channels), got the backbone "
                         f"{entry.name}; try {entry.name}FPN")
    root = Path(args.root)
    if args.make_shapes:
        print(f"writing the shapes dataset ({args.num_train} train / {args.num_val} val) to {root} ...", flush=True)
        make_shapes_dataset(root, args.num_train, args.num_val, seed=args.seed)
    if not args.out:
        log("note: no --out given, so the trained detector is not saved (metrics are printed only)")
    cfg = DetectorTrainConfig(model=entry.name, weights=args.weights, image_size=args.image_size, batch_size=args.batch,
                              lr=args.lr, warmup_iters=args.warmup, max_iters=args.iters, time_limit_s=args.minutes * 60,
                              fit_schedule=args.fit_schedule, device=args.device,
                              seed=args.seed)
    r = train_detector(root, cfg, Path(args.out) if args.out else None, log=lambda m: print(m, flush=True))
    m = r["metrics"]
    first, last = r["losses"][:10], r["losses"][-10:]
    of = (f" (the time limit cut the {r['schedule_iters']}-iteration schedule: a partly trained detector)" if r["cut"]
          else f" (schedule fitted to --minutes from the {r['iters_requested']} asked)"
          if r["schedule_iters"] < r["iters_requested"] else "")
    print(f"\n{cfg.model} Faster R-CNN: {r['iters']} iterations in {r['seconds'] / 60:.1f} min{of}; "
          f"loss {sum(first) / len(first):.3f} -> {sum(last) / len(last):.3f}")
    print(f"val COCO bbox: mAP@0.5 {m['mAP50']:.3f}  mAP@[.5:.95] {m['mAP']:.3f}  mAP@0.75 {m['mAP75']:.3f}")
    if args.out:
        write_json(Path(args.out) / "metrics.json", {k: v for k, v in r.items() if k != "losses"} | {
            "loss_first10": first, "loss_last10": last})
        print(f"checkpoint: {r['checkpoint']}")
    return 0


# each adds one sub-command to the parser (featx.cli.build_parser)
COMMANDS = (_add_train, _add_predict, _add_make_digits, _add_train_detector)
