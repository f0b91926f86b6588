"""The plan of an extraction: each image's size from its header, resized and padded to the model's coarsest
stride, sorted by padded shape and id, cut into batches of one shape each (little padding, no mixing)."""
from __future__ import annotations

import hashlib
import io
import math
import os
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from PIL import Image

from featx.extraction.listing import printable_id
from featx.extraction.settings import ExtractSettings
from featx.images import resized_size_problem, shorter_side_size


@dataclass(frozen=True)
class PlannedImage:
    id: str
    file: str
    size: tuple[int, int]  # original (h, w)
    resized: tuple[int, int]
    padded: tuple[int, int]


def image_size(data: bytes) -> Union[tuple[int, int], str]:
    """An encoded image's ``(h, w)`` from its header, or why it cannot be read (what :func:`plan_batches` records)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        return h, w
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:160]}"


def target_size(size: tuple[int, int], settings: ExtractSettings, divisor: int) -> tuple[tuple[int, int], tuple[int, int]]:
    rh, rw = settings.resize if settings.resize is not None else shorter_side_size(size, settings.size)
    return (rh, rw), (math.ceil(rh / divisor) * divisor, math.ceil(rw / divisor) * divisor)


def plan_batches(images: Sequence[tuple[str, Path]], settings: ExtractSettings, divisor: int,
                 sizes: Optional[dict[str, Union[tuple[int, int], str]]] = None) -> tuple[list[list[PlannedImage]], list[dict]]:
    """The fixed batches (one padded shape each, sorted by shape and id) and the images whose header
    could not be read, with the reason. The same collection and settings always give the same batches.
    ``sizes`` (id -> ``(h, w)``, or why the header was unreadable) replaces reading the files' headers, for
    images that are not files (a Ray dataset of bytes: :func:`image_size`)."""
    planned, skipped = [], []
    for image_id, file in images:
        if sizes is not None:
            size = sizes[image_id]
            if isinstance(size, str):
                skipped.append({"path": image_id, "reason": size})
                continue
            h, w = size
        else:
            problem = _unplannable(image_id, file)
            if problem:
                skipped.append({"path": printable_id(image_id), "reason": problem})
                continue
            try:
                with Image.open(file) as im:
                    w, h = im.size
            except Exception as e:  # unreadable: listed, not fatal
                skipped.append({"path": image_id, "reason": f"{type(e).__name__}: {str(e)[:160]}"})
                continue
        resized, padded = target_size((h, w), settings, divisor)
        problem = resized_size_problem((h, w), padded)
        if problem:  # refused before anything is decoded
            skipped.append({"path": image_id, "reason": problem})
            continue
        planned.append(PlannedImage(image_id, str(file), (h, w), resized, padded))
    planned.sort(key=lambda p: (p.padded, p.id))
    batches: list[list[PlannedImage]] = []
    for p in planned:
        if batches and batches[-1][0].padded == p.padded and len(batches[-1]) < settings.batch_size:
            batches[-1].append(p)
        else:
            batches.append([p])
    return batches, skipped


def _unplannable(image_id: str, file: Path) -> str:
    """Why a listed file cannot be planned (never opened): a name that is not UTF-8 (a store's index and shards
    hold UTF-8 text), or not a regular file (a pipe would block the reader forever, a device never end); "" if fine."""
    try:
        image_id.encode("utf-8")
    except UnicodeEncodeError:
        return "its file name is not UTF-8 text; rename it to include it"
    try:
        mode = os.stat(file).st_mode
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    if not stat_module.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device); featx reads images from files only"
    return ""


def plan_digest(batches: list[list[PlannedImage]]) -> str:
    """SHA-256 of the plan (ids, sizes and shapes, batch by batch): a resumed run must find the same batches."""
    h = hashlib.sha256()
    for b, batch in enumerate(batches):
        for p in batch:
            h.update(f"{b}\t{p.id}\t{p.size}\t{p.padded}\n".encode())
    return h.hexdigest()
