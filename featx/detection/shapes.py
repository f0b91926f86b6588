"""A COCO-format dataset of simple shapes with exact boxes, for offline detector training.

Each image has a textured background (noise, stripes or checks in random colours) and 1..N
non-overlapping objects of three classes: rectangle, ellipse, triangle, of random size and colour.
Every object is also drawn into its own mask, and its box and area come from that mask, so the
annotation is exactly the object's pixel extent (COCO ``[x, y, w, h]``, ``w = x_max - x_min + 1``).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageDraw

from featx.io import atomic_path

__all__ = ["CATEGORIES", "render_image", "make_shapes_dataset", "point_mmdet_config_at_shapes"]

CATEGORIES = [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "ellipse"}, {"id": 3, "name": "triangle"}]


def _background(rng: random.Random, size: int) -> Image.Image:
    nrng = np.random.default_rng(rng.randrange(2**32))
    base = np.array([rng.randrange(40, 216) for _ in range(3)], dtype=np.float32)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size]
    kind = rng.choice(["noise", "stripes", "checks"])
    other = np.array([rng.randrange(0, 256) for _ in range(3)], dtype=np.float32)
    if kind == "stripes":
        period = rng.randrange(6, 20)
        on = ((xx * rng.choice([0, 1, 1]) + yy) // period) % 2 == 0
        img[on] = 0.7 * img[on] + 0.3 * other
    elif kind == "checks":
        period = rng.randrange(8, 24)
        on = ((xx // period) + (yy // period)) % 2 == 0
        img[on] = 0.75 * img[on] + 0.25 * other
    img += nrng.normal(0, 12, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def _shape_points(kind: str, box: tuple[int, int, int, int], rng: random.Random):
    x0, y0, x1, y1 = box
    if kind == "triangle":
        return [(rng.randint(x0, x1), y0), (x0, y1), (x1, rng.randint(y0 + (y1 - y0) // 2, y1))]
    return [x0, y0, x1, y1]


def render_image(rng: random.Random, size: int = 128, max_objects: int = 4, min_side: int = 14,
                 max_side: int = 56) -> tuple[Image.Image, list[dict]]:
    """One image and its objects: ``[{"category_id", "bbox" (xywh), "area", "mask" (bool HxW)}]``."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    taken: list[tuple[int, int, int, int]] = []
    objects = []
    for _ in range(rng.randint(1, max_objects)):
        for _attempt in range(30):  # place without overlap (2 px apart), so no object hides another
            w, h = rng.randint(min_side, max_side), rng.randint(min_side, max_side)
            x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
            box = (x0, y0, x0 + w - 1, y0 + h - 1)
            if all(box[2] + 2 < t[0] or t[2] + 2 < box[0] or box[3] + 2 < t[1] or t[3] + 2 < box[1] for t in taken):
                break
        else:
            continue
        taken.append(box)
        cat = rng.choice(CATEGORIES)
        colour = tuple(rng.randrange(0, 256) for _ in range(3))
        mask_img = Image.new("L", (size, size), 0)
        mdraw = ImageDraw.Draw(mask_img)
        pts = _shape_points(cat["name"], box, rng)
        for d, fill in ((draw, colour), (mdraw, 255)):
            if cat["name"] == "rectangle":
                d.rectangle(pts, fill=fill)
            elif cat["name"] == "ellipse":
                d.ellipse(pts, fill=fill)
            else:
                d.polygon(pts, fill=fill)
        mask = np.array(mask_img) > 0
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        objects.append({"category_id": cat["id"], "bbox": bbox, "area": int(mask.sum()), "mask": mask,
                        "colour": colour})
    return img, objects


def make_shapes_dataset(root: Union[str, Path], num_train: int = 600, num_val: int = 150, size: int = 128,
                        seed: int = 0, max_objects: int = 4) -> dict[str, Path]:
    """Write ``root/{train,val}/*.png`` and ``root/annotations/instances_{train,val}.json`` (COCO)."""
    root = Path(root)
    rng = random.Random(seed)
    paths = {}
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            img, objects = render_image(rng, size, max_objects)
            name = f"{split}_{i:05d}.png"
            img.save(root / split / name)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            for o in objects:
                x, y, w, h = o["bbox"]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": o["category_id"],
                                    "bbox": [x, y, w, h], "area": o["area"], "iscrowd": 0,
                                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        ann = root / "annotations" / f"instances_{split}.json"
        with atomic_path(ann) as tmp:
            tmp.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
        paths[split] = ann
    return paths


def point_mmdet_config_at_shapes(cfg: Any, root: Union[str, Path], batch_size: int = 2, workers: int = 0,
                                 image_size: int = 128) -> Any:
    """An mmdet config (an mmengine ``Config``) pointed at a shapes set written by :func:`make_shapes_dataset`:
    its heads' class counts, its train/val/test loaders (COCO annotations, image folders, the 3 classes,
    ``Resize`` to ``image_size``) and its COCO evaluators. Changes ``cfg`` in place and returns it."""
    root = Path(root)
    classes = tuple(c["name"] for c in CATEGORIES)
    if "bbox_head" in cfg.model:
        cfg.model.bbox_head.num_classes = len(classes)
    if "roi_head" in cfg.model:
        cfg.model.roi_head.bbox_head.num_classes = len(classes)
        if "mask_head" in cfg.model.roi_head:
            cfg.model.roi_head.mask_head.num_classes = len(classes)
    for split, loader in (("train", cfg.train_dataloader), ("val", cfg.val_dataloader), ("val", cfg.test_dataloader)):
        loader.num_workers = workers
        loader.persistent_workers = workers > 0
        loader.batch_size = batch_size
        ds = loader.dataset
        ds.data_root = str(root)
        ds.ann_file = f"annotations/instances_{split}.json"
        ds.data_prefix = dict(img=f"{split}/")
        ds.metainfo = dict(classes=classes)
        for step in ds.pipeline:
            if step["type"] == "Resize":
                step["scale"] = (image_size, image_size)
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        evaluator.ann_file = str(root / "annotations" / "instances_val.json")
        evaluator.backend_args = None
    return cfg
