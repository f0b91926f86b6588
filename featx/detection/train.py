"""Fine-tune a torchvision Faster R-CNN with a featx backbone on a COCO-format dataset; COCO mAP.

Data layout (``torchvision.datasets.CocoDetection``): ``ROOT/train/*.png``, ``ROOT/val/*.png``,
``ROOT/annotations/instances_{train,val}.json``. Evaluation uses pycocotools' ``COCOeval``.
"""
from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from torchvision import datasets
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.transforms import v2

from featx.checkpoints import load_checkpoint_file
from featx.devices import checked_device
from featx.errors import WeightsError
from featx.integrations.torchvision import as_detection_backbone, detector_kwargs
from featx.io import atomic_path
from featx.models import create_model

__all__ = ["DetectorTrainConfig", "build_detector", "load_detector", "coco_loaders", "train_detector", "evaluate_coco"]


@dataclass
class DetectorTrainConfig:
    model: str = "ResNet18FPN"
    weights: Optional[str] = None  # backbone/composite weights (None: random init)
    image_size: int = 128  # images are resized so the shorter side is this (and the longer at most this)
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    max_iters: int = 3000
    time_limit_s: float = 15 * 60  # stop training after this much wall time (evaluation not included)
    anchor_size_per_stride: int = 4  # anchors 16..256 on P2..P6: objects here are 14..56 px
    frozen_stages: int = -1
    fpn_channels: int = 128  # half torchvision's 256: enough for 3 classes, twice as fast on a CPU
    seed: int = 0
    log_every: int = 20
    log_every_s: float = 30.0  # a progress line at least this often, however slow the iterations
    # shorten the cosine schedule when max_iters cannot finish within time_limit_s (opt-in: on the shapes set a
    # 3-minute run cut at a high learning rate reached mAP@0.5 0.586, the same run fitted and annealed 0.336)
    fit_schedule: bool = False
    num_workers: int = 0
    device: str = "cpu"  # where the detector trains and is evaluated ("cuda", "cuda:1")
    # torchvision's defaults sample 512 RoIs per image for 800-px COCO images; on small images and
    # a CPU that makes the box head (and RoIAlign's backward) 90% of the time.
    extra: dict = field(default_factory=lambda: dict(
        box_batch_size_per_image=64, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150, rpn_batch_size_per_image=128,
        box_detections_per_img=30))


