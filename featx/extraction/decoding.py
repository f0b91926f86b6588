"""Reading planned images: DataLoader workers read, hash (SHA-256), decode and normalize them in batches, or leave
JPEGs to :class:`DeviceDecoder` (nvJPEG where the model runs)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import threading
import time
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from featx.extraction.planning import PlannedImage
from featx.images import to_rgb


class PlannedImages(torch.utils.data.Dataset):
    """Planned images -> ``(index, normalized padded tensor, file record, error, (read s, decode s), JPEG bytes)``;
    decoded in a worker, except JPEGs with ``defer_jpeg``: those come back as their bytes (a uint8 tensor) and a
    zero tensor, for :class:`DeviceDecoder`. The record is the bytes' SHA-256 and the file's size and mtime when
    read (what resume compares)."""

    def __init__(self, items: list[PlannedImage], channels: int, mean: Sequence[float], std: Sequence[float],
                 defer_jpeg: bool = False) -> None:
        self.items, self.channels, self.defer_jpeg = items, channels, defer_jpeg
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def decode_into(self, x: torch.Tensor, item: PlannedImage, data: bytes) -> None:
        """Decode ``data``, resize it to ``item.resized`` and normalize it into the top-left of ``x``."""
        image = decode_image(data, self.channels)
        # uint8 antialiased resize: torchvision's fast integer path (~4x the float one on a CPU)
        image = TF.resize(image, list(item.resized), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        x[:, :item.resized[0], :item.resized[1]] = (image.float().div_(255) - self.mean) / self.std

    def __getitem__(self, index: int):
        item = self.items[index]
        x = torch.zeros(self.channels, *item.padded)
        start = time.perf_counter()
        read = 0.0
        seen: dict = {}  # the file's size and mtime once read: kept with a skip, so a resume retries it when it changes
        try:
            with open(item.file, "rb") as f:
                stat = os.fstat(f.fileno())
                seen = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
                data = f.read()
            record = {"sha256": hashlib.sha256(data).hexdigest(), **seen}
            read = time.perf_counter() - start
            if self.defer_jpeg and _is_jpeg(data):  # decoded batched where the model runs (DeviceDecoder)
                return index, x, record, "", (read, 0.0), torch.frombuffer(bytearray(data), dtype=torch.uint8)
            self.decode_into(x, item, data)
            return index, x, record, "", (read, time.perf_counter() - start - read), None
        except Exception as e:  # a broken file: listed with its reason (and what was seen of it), not fatal
            return index, x, seen, f"{type(e).__name__}: {str(e)[:160]}", (read, time.perf_counter() - start - read), None


def decode_image(data: bytes, channels: int) -> torch.Tensor:
    """File bytes -> ``(channels, H, W)`` uint8. JPEGs by torchvision's libjpeg-turbo decoder; every other
    format by PIL with featx's conversion (palette, alpha on white, 16-bit)."""
    if _is_jpeg(data):
        mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    with Image.open(io.BytesIO(data)) as im:
        rgb = to_rgb(im)
        rgb.load()
    array = np.asarray(rgb.convert("L") if channels == 1 else rgb)
    image = torch.from_numpy(array.copy())
    return (image.unsqueeze(-1) if image.dim() == 2 else image).permute(2, 0, 1).contiguous()


def decode_planned(items: Sequence[PlannedImage], channels: int, mean: Sequence[float], std: Sequence[float]
                   ) -> list[tuple]:
    """The planned images read and decoded as the DataLoader workers do it, here: ``(index, normalized padded
    tensor, file record, error, (read s, decode s), None)`` each (for pipelines that bring their own workers)."""
    images = PlannedImages(list(items), channels, mean, std)
    return [images[i] for i in range(len(images))]


def decode_planned_bytes(items: Sequence[PlannedImage], datas: Sequence[bytes], channels: int, mean: Sequence[float],
                         std: Sequence[float]) -> list[tuple]:
    """As :func:`decode_planned`, for images given as their bytes (not files): ``(index, normalized padded
    tensor, record, error)`` each, the record the bytes' SHA-256 and length (no file, so no mtime)."""
    images = PlannedImages(list(items), channels, mean, std)
    decoded = []
    for i, (item, data) in enumerate(zip(items, datas)):
        x = torch.zeros(channels, *item.padded)
        try:
            images.decode_into(x, item, data)
            decoded.append((i, x, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, ""))
        except Exception as e:  # undecodable: listed with its reason, not fatal
            decoded.append((i, x, {}, f"{type(e).__name__}: {str(e)[:160]}"))
    return decoded


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _collate(batch):
    """A batch: ``(indices, (N, C, H, W) tensor, records, errors, (read s, decode s) summed over its images, JPEG
    bytes still to decode per image or None)``."""
    return ([b[0] for b in batch], torch.stack([b[1] for b in batch]), [b[2] for b in batch], [b[3] for b in batch],
            (sum(b[4][0] for b in batch), sum(b[4][1] for b in batch)), [b[5] for b in batch])


