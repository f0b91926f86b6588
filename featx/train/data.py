"""ImageFolder data for fine-tuning: scanning with validation, the dataset, and v2 pipelines.

Every image is checked *before* training starts (decoded once by default), so a corrupt file
is skipped with a count in the log instead of crashing an epoch. Layouts:

- ``root/train/<class>/*.png`` and ``root/val/<class>/*.png`` (class folders must match), or
- ``root/<class>/*.png``, split into train/val by a seeded, per-class (stratified) ratio.

Images are converted to 8-bit RGB: grayscale, palette, RGBA/LA (composited on white) and
16-bit (scaled to 8 bits) all load. Class names are the sorted folder names.
"""
from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from featx.errors import DataError, did_you_mean
from featx.images import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, pipeline_size_problem, to_rgb
from featx.io import regular_file
from featx.registry import DATASETS

__all__ = [
    "FolderScan", "scan_class_folders", "resolve_splits",
    "ImageFolderDataset", "build_pipeline", "default_pipeline",
]


@dataclass
class FolderScan:
    """What one folder of class sub-folders holds.

    ``samples`` are ``(path, class_name)`` of readable images; ``skipped`` maps a reason to the
    files skipped for it; ``converted`` counts images by the mode they were converted from.
    """

    root: Path
    samples: list[tuple[str, str]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    converted: Counter = field(default_factory=Counter)
    logged: bool = False

    @property
    def classes(self) -> list[str]:
        return sorted({c for _, c in self.samples})

    def summary(self) -> str:
        parts = [f"{self.root}: {len(self.samples)} images in {len(self.classes)} classes"]
        for reason, files in sorted(self.skipped.items()):
            parts.append(f"skipped {len(files)} {reason} (e.g. {files[0]})")
        if self.empty_classes:
            parts.append(f"skipped {len(self.empty_classes)} class folders with no readable image: "
                         f"{', '.join(self.empty_classes[:5])}")
        if self.converted:
            parts.append("converted to RGB: " + ", ".join(f"{n} {m}" for m, n in sorted(self.converted.items())))
        return "; ".join(parts)


def _mode_label(mode: str) -> str:
    if mode.startswith("I;16") or mode in ("I", "F"):
        return f"high-bit-depth ({mode})"
    return {"L": "grayscale (L)", "1": "1-bit (1)", "P": "palette (P)", "RGBA": "RGBA", "LA": "grayscale+alpha (LA)",
            "CMYK": "CMYK"}.get(mode, mode)


def _check_image(path: str, decode: bool) -> tuple[Optional[str], Optional[str]]:
    """``(mode, None)`` for a readable image, ``(None, reason)`` otherwise."""
    try:
        with Image.open(regular_file(path, "image")) as im:
            if decode:
                im.load()
            else:
                im.verify()
            return im.mode, None
    except Exception as e:  # PIL raises many types for broken files
        return None, f"unreadable image files ({type(e).__name__})"


_SCAN_CACHE: dict[tuple, FolderScan] = {}


def scan_class_folders(root: Union[str, Path], extensions: Sequence[str] = IMAGE_EXTENSIONS,
                       verify: str = "decode") -> FolderScan:
    """Find ``root/<class>/**/<image>`` files and check each one.

    Args:
        verify: ``"decode"`` decodes every image once (catches truncated files; ~0.1-5 ms per
            image), ``"header"`` only parses headers, ``"none"`` trusts the extension.
    """
    if verify not in ("decode", "header", "none"):
        raise ValueError(f"verify must be 'decode', 'header' or 'none', got {verify!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    exts = tuple(e.lower() for e in extensions)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    listing = [(d.name, sorted(str(f) for f in d.rglob("*") if f.is_file() and not f.name.startswith(".")))
               for d in class_dirs]
    stray = [str(f) for f in root.iterdir() if f.is_file() and not f.name.startswith(".")]
    fingerprint = (str(root.resolve()), exts, verify,
                   tuple((c, len(fs), max((os.stat(f).st_mtime_ns for f in fs), default=0)) for c, fs in listing),
                   len(stray))
    if fingerprint in _SCAN_CACHE:
        return _SCAN_CACHE[fingerprint]
    scan = FolderScan(root)
    if stray:
        scan.skipped["files outside class folders"] = stray
    for name, files in listing:
        found = 0
        for f in files:
            if not f.lower().endswith(exts):
                scan.skipped.setdefault("non-image files (by extension)", []).append(f)
                continue
            mode, reason = (None, None) if verify == "none" else _check_image(f, verify == "decode")
            if reason:
                scan.skipped.setdefault(reason, []).append(f)
                continue
            if mode not in (None, "RGB"):
                scan.converted[_mode_label(mode)] += 1
            scan.samples.append((f, name))
            found += 1
        if not found:
            scan.empty_classes.append(name)
    _SCAN_CACHE[fingerprint] = scan
    return scan


def _log_once(scan: FolderScan, log: Callable[[str], None]) -> None:
    # the config check, the train and the val dataset all resolve the same (cached) scan
    if not scan.logged:
        log(scan.summary())
        scan.logged = True


def _stratified_split(samples: list[tuple[str, str]], val_ratio: float, seed: int) -> dict[str, list]:
    by_class: dict[str, list] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    rng = random.Random(seed)
    out: dict[str, list] = {"train": [], "val": []}
    for name in sorted(by_class):
        items = list(by_class[name])
        rng.shuffle(items)
        n_val = int(round(len(items) * val_ratio))
        if len(items) > 1:
            n_val = min(max(n_val, 1), len(items) - 1)  # every class in both splits when it can be
        else:
            n_val = 0
        out["val"] += items[:n_val]
        out["train"] += items[n_val:]
    return out


def resolve_splits(data_root: Union[str, Path], val_ratio: float = 0.2, seed: int = 0,
                   extensions: Sequence[str] = IMAGE_EXTENSIONS, verify: str = "decode",
                   log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Scan ``data_root`` and return ``{"classes": [...], "train": [(path, label)], "val": [...],
    "layout": "train/val folders" | "split by ratio"}``. Raises ``DataError`` for an unusable dataset."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root} (expected {root}/train/<class>/*.png and "
                        f"{root}/val/<class>/*.png, or {root}/<class>/*.png)")
    if not 0.0 < val_ratio < 1.0:
        raise DataError(f"val_ratio must be between 0 and 1, got {val_ratio}")
    log = log or (lambda m: print_log(m, logger="current"))
    if (root / "train").is_dir():
        if not (root / "val").is_dir():
            raise DataError(f"{root} has train/ but no val/; add {root}/val/<class>/ folders, or put the class "
                            f"folders directly under {root} to split by val_ratio")
        scans = {s: scan_class_folders(root / s, extensions, verify) for s in ("train", "val")}
        for s in scans.values():
            _log_once(s, log)
        train_classes, val_classes = scans["train"].classes, scans["val"].classes
        if not scans["train"].samples:
            raise DataError(f"empty dataset: no readable images with extensions {', '.join(extensions)} "
                            f"under {root / 'train'}/<class>/")
        if not scans["val"].samples:
            raise DataError(f"no readable images under {root / 'val'}/<class>/")
        if train_classes != val_classes:
            only_val = sorted(set(val_classes) - set(train_classes))
            missing = sorted(set(train_classes) - set(val_classes))
            raise DataError(f"the classes of {root / 'val'} differ from {root / 'train'}: "
                            + "; ".join(p for p in (f"only in val: {only_val}" if only_val else "",
                                                    f"missing from val: {missing}" if missing else "") if p))
        splits = {s: scans[s].samples for s in scans}
        layout = "train/val folders"
    else:
        scan = scan_class_folders(root, extensions, verify)
        _log_once(scan, log)
        if not scan.samples:
            raise DataError(f"empty dataset: no readable images with extensions {', '.join(extensions)} "
                            f"under {root}/<class>/ (or {root}/train/<class>/ and {root}/val/<class>/)")
        splits = _stratified_split(scan.samples, val_ratio, seed)
        train_classes = scan.classes
        layout = f"split by ratio (val {val_ratio:g}, seed {seed})"
    if len(train_classes) < 2:
        raise DataError(f"a classifier needs at least 2 classes, {root} has {train_classes}")
    index = {c: i for i, c in enumerate(train_classes)}
    return {"classes": train_classes, "layout": layout,
            **{s: [(p, index[c]) for p, c in items] for s, items in splits.items()}}


# -- pipelines ----------------------------------------------------------------------------------
def _resolve_value(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("torch."):
        resolved = getattr(torch, value[6:], None)
        if isinstance(resolved, torch.dtype):
            return resolved
    if isinstance(value, str) and value in ("float32", "float16", "bfloat16", "float64", "uint8"):
        return getattr(torch, value)
    return value


def build_pipeline(steps: Sequence[Union[dict, Callable]]) -> Callable:
    """A ``torchvision.transforms.v2.Compose`` from config dicts, e.g.
    ``[dict(type="Resize", size=32), dict(type="ToImage"), dict(type="ToDtype", dtype="float32", scale=True)]``.
    ``type`` names a class in ``torchvision.transforms.v2``; dtype names may be strings."""
    built = []
    for step in steps:
        if callable(step):
            built.append(step)
            continue
        if not isinstance(step, dict) or "type" not in step:
            raise TypeError(f"a pipeline step must be a dict with a 'type' or a callable, got {step!r}")
        kwargs = {k: _resolve_value(v) for k, v in step.items() if k != "type"}
        name = step["type"]
        cls = getattr(v2, name, None) if isinstance(name, str) else name
        if cls is None or not callable(cls):
            names = [n for n in dir(v2) if n[:1].isupper()]
            raise ValueError(f"unknown transform {name!r} (torchvision.transforms.v2){did_you_mean(name, names)}")
        try:
            built.append(cls(**kwargs))
        except TypeError as e:
            raise ValueError(f"transform {name}: {e}") from None
    return v2.Compose(built)


def default_pipeline(split: str, size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> list[dict]:
    """The usual ImageNet-style pipeline as config dicts: random resized crop + flip for train,
    resize (size * 8/7) + center crop for val; both end in float 0..1 and normalize."""
    tail = [dict(type="ToImage"), dict(type="ToDtype", dtype="float32", scale=True),
            dict(type="Normalize", mean=list(mean), std=list(std))]
    if split == "train":
        return [dict(type="RandomResizedCrop", size=size, antialias=True), dict(type="RandomHorizontalFlip")] + tail
    return [dict(type="Resize", size=int(round(size * 8 / 7)), antialias=True), dict(type="CenterCrop", size=size)] + tail


@DATASETS.register_module()
class ImageFolderDataset(Dataset):
    """Images and integer labels from an ImageFolder root (see the module docstring).

    Args:
        data_root: the root folder.
        split: ``"train"`` or ``"val"``.
        pipeline: v2 transform config dicts (``build_pipeline``); default ``default_pipeline(split)``.
        val_ratio, seed: the split of a root without train/ and val/ (the same for both splits).
        verify: how images are checked before training (``scan_class_folders``).

    Items are ``{"inputs": (3, H, W) float tensor, "labels": int}``; ``metainfo["classes"]``
    holds the class names (saved in every checkpoint by mmengine's Runner).
    """

    def __init__(self, data_root: str, split: str = "train", pipeline: Optional[Sequence] = None,
                 val_ratio: float = 0.2, seed: int = 0, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 verify: str = "decode") -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        info = resolve_splits(data_root, val_ratio, seed, extensions, verify)
        self.data_root = str(data_root)
        self.split = split
        self.samples: list[tuple[str, int]] = info[split]
        if not self.samples:
            raise DataError(f"the {split} split of {data_root} is empty ({info['layout']})")
        self.classes: tuple[str, ...] = tuple(info["classes"])
        self.metainfo = {"classes": self.classes}
        self.transform = build_pipeline(pipeline if pipeline is not None else default_pipeline(split))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        with Image.open(regular_file(path, "image")) as im:
            problem = pipeline_size_problem(self.transform, (im.height, im.width))
            if problem:  # before decoding: a tiny file can name a huge resize
                raise DataError(f"{path}: {problem}; remove it from the dataset or add a crop to the pipeline")
            image = to_rgb(im)
            image.load()
        return {"inputs": self.transform(image), "labels": label}

    def class_counts(self) -> list[int]:
        counts = Counter(label for _, label in self.samples)
        return [counts.get(i, 0) for i in range(len(self.classes))]
