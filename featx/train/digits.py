"""A real dataset that ships with a dependency: scikit-learn's handwritten digits as an ImageFolder.

1,797 real 8x8 scans (UCI optical recognition of handwritten digits, 16 gray levels), 10 classes.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

__all__ = ["write_digits_imagefolder"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_digits_imagefolder(out: Union[str, Path], val_ratio: float = 0.2, seed: int = 0,
                             overwrite: bool = False) -> dict:
    """Write ``out/train/<digit>/<index>.png`` and ``out/val/<digit>/<index>.png`` (8x8 grayscale).

    The split is per class and seeded, so the same seed always gives the same files. The folder
    appears complete or not at all (written beside ``out`` and renamed). Returns counts per split.
    """
    try:
        from sklearn.datasets import load_digits  # the optional `digits` extra
    except ImportError:
        raise RuntimeError("the digits dataset ships with scikit-learn: pip install scikit-learn") from None
    if not 0.0 < val_ratio < 1.0:
        raise ValueError(f"val_ratio must be between 0 and 1, got {val_ratio}")
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    rng = random.Random(seed)
    counts = {"train": 0, "val": 0}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for label in range(10):
            indices = [int(i) for i in np.flatnonzero(digits.target == label)]
            rng.shuffle(indices)
            n_val = int(round(len(indices) * val_ratio))
            for split, chosen in (("val", indices[:n_val]), ("train", indices[n_val:])):
                folder = tmp / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                for i in chosen:
                    Image.fromarray(images[i], "L").save(folder / f"{i:04d}.png")
                counts[split] += len(chosen)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's folder is private (0700); a plain mkdir's would not be
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"root": str(out), "classes": 10, **counts}