class DeviceDecoder:
    """JPEGs decoded batched where the model runs (``--decode cuda``: nvJPEG through torchvision's
    ``decode_jpeg(..., device="cuda")``), resized there (antialiased) and normalized into the batch that the
    workers filled with every other image. A JPEG the device cannot decode is decoded on the host instead;
    one no decoder reads is skipped with the reason, as in the workers."""

    def __init__(self, device: torch.device, channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.device, self.channels = device, channels
        self.mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor, items: Sequence[PlannedImage], jpegs: Sequence[Optional[torch.Tensor]],
                 errors: list[str]) -> torch.Tensor:
        """``x`` (on the device) with the rows of ``jpegs`` filled in; ``errors`` updated in place."""
        rows = [j for j, data in enumerate(jpegs) if data is not None]
        if not rows:
            return x
        try:
            images = decode_jpeg([jpegs[j] for j in rows], mode=self.mode, device=self.device)
        except Exception:  # one bad file fails the batched call: decode one by one, falling back to the host
            images = [self._one(jpegs[j], errors, j) for j in rows]
        for j, image in zip(rows, images):
            if image is None:
                continue
            h, w = items[j].resized
            image = TF.resize(image, [h, w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            x[j, :, :h, :w] = (image.float().div_(255) - self.mean) / self.std
        return x

    def _one(self, data: torch.Tensor, errors: list[str], j: int) -> Optional[torch.Tensor]:
        try:
            return decode_jpeg(data, mode=self.mode, device=self.device)
        except Exception:
            try:
                return decode_image(data.numpy().tobytes(), self.channels).to(self.device)
            except Exception as e:  # neither decoder reads it: skipped with the reason
                errors[j] = f"{type(e).__name__}: {str(e)[:160]}"
                return None


def batch_loader(batches: Sequence[Sequence[PlannedImage]], channels: int, mean: Sequence[float], std: Sequence[float],
                 workers: int, pin_memory: bool = False, defer_jpeg: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of the planned ``batches`` in order, decoded in ``workers`` processes: each item is
    ``(indices into the concatenated batches, (N, channels, H, W) normalized float tensor, file records, errors,
    (read s, decode s), JPEG bytes left to decode)``; ``pin_memory`` for a fast, non-blocking upload to a GPU;
    ``defer_jpeg`` leaves JPEGs to :class:`DeviceDecoder`."""
    items = [p for b in batches for p in b]
    return torch.utils.data.DataLoader(PlannedImages(items, channels, mean, std, defer_jpeg), batch_sampler=_BatchRanges([len(b) for b in batches]),
                                       num_workers=workers, collate_fn=_collate, persistent_workers=False,
                                       pin_memory=pin_memory,
                                       worker_init_fn=_ignore_interrupts if workers else None,
                                       prefetch_factor=4 if workers else None)


def _ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C reaches the workers too (one process group); the main process handles it and stops them, so
    they ignore it instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def sigchld_kept() -> Iterator[None]:
    """Put back the SIGCHLD handler that a DataLoader with workers installs for good in this process.

    torch's handler checks the loaders' workers whenever any child exits; left behind after the workers
    are gone, it crashed the process (SIGSEGV) at a later ``subprocess.run`` once NNCF's accuracy-aware
    quantization had run in between (tests/test_extract.py::test_extract_leaves_sigchld_as_it_was)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers are set from the main thread only (torch does not set it either)
        return
    previous = signal.getsignal(signal.SIGCHLD)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous if previous is not None else signal.SIG_DFL)


class _BatchRanges(torch.utils.data.Sampler):
    """Consecutive index ranges of the given sizes: the plan's batches, as the DataLoader's batches."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def __iter__(self):
        start = 0
        for n in self.sizes:
            yield list(range(start, start + n))
            start += n

    def __len__(self) -> int:
        return len(self.sizes)