def build_detector(cfg: DetectorTrainConfig, num_classes: int) -> nn.Module:
    """torchvision FasterRCNN around a featx composite, anchors/poolers from ``detector_kwargs``."""
    body = create_model(cfg.model, weights=cfg.weights, frozen_stages=cfg.frozen_stages,
                              neck=dict(out_channels=cfg.fpn_channels))
    strides = [f.stride for f in body.feature_info]
    anchors = AnchorGenerator(tuple((cfg.anchor_size_per_stride * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
    kw = detector_kwargs(body, "faster_rcnn", rpn_anchor_generator=anchors)
    return FasterRCNN(as_detection_backbone(body), num_classes=num_classes, min_size=cfg.image_size,
                      max_size=cfg.image_size, **kw, **cfg.extra)


def load_detector(path: Union[str, Path]) -> tuple[nn.Module, DetectorTrainConfig]:
    """The detector ``train_detector`` saved (``detector.pth``: weights, classes and its config), in eval mode."""
    ckpt = load_checkpoint_file(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise WeightsError(f"{path} is not a detector checkpoint written by featx train-detector (no config)")
    cfg = DetectorTrainConfig(**{**ckpt["config"], "weights": None})
    model = build_detector(cfg, int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval(), cfg


def _collate(batch):
    return tuple(zip(*batch))


def coco_loaders(root: Path, cfg: DetectorTrainConfig):
    """Train/val loaders over ``CocoDetection`` wrapped for transforms v2 (XYXY boxes, labels)."""
    tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    out = {}
    for split in ("train", "val"):
        ann = root / "annotations" / f"instances_{split}.json"
        if not ann.is_file():
            raise FileNotFoundError(f"{ann} not found: expected ROOT/{split}/ images and ROOT/annotations/instances_{split}.json")
        ds = datasets.CocoDetection(str(root / split), str(ann), transforms=tf)
        ds = datasets.wrap_dataset_for_transforms_v2(ds, target_keys=("image_id", "boxes", "labels"))
        g = torch.Generator().manual_seed(cfg.seed)
        out[split] = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size if split == "train" else 16,
                                                 shuffle=split == "train", collate_fn=_collate, generator=g,
                                                 num_workers=cfg.num_workers, drop_last=split == "train")
    return out["train"], out["val"]


def _to_target(t: dict, device: torch.device = torch.device("cpu")) -> dict:
    boxes = t.get("boxes")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) if boxes is not None else torch.zeros(0, 4)
    labels = torch.as_tensor(t.get("labels", torch.zeros(0)), dtype=torch.int64).reshape(-1)
    return {"boxes": boxes.to(device), "labels": labels.to(device)}


def evaluate_coco(model: nn.Module, loader, log: Callable = print) -> dict[str, float]:
    """COCO bbox metrics on ``loader``'s dataset: ``{"mAP": .., "mAP50": .., "mAP75": ..}``."""
    from pycocotools.cocoeval import COCOeval  # the optional `detection` extra

    coco = loader.dataset._dataset.coco if hasattr(loader.dataset, "_dataset") else loader.dataset.coco
    model.eval()
    device = next(model.parameters()).device
    results = []
    with torch.inference_mode():
        for images, targets in loader:
            for out, t in zip(model([im.to(device) for im in images]), targets):
                b = out["boxes"]
                for (x1, y1, x2, y2), s, c in zip(b.tolist(), out["scores"].tolist(), out["labels"].tolist()):
                    results.append({"image_id": int(t["image_id"]), "category_id": int(c),
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
    if not results:
        return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(results)
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP": float(ev.stats[0]), "mAP50": float(ev.stats[1]), "mAP75": float(ev.stats[2]), "detections": len(results)}


def fitted_schedule(max_iters: int, done: int, elapsed_s: float, limit_s: float, rate: float) -> int:
    """The schedule length (iterations) that ends within ``limit_s``: ``done`` iterations after ``elapsed_s``,
    then ``rate`` iterations per second for the time left, with 5% to spare; ``max_iters`` when that fits, and
    at least ``done + 1``."""
    fits = done + int(rate * max(limit_s - elapsed_s, 0.0) * 0.95)
    return max(done + 1, min(max_iters, fits))


def train_detector(root: Path, cfg: DetectorTrainConfig, out_dir: Optional[Path] = None,
                   log: Callable = print) -> dict[str, Any]:
    """Train until ``max_iters`` or ``time_limit_s``, evaluate COCO mAP on val, save the weights.

    With ``fit_schedule``, when the pace of iterations 5-15 says ``max_iters`` cannot finish in
    ``time_limit_s``, the cosine schedule is shortened once to the number that fits, so the learning rate still
    anneals; the log says so. Without it (the default) a run the time limit stops says how far it got. Returns ``{"iters", "iters_requested", "schedule_iters", "cut"
    (True when the time limit stopped training before the schedule's end), "seconds", "losses" (per-iteration
    totals), "metrics", "checkpoint"}``.
    """
    device = checked_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_loader, val_loader = coco_loaders(Path(root), cfg)
    num_classes = 1 + max(c["id"] for c in train_loader.dataset._dataset.coco.dataset["categories"])
    model = build_detector(cfg, num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = cfg.max_iters  # may be shortened to fit the time limit

    def lr_at(it: int) -> float:  # linear warm-up, then cosine to 1% over the schedule
        warmup = min(cfg.warmup_iters, max(1, schedule // 5))
        if it < warmup:
            return cfg.lr * (0.001 + 0.999 * it / warmup)
        p = min(1.0, (it - warmup) / max(1, schedule - warmup))
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p)))

    losses: list[float] = []
    start = time.perf_counter()
    last_log = start
    after_five = 0.0
    it = 0
    model.train()
    done = False
    while not done:
        for images, targets in train_loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(it)
            loss_dict = model([im.to(device) for im in images], [_to_target(t, device) for t in targets])
            loss = sum(loss_dict.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at iteration {it}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            losses.append(loss.item())
            it += 1
            now = time.perf_counter()
            elapsed = now - start
            if it == 5:
                after_five = elapsed  # the first iterations are slow (allocations, kernel choices): not the pace
            if cfg.fit_schedule and it == 15 and schedule == cfg.max_iters:
                rate = 10 / max(elapsed - after_five, 1e-9)
                fits = fitted_schedule(cfg.max_iters, it, elapsed, cfg.time_limit_s, rate)
                if fits < cfg.max_iters:
                    schedule = fits
                    log(f"at {rate:.2f} it/s, {cfg.max_iters} iterations would take "
                        f"{(elapsed + (cfg.max_iters - it) / rate) / 60:.1f} min, more than the "
                        f"{cfg.time_limit_s / 60:g} min allowed: the schedule is shortened to {schedule} iterations so "
                        "that it anneals in time (more minutes or fewer iterations for the full schedule)")
            if it % cfg.log_every == 0 or it == 1 or now - last_log >= cfg.log_every_s:
                last_log = now
                rate = it / elapsed
                eta = min((schedule - it) / rate, cfg.time_limit_s - elapsed)
                recent = sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:])
                log(f"iter {it:5d}/{schedule}  loss {recent:.3f}  lr {lr_at(it):.4f}  {rate:.2f} it/s  "
                    f"elapsed {elapsed / 60:.1f} min  eta {max(eta, 0) / 60:.1f} min")
            if it >= schedule or elapsed >= cfg.time_limit_s:
                done = True
                break
    train_s = time.perf_counter() - start
    cut = it < schedule
    if cut:
        log(f"stopped by the time limit ({cfg.time_limit_s / 60:g} min) after {it} of {schedule} iterations "
            f"({100 * it / schedule:.0f}% of the schedule, learning rate still {lr_at(it):.4f}): the metrics below "
            "are of a partly trained detector; evaluating on val ...")
    else:
        log(f"trained {it} iterations in {train_s / 60:.1f} min"
            + (f" (of the {cfg.max_iters} asked; schedule fitted to the time limit)" if schedule < cfg.max_iters else "")
            + "; evaluating on val ...")
    metrics = evaluate_coco(model, val_loader, log)
    result: dict[str, Any] = {"iters": it, "iters_requested": cfg.max_iters, "schedule_iters": schedule, "cut": cut,
                              "seconds": train_s, "losses": losses, "metrics": metrics, "config": asdict(cfg),
                              "checkpoint": None}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt = out_dir / "detector.pth"
        with atomic_path(ckpt) as tmp:
            torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "num_classes": num_classes, "config": asdict(cfg)}, tmp)
        result["checkpoint"] = str(ckpt)
    return result
