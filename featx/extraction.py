"""``featx extract``: the features of a whole image collection to disk, fast, resumable, sharded.

``extract(model, source, out)`` lists the images of ``source`` (a folder, searched recursively; a .txt or
.csv list of paths; or a glob), reads each one's size from its header, and plans fixed batches: the images
are resized (``size``: shorter side, or ``resize``: a fixed HxW), padded to the model's coarsest stride,
sorted by padded shape and path, and cut into batches of one shape each (little padding, no mixing).
DataLoader workers read, hash (SHA-256), decode (torchvision for JPEG, PIL otherwise) and convert the images (featx's conversion: grayscale,
palette, RGBA on white, 16-bit) and normalize them as the model expects. The model runs in PyTorch
(featx's inference path, direct convolutions so the stored numbers never depend on a timing decision),
ONNX Runtime or OpenVINO. Each image's output is stored per level, pooled over the image's own (unpadded)
region (``avg``, ``max``, ``gem``) or as the cropped map, in fp16 or fp32, in the shards of a
``featx.store`` folder.

Nothing is lost and nothing is done twice: shards are written atomically and name the batches they hold,
so a rerun after a kill (any signal) does only the missing batches, with the same inputs in the same
batches, and gives the same store. Under ``torchrun`` each process takes every ``WORLD_SIZE``-th batch of
the one plan (a stable rule), writes its own shards, and rank 0 merges the index when all are done.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import hashlib
import io
import json
import math
import os
import stat as stat_module
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from featx.compare import compare_arrays
from featx.cpu import cpu_info
from featx.devices import checked_device
from featx.deploy.onnx_export import ExportSettings, export_onnx, input_description
from featx.deploy.openvino_export import export_openvino
from featx.deploy.runtimes import open_session
from featx.errors import StoreError
from featx.features import as_output_tuple, input_channels
from featx.images import IMAGE_EXTENSIONS, resized_size_problem, shorter_side_size, to_rgb
from featx.inference import optimize_for_inference
from featx.io import regular_file, scratch_dir, write_json
from featx.models import build_described_model, build_from_config, check_file_config, model_config
from featx.models.specs import named_weights, random_weights_notice
from featx.store import (SHARD_DIR, FeatureStore, merge_store, read_manifest, remove_stale_shard_temporaries, shard_entries,
                          shard_metadata, write_shard)
from featx.version import __version__

__all__ = ["ExtractSettings", "ExtractResult", "check_source", "list_images", "source_root", "plan_batches", "batch_loader", "build_runner", "model_normalization", "valid_sizes", "pool_maps", "level_features", "device_values", "to_host", "StageClock", "DeviceDecoder", "extract", "verify_store", "prepare_store", "StorePlan", "PlannedImage", "PendingShard", "finish_store", "decode_planned", "decode_planned_bytes", "image_size", "POOLS"]

POOLS = ("avg", "max", "gem")
RUNTIMES = ("torch", "onnxruntime", "openvino")
EXTRACT_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
DECODERS = ("auto", "cpu", "cuda")
# what the manifest records (part of the preprocessing, so a resumed run must use the same decoder)
DECODER_NAMES = {"cpu": "torchvision decode_jpeg for JPEG, PIL otherwise",
                 "cuda": "torchvision decode_jpeg on the model's device for JPEG (nvJPEG on CUDA), PIL otherwise"}
# --verify's gate per compute precision: max relative error of a recomputed (fp32) vector, and its cosine
VERIFY_GATES = {"fp32": (1e-4, 0.9999), "tf32": (1e-2, 0.9999), "fp16": (2e-2, 0.999), "bf16": (6e-2, 0.998)}


@dataclass
class ExtractSettings:
    """How to extract. ``size`` is the shorter side (ignored with ``resize=(H, W)``); ``levels`` None
    means every level; ``maps`` stores cropped maps instead of pooled vectors."""

    size: int = 224
    resize: Optional[tuple[int, int]] = None
    levels: Optional[list[str]] = None
    pool: str = "avg"
    gem_p: float = 3.0
    maps: bool = False
    dtype: str = "fp16"
    batch_size: int = 32
    workers: int = 2
    runtime: str = "torch"
    device: str = "cpu"
    shard_batches: int = 16
    precision: str = "auto"  # the model's compute: auto = fp16 on CUDA, fp32 elsewhere (see resolved_precision)
    decode: str = "auto"  # JPEG decoding: auto, cpu (workers) or cuda (nvJPEG where the model runs); resolved_decode

    def resolved_precision(self) -> str:
        """``precision`` with ``auto`` decided: fp16 for the torch runtime on CUDA (tensor cores; the stored
        vectors are fp16 by default anyway), fp32 elsewhere (bf16 on a CPU pays only where the CPU has bf16
        units, AVX512-BF16 or AMX: ask for it, and measure it with featx bench-extract --precision bf16)."""
        if self.precision != "auto":
            return self.precision
        return "fp16" if self.runtime == "torch" and torch.device(self.device).type == "cuda" else "fp32"

    def resolved_decode(self) -> str:
        """``decode`` with ``auto`` decided by a stated rule: ``cuda`` when the model runs on CUDA in PyTorch
        (the GPU decodes a batch of JPEGs faster than a few CPU workers, and the workers then only read and
        hash), ``cpu`` otherwise."""
        if self.decode != "auto":
            return self.decode
        return "cuda" if self.runtime == "torch" and torch.device(self.device).type == "cuda" else "cpu"

    def check(self) -> None:
        if self.resize is None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"size must be a positive int (the shorter side), got {self.size!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if not (isinstance(self.gem_p, (int, float)) and 0 < self.gem_p < math.inf):
            raise ValueError(f"gem_p must be a finite number > 0 (the GeM exponent), got {self.gem_p!r}")
        if self.dtype not in ("fp16", "fp32"):
            raise ValueError(f"dtype must be fp16 or fp32, got {self.dtype!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        for name in ("batch_size", "shard_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.runtime == "torch":  # the exported runtimes check their own device (featx.deploy.runtimes)
            checked_device(self.device)
        if self.precision not in ("auto",) + EXTRACT_PRECISIONS:
            raise ValueError(f"precision must be auto or one of {EXTRACT_PRECISIONS}, got {self.precision!r}")
        precision = self.resolved_precision()
        on_cuda = torch.device(self.device).type == "cuda"
        if precision != "fp32" and self.runtime != "torch":
            raise ValueError(f"--precision {precision} is for --runtime torch; the exported runtimes run fp32 here")
        if precision == "tf32" and not on_cuda:
            raise ValueError("--precision tf32 is a CUDA mode (TF32 tensor cores); on a CPU use fp32 or bf16")
        if self.decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}, got {self.decode!r}")
        if self.decode == "cuda" and not (on_cuda and self.runtime == "torch"):
            raise ValueError("--decode cuda decodes JPEGs where the model runs: it needs --device cuda and --runtime torch")
        if precision == "fp16" and not on_cuda:
            raise ValueError("--precision fp16 is for CUDA; CPUs compute fp16 slowly: use fp32, or bf16 on CPUs "
                             "with AVX512-BF16 or AMX")


@dataclass
class ExtractResult:
    out: str
    images: int
    new: int
    skipped: int
    batches: int
    seconds: float
    images_per_s: float
    loop_seconds: float = 0.0  # reading, running and storing the batches (no model build, listing or merge)
    rank: int = 0
    world_size: int = 1
    merged: bool = False
    summary: dict = field(default_factory=dict)


# -- what to extract ---------------------------------------------------------------------------------
def list_images(source: Union[str, Path]) -> list[tuple[str, Path]]:
    """``(id, file)`` pairs, sorted by id: a folder's images (recursive, ids relative to it), a .txt/.csv
    list (first column; relative paths from the list's folder; ids as written), or a glob pattern."""
    return _listing(source)[0]


def _listing(source: Union[str, Path]) -> tuple[list[tuple[str, Path]], int, list[dict]]:
    """:func:`list_images`, how many files of a source folder were ignored as not images (by extension;
    hidden files not counted), and the source's subfolders that could not be read (as skip records: their images
    are not in the store, and the manifest and the summary say so)."""
    text = str(source)
    path = Path(text)
    ignored = 0
    unreadable: list[Path] = []
    if path.is_dir():
        files, unreadable = _walk_files(path)
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored = sum(1 for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS and not p.name.startswith("."))
        pairs = [(p.relative_to(path).as_posix(), p) for p in images]
    elif path.is_file() and path.suffix.lower() in (".txt", ".csv"):
        pairs = []
        text = regular_file(path, "image list", MAX_LIST_BYTES).read_text(encoding="utf-8", errors="surrogateescape")
        lines = ([row[0] if row else "" for row in csv.reader(io.StringIO(text))] if path.suffix.lower() == ".csv"
                 else text.splitlines())  # a CSV's first column as the csv module reads it (quoted commas included)
        for line in lines:
            item = line.strip()
            if not item or item.startswith("#"):
                continue
            file = Path(item) if Path(item).is_absolute() else path.parent / item
            if path.suffix.lower() == ".csv" and not pairs and not file.exists() and "." not in Path(item).suffix:
                continue  # a header row
            pairs.append((item, file))
    else:
        check_source(source)
        pairs = [(m, Path(m)) for m in glob.glob(text, recursive=True) if Path(m).is_file()]
    pairs = sorted(dict(pairs).items())
    folders = [{"path": _printable(u.relative_to(path).as_posix() + "/"),
                "reason": "this folder cannot be read (permissions): none of its images are included"} for u in unreadable]
    if not pairs:
        raise ValueError(f"no images in {source} (extensions: {', '.join(IMAGE_EXTENSIONS)})"
                         + (f"; {len(folders)} of its folders cannot be read" if folders else ""))
    return pairs, ignored, folders


def check_source(source: Union[str, Path]) -> None:
    """Refuse a source :func:`list_images` cannot read, without listing it (commands call it before loading
    weights): not found, or neither a folder, a .txt/.csv list, nor a glob pattern."""
    text = str(source)
    path = Path(text)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in (".txt", ".csv")) or any(c in text for c in "*?["):
        return
    if path.exists():
        raise ValueError(f"{source} is neither a folder, a .txt/.csv list of paths, nor a glob pattern")
    raise FileNotFoundError(f"source not found: {source}")


MAX_LIST_BYTES = 1 << 30  # an image list of at most 1 GiB (~10 million paths)


def _walk_files(root: Path) -> tuple[list[Path], list[Path]]:
    """Every regular file under ``root`` (links followed as ``Path.is_file`` does) and the folders that could not
    be read (``Path.rglob`` skips those without a word)."""
    files: list[Path] = []
    unreadable: list[Path] = []
    for folder, _, names in os.walk(root, onerror=lambda e: unreadable.append(Path(e.filename))):
        for name in names:
            p = Path(folder) / name
            if p.is_file():
                files.append(p)
    return files, unreadable


def source_root(source: Union[str, Path]) -> Path:
    """The folder the ids of :func:`list_images` are relative to: the source folder, a list's folder, or the
    current folder for a glob (absolute ids stay absolute)."""
    path = Path(source)
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        return path.resolve().parent
    return Path.cwd().resolve()


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


def _target(size: tuple[int, int], settings: ExtractSettings, divisor: int) -> tuple[tuple[int, int], tuple[int, int]]:
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
                skipped.append({"path": _printable(image_id), "reason": problem})
                continue
            try:
                with Image.open(file) as im:
                    w, h = im.size
            except Exception as e:  # unreadable: listed, not fatal
                skipped.append({"path": image_id, "reason": f"{type(e).__name__}: {str(e)[:160]}"})
                continue
        resized, padded = _target((h, w), settings, divisor)
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


def _printable(image_id: str) -> str:
    """An id as text that can be stored (a file name that is not UTF-8 keeps its other characters)."""
    return image_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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


def _plan_digest(batches: list[list[PlannedImage]]) -> str:
    """SHA-256 of the plan (ids, sizes and shapes, batch by batch): a resumed run must find the same batches."""
    h = hashlib.sha256()
    for b, batch in enumerate(batches):
        for p in batch:
            h.update(f"{b}\t{p.id}\t{p.size}\t{p.padded}\n".encode())
    return h.hexdigest()


# -- reading images in workers --------------------------------------------------------------------------
class _Images(torch.utils.data.Dataset):
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
        image = _decode(data, self.channels)
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


def _decode(data: bytes, channels: int) -> torch.Tensor:
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
    images = _Images(list(items), channels, mean, std)
    return [images[i] for i in range(len(images))]


def decode_planned_bytes(items: Sequence[PlannedImage], datas: Sequence[bytes], channels: int, mean: Sequence[float],
                         std: Sequence[float]) -> list[tuple]:
    """As :func:`decode_planned`, for images given as their bytes (not files): ``(index, normalized padded
    tensor, record, error)`` each, the record the bytes' SHA-256 and length (no file, so no mtime)."""
    images = _Images(list(items), channels, mean, std)
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
                return _decode(data.numpy().tobytes(), self.channels).to(self.device)
            except Exception as e:  # neither decoder reads it: skipped with the reason
                errors[j] = f"{type(e).__name__}: {str(e)[:160]}"
                return None


# -- the model in its runtime -------------------------------------------------------------------------
def model_normalization(net: nn.Module) -> tuple[list[float], list[float]]:
    """``(mean, std)`` per input channel on a 0..1 scale: what featx's exports record as the model's input
    (its own, or ImageNet's for RGB backbones), mid-grey 0.5/0.5 where that is unknown (grayscale)."""
    spec = input_description(net, 1)
    channels = spec["channels"]
    return list(spec["mean"] or [0.5] * channels), list(spec["std"] or [0.5] * channels)


def build_runner(cfg: dict, settings: ExtractSettings, tmp: Path, model: Optional[nn.Module] = None
                 ) -> tuple[Callable[[torch.Tensor], list[torch.Tensor]], nn.Module]:
    """``(run(batch) -> the output maps, the PyTorch model)``; direct convolutions everywhere. The maps stay where
    the model ran (on the GPU for ``--device cuda``), so pooling happens there and only vectors leave it; an exported
    runtime's numpy outputs are wrapped without a copy. ``model``: ``cfg`` already built (torch runtime)."""
    model = model if model is not None else build_from_config(cfg)
    if settings.runtime == "torch":
        device = _run_device(settings)  # torchrun: one GPU per process
        net = optimize_for_inference(model, inplace=False).to(device)
        precision = settings.resolved_precision()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

        def run(x: torch.Tensor) -> list[torch.Tensor]:
            with torch.inference_mode(), _tf32(precision == "tf32"), \
                    torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return list(as_output_tuple(net(x.to(device, non_blocking=True))))

        return run, model
    direct = ExportSettings(exporter="torchscript")
    path = tmp / ("model.xml" if settings.runtime == "openvino" else "model.onnx")
    (export_openvino if settings.runtime == "openvino" else export_onnx)(cfg, path, direct, log=lambda m: None)
    # the same thread count as torch (--threads): processes under torchrun share the cores
    session = open_session(path, settings.device, threads=torch.get_num_threads())
    return (lambda x: [torch.from_numpy(np.asarray(o, np.float32)) for o in session.run(x.numpy())]), model


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN convolutions on for the block (``--precision tf32``), put back after."""
    if not enabled:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


class PendingShard:
    """What has been computed since the last shard was written (``featx extract`` and ``featx.ray_extract`` alike)."""

    def __init__(self, levels: list[str], dtype_name: str = "fp16") -> None:
        self.levels, self.dtype_name = levels, dtype_name
        self.arrays: dict[str, list[np.ndarray]] = {lv: [] for lv in levels}
        self.entries: list[dict] = []
        self.batches: list[int] = []
        self.skipped: list[dict] = []

    def tensors(self, maps: bool) -> dict[str, np.ndarray]:
        if maps:
            return {f"map.{lv}.{row}": a for lv in self.levels for row, a in enumerate(self.arrays[lv])}
        return {f"pooled.{lv}": np.stack(self.arrays[lv]) for lv in self.levels if self.arrays[lv]}

    def add_batch(self, batch_id: int, items: Sequence[Any], values: dict[str, list[np.ndarray]],
                  records: Sequence[dict], errors: Sequence[str]) -> tuple[int, int]:
        """One planned batch's results: each image's values per level (``items``: ``PlannedImage``), or the reason it
        could not be read; an image with non-finite values stops the run (:func:`_refuse_non_finite`). Returns
        ``(stored, skipped)``."""
        stored = skipped = 0
        for j, item in enumerate(items):
            if errors[j]:
                seen = {k: records[j][k] for k in ("bytes", "mtime_ns") if k in (records[j] or {})}
                self.skipped.append({"path": item.id, "reason": errors[j], **seen})
                skipped += 1
                continue
            _refuse_non_finite(item.id, {lv: values[lv][j] for lv in self.levels}, self.dtype_name)
            for lv in self.levels:
                self.arrays[lv].append(values[lv][j])
            self.entries.append({"path": item.id, "size": list(item.size), **records[j], "row": len(self.entries)})
            stored += 1
        self.batches.append(batch_id)
        return stored, skipped

    def clear(self) -> None:
        for arrays in self.arrays.values():
            arrays.clear()
        self.entries.clear()
        self.batches.clear()
        self.skipped.clear()


def valid_sizes(resized: Sequence[tuple[int, int]], map_size: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """Per image, the ``(h, w)`` of its level map that sees the image, not the padding to the batch shape."""
    return [(min(map_size[0], max(1, math.ceil(h / stride))), min(map_size[1], max(1, math.ceil(w / stride))))
            for h, w in resized]


def pool_maps(maps: torch.Tensor, valid: Sequence[tuple[int, int]], how: str, p: float = 3.0) -> torch.Tensor:
    """``(N, C, h, w)`` maps -> ``(N, C)`` float32 vectors, each pooled over its own valid top-left
    ``valid[i]`` region (``avg``, ``max`` or ``GeM`` with exponent ``p``), batched where the maps are."""
    n, _, h, w = maps.shape
    x = maps.float()
    rows = torch.arange(h, device=x.device)[None, :, None] < torch.tensor([v[0] for v in valid], device=x.device)[:, None, None]
    cols = torch.arange(w, device=x.device)[None, None, :] < torch.tensor([v[1] for v in valid], device=x.device)[:, None, None]
    mask = (rows & cols)[:, None]  # (N, 1, h, w)
    if how == "max":
        return x.masked_fill(~mask, float("-inf")).amax(dim=(2, 3))
    count = mask.sum(dim=(2, 3)).to(x.dtype)  # (N, 1)
    if how == "avg":
        return (x * mask).sum(dim=(2, 3)) / count
    return ((x.clamp_min(1e-6).pow(p) * mask).sum(dim=(2, 3)) / count).pow(1.0 / p)  # GeM


def level_features(maps: torch.Tensor, resized: Sequence[tuple[int, int]], stride: int, settings: ExtractSettings,
                   dtype: np.dtype) -> list[np.ndarray]:
    """Each image's stored value at one level, from the batch's ``(N, C, h, w)`` maps wherever they are: the
    pooled ``(C,)`` vector or (``settings.maps``) the cropped map, cast to the stored ``dtype`` there and then
    brought to the host (one copy of vectors per batch, not of the maps)."""
    return to_host(device_values(maps, resized, stride, settings, dtype))


def device_values(maps: torch.Tensor, resized: Sequence[tuple[int, int]], stride: int, settings: ExtractSettings,
                  dtype: np.dtype) -> Union[torch.Tensor, list[torch.Tensor]]:
    """:func:`level_features` before the host copy: the ``(N, C)`` pooled vectors, or each image's cropped map,
    in the stored dtype, where the maps are."""
    valid = valid_sizes(resized, tuple(maps.shape[-2:]), stride)
    target = torch.float16 if dtype == np.float16 else torch.float32
    if settings.maps:
        return [maps[i, :, :vh, :vw].to(target) for i, (vh, vw) in enumerate(valid)]
    return pool_maps(maps, valid, settings.pool, settings.gem_p).to(target)


def to_host(values: Union[torch.Tensor, list[torch.Tensor]]) -> list[np.ndarray]:
    """:func:`device_values` on the host: one array per image."""
    if isinstance(values, list):
        return [np.ascontiguousarray(v.cpu().numpy()) for v in values]
    return list(values.cpu().numpy())


class StageClock:
    """Seconds per stage of the extraction loop. Host stages by the wall clock; on CUDA the device stages
    (upload, model, pool) by CUDA events recorded between them, read once the batch's download has waited
    for the device anyway, so timing adds no synchronization."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}
        self._events: list[tuple[str, Any, Any]] = []
        self._last: Any = None

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def start(self) -> None:
        self._last = self._now()

    def mark(self, stage: str) -> None:
        now = self._now()
        if self.cuda:
            self._events.append((stage, self._last, now))
        else:
            self.add(stage, now - self._last)
        self._last = now

    def settle(self) -> None:
        """Fold the recorded CUDA events into the totals (call after the device has finished them)."""
        for stage, start, end in self._events:
            self.add(stage, start.elapsed_time(end) / 1000)
        self._events.clear()

    def _now(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()


LOCK_FILE = ".featx-extract.lock"


@contextlib.contextmanager
def _store_lock(out: Path) -> Iterator[None]:
    """Hold the store's lock for one extraction (rank 0 of a torchrun job holds it for all ranks). A second
    extraction into the same store is refused at once; the lock dies with its process, even SIGKILLed."""
    import fcntl

    with open(out / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RuntimeError(f"another featx extract ({holder}) is writing {out}; wait for it to finish, or use "
                               "another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def changed_images(out: Path, files: dict[str, Path]) -> dict[Path, list[str]]:
    """The shards of store ``out`` that hold an image whose file changed since it was read (its size or mtime
    differ from the ones recorded with its features, or with its skip: a file that could not be decoded is tried
    again once it changes), each with those images' ids. ``files``: id -> file."""
    stale: dict[Path, list[str]] = {}
    for shard in sorted((out / SHARD_DIR).glob("*.safetensors")):
        meta = shard_metadata(shard)
        for entry in meta["entries"] + meta["skipped"]:
            if "mtime_ns" not in entry or entry["path"] not in files:
                continue  # an entry without a record, or an image no longer listed (the plan check refuses that)
            try:
                stat = os.stat(files[entry["path"]])
                same = (stat.st_size, stat.st_mtime_ns) == (entry["bytes"], entry["mtime_ns"])
            except OSError:
                same = False
            if not same:
                stale.setdefault(shard, []).append(entry["path"])
    return stale


def _drop_changed_images(out: Path, files: dict[str, Path], log: Callable[[str], None]) -> None:
    """Resume recomputes changed images: the shards holding them are removed (and the index, until the merge
    writes it anew), so their batches are planned again like missing ones."""
    stale = changed_images(out, files)
    if not stale:
        return
    ids = sorted(i for group in stale.values() for i in group)
    log(f"extract: {len(ids)} images changed since they were extracted ({', '.join(ids[:3])}"
        f"{', ...' if len(ids) > 3 else ''}); recomputing the {len(stale)} shards that hold them")
    (out / "index.jsonl").unlink(missing_ok=True)
    for shard in stale:
        shard.unlink()


def _refuse_non_finite(image_id: str, values: dict[str, np.ndarray], dtype: str) -> None:
    """Stop the extraction at an image whose features hold NaN or infinity (never stored: a silent NaN
    poisons every search). The shards written before stay, so a rerun after the fix resumes."""
    bad = [lv for lv, v in values.items() if not np.isfinite(v).all()]
    if bad:
        hint = (" fp16 holds at most 65504: store --dtype fp32, or" if dtype == "fp16" else "")
        raise FloatingPointError(f"{image_id}: the features at {', '.join(bad)} hold NaN or infinite values, so "
                                 f"nothing of it was stored;{hint} check the weights (a diverged or broken checkpoint)")


@dataclass
class StorePlan:
    """What an extraction into a store will do: the model's levels, the plan of batches, the manifest (written or
    checked against the store's), and the batches the store's shards already hold."""

    names: list[str]
    levels: list[str]
    strides: dict[str, int]
    channels: int
    mean: list[float]
    std: list[float]
    images: list[tuple[str, Path]]
    not_images: int
    batches: list[list[PlannedImage]]
    header_skipped: list[dict]
    manifest: dict
    done: set[int]


def prepare_store(cfg: dict, net: nn.Module, source: Union[str, Path], out: Path, settings: ExtractSettings, rank: int,
                  world: int, stack: contextlib.ExitStack, log: Callable[[str], None],
                  sizes: Optional[dict[str, Union[tuple[int, int], str]]] = None) -> StorePlan:
    """Plan an extraction of ``source`` by ``net`` (built from ``cfg``) into the store ``out``: list and plan the
    images, write the manifest or refuse a store made with other settings, take the store's lock (rank 0, held
    until ``stack`` closes), drop shards of changed images, and read which batches are done. Every way of
    filling a store (``extract``, ``featx.ray_extract``) starts here, so they make the same store.

    ``sizes`` (id -> ``(h, w)`` or why unreadable) plans images that are not files (a Ray dataset of bytes):
    ``source`` is then only the manifest's description of them, and the ids are the images."""
    infos = list(net.feature_info)
    names = [f.name for f in infos]
    levels = settings.levels or names
    unknown = [lv for lv in levels if lv not in names]
    if unknown:
        raise ValueError(f"levels {unknown} are not outputs of {cfg['type']}; it has {', '.join(names)}")
    strides = {f.name: f.stride for f in infos}
    channels = input_channels(net)
    mean, std = model_normalization(net)
    divisor = max(f.stride for f in infos)
    images, not_images, unreadable = _listing(source) if sizes is None else ([(i, Path(i)) for i in sorted(sizes)], 0, [])
    batches, header_skipped = plan_batches(images, settings, divisor, sizes)
    header_skipped += unreadable
    manifest = {
        "featx_version": __version__, "model_config": cfg, "weights": str(cfg.get("weights") or "none (random init, seed 0)"),
        "random_weights": not named_weights(cfg),
        "source": str(source), "source_root": str(source_root(source)) if sizes is None else "", "store": "maps" if settings.maps else "pooled", "levels": levels,
        "strides": {lv: strides[lv] for lv in levels}, "pool": None if settings.maps else settings.pool,
        "gem_p": settings.gem_p if settings.pool == "gem" and not settings.maps else None, "dtype": settings.dtype,
        "preprocessing": {"resize": list(settings.resize) if settings.resize else None,
                          "shorter_side": None if settings.resize else settings.size, "pad_to": divisor,
                          "channels": channels, "mean": mean, "std": std, "scale": "0..1",
                          "antialias": True, "interpolation": "bilinear (uint8)",
                          "decoder": DECODER_NAMES[settings.resolved_decode()]},
        "batch_size": settings.batch_size, "runtime": settings.runtime, "device": settings.device,
        "precision": settings.resolved_precision(),
        "planned_images": len(images),
        "plan_sha256": _plan_digest(batches),
    }
    # what decides the stored numbers: a resumed run must not mix (runtimes differ in the last bits)
    key_fields = ("model_config", "store", "levels", "pool", "gem_p", "dtype", "precision", "preprocessing", "batch_size",
                  "runtime", "device", "plan_sha256")
    existing = out / "manifest.json"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(_store_lock(out))
    if existing.is_file():
        old = read_manifest(out)  # a damaged manifest is one StoreError, not a JSONDecodeError
        old.setdefault("precision", "fp32")  # stores from before precisions were recorded ran fp32
        changed = [k for k in key_fields if old.get(k) != manifest[k]]
        if changed:
            what = ("the collection changed since (images added, removed or resized), so its batches differ"
                    if changed == ["plan_sha256"] else f"it holds features made with other settings ({', '.join(changed)})")
            raise ValueError(f"cannot resume {out}: {what}; use another --out (or delete it) to start anew")
    elif rank == 0:
        write_json(existing, manifest)
    if rank == 0:
        remove_stale_shard_temporaries(out)
        _drop_changed_images(out, dict(images), log)
    _barrier(world)

    done: set[int] = set()
    for shard in sorted((out / SHARD_DIR).glob("*.safetensors")):
        done |= set(shard_metadata(shard)["batches"])
    return StorePlan(names, levels, strides, channels, mean, std, images, not_images, batches, header_skipped, manifest,
                     done)


def finish_store(out: Path, header_skipped: list[dict]) -> int:
    """The end of every extraction into ``out``: the manifest lists every skipped image (unreadable headers, and
    those the shards name), then the index is merged; returns the number of images the store holds."""
    decode_skipped = [s for shard in sorted((out / SHARD_DIR).glob("*.safetensors")) for s in shard_metadata(shard)["skipped"]]
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["skipped"] = sorted(header_skipped + decode_skipped, key=lambda s: s["path"])
    write_json(out / "manifest.json", manifest)
    return merge_store(out)


def _timed_write(clock: StageClock, *args: Any) -> None:
    t = time.perf_counter()
    write_shard(*args)
    clock.add("write (writer thread)", time.perf_counter() - t)


def _run_device(settings: ExtractSettings) -> torch.device:
    """Where the model's input goes: the torch runtime's device (its ``LOCAL_RANK`` GPU under torchrun), the host
    for the exported runtimes (they take numpy)."""
    if settings.runtime != "torch":
        return torch.device("cpu")
    device = torch.device(settings.device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return rank, world


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _config_of(model: Union[str, dict]) -> dict:
    if isinstance(model, str) and model.endswith((".onnx", ".xml")):
        raise ValueError("give a model name or config (featx exports it for --runtime onnxruntime/openvino)")
    return model_config(model)


def extract(model: Union[str, dict], source: Union[str, Path], out: Union[str, Path],
            settings: Optional[ExtractSettings] = None, progress: bool = True,
            log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True), **options: Any
            ) -> ExtractResult:
    """Extract the features of every image of ``source`` into the store ``out`` (see the module docstring).

    ``options`` are :class:`ExtractSettings` fields (``extract("ResNet50", "photos/", "f/", levels=["C5"],
    pool="gem")``); they override ``settings``."""
    settings = dataclasses.replace(settings or ExtractSettings(), **options)
    settings.check()
    start = time.perf_counter()
    out = Path(out)
    rank, world = _distributed()
    cfg = _config_of(model)
    if rank == 0 and random_weights_notice(cfg):
        log(random_weights_notice(cfg, "every stored feature"))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(scratch_dir())
        run, net = build_runner(cfg, settings, Path(tmp))
        plan = prepare_store(cfg, net, source, out, settings, rank, world, stack, log)
        names, levels, strides = plan.names, plan.levels, plan.strides
        channels, mean, std = plan.channels, plan.mean, plan.std
        images, not_images, batches, header_skipped = plan.images, plan.not_images, plan.batches, plan.header_skipped
        manifest, existing, done = plan.manifest, out / "manifest.json", plan.done
        mine = [b for b in range(len(batches)) if b % world == rank and b not in done]
        items = [p for b in mine for p in batches[b]]
        run_device = _run_device(settings)
        device_decode = settings.resolved_decode() == "cuda"
        loader = batch_loader([batches[b] for b in mine], channels, mean, std, settings.workers,
                              pin_memory=run_device.type == "cuda", defer_jpeg=device_decode)
        decoder = DeviceDecoder(run_device, channels, mean, std) if device_decode else None
        clock = StageClock(run_device)
        dtype = np.float16 if settings.dtype == "fp16" else np.float32
        pending = PendingShard(levels, settings.dtype)
        new = broken = 0

        writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="featx-shard-writer"))
        writing: list[Future] = []

        def flush() -> None:
            """Hand the pending shard to the writer thread (the model goes on meanwhile); at most one shard waits."""
            if pending.batches:
                t = time.perf_counter()
                for done_write in writing:
                    done_write.result()  # the previous shard is on disk (or its error raised) before the next
                writing.clear()
                clock.add("write", time.perf_counter() - t)
                args = (out, f"b{pending.batches[0]:07d}", pending.tensors(settings.maps), list(pending.entries),
                        list(pending.batches), list(pending.skipped))
                writing.append(writer.submit(_timed_write, clock, *args))
                pending.clear()

        bar = Progress(TextColumn(f"extract [rank {rank}/{world}]" if world > 1 else "extract"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                       TimeRemainingColumn(), disable=not progress, transient=False)
        loop_start = time.perf_counter()
        with bar, _sigchld_kept():
            task = bar.add_task("images", total=len(items), rate="")
            t0 = time.perf_counter()
            completed = 0
            waited = time.perf_counter()
            for batch_id, (indices, x, records, errors, worker_s, jpegs) in zip(mine, loader):
                clock.add("wait for workers", time.perf_counter() - waited)
                clock.add("read+hash (workers)", worker_s[0])
                clock.add("decode+resize (workers)", worker_s[1])
                clock.start()
                x = x.to(run_device, non_blocking=True)
                clock.mark("upload")
                if decoder is not None:
                    x = decoder(x, [items[i] for i in indices], jpegs, errors)
                    clock.mark("decode+resize (device)")
                outs = run(x)
                clock.mark("model")
                resized = [items[i].resized for i in indices]
                on_device = {lv: device_values(outs[names.index(lv)], resized, strides[lv], settings, dtype) for lv in levels}
                clock.mark("pool")
                t = time.perf_counter()
                values = {lv: to_host(v) for lv, v in on_device.items()}
                clock.add("download", time.perf_counter() - t)
                clock.settle()
                stored, skipped = pending.add_batch(batch_id, [items[i] for i in indices], values, records, errors)
                new, broken = new + stored, broken + skipped
                if len(pending.batches) >= settings.shard_batches:
                    flush()
                completed += len(indices)
                bar.update(task, completed=completed,
                           rate=f"{completed / max(time.perf_counter() - t0, 1e-9):.1f} img/s")
                waited = time.perf_counter()
            flush()
            t = time.perf_counter()
            for done_write in writing:
                done_write.result()
            clock.add("write", time.perf_counter() - t)
        loop_seconds = time.perf_counter() - loop_start
        _barrier(world)
        merged = False
        total = 0
        if rank == 0:
            total, final = finish_store(out, header_skipped), json.loads(existing.read_text())
            merged = True
        _barrier(world)
    seconds = time.perf_counter() - start
    skipped_now = broken + (len(header_skipped) if rank == 0 else 0)
    result = ExtractResult(str(out), total, new, skipped_now, len(mine), seconds, new / seconds if seconds else 0.0,
                           loop_seconds, rank, world, merged)
    result.summary = {k: v for k, v in asdict(result).items() if k != "summary"} | {"levels": levels, "store": manifest["store"]}
    result.summary["not_images"] = not_images
    result.summary["precision"] = manifest["precision"]
    result.summary["device_name"] = (torch.cuda.get_device_name(run_device) if run_device.type == "cuda"
                                     else cpu_info().model)
    result.summary["stages"] = {stage: {"seconds": round(sec, 3), "images_per_s": round(new / sec, 1) if sec > 0 else None}
                                for stage, sec in clock.seconds.items()}
    log(f"extract: {new} images now ({skipped_now} skipped) in {seconds:.1f} s"
        + (f"; the store holds {total} images" if merged else ""))
    if new:
        log(f"extract: time per stage on {result.summary['device_name']} ({manifest['precision']}): "
            + ", ".join(f"{stage} {sec:.2f} s" for stage, sec in clock.seconds.items())
            + " (workers' seconds are summed over workers; the writer thread runs beside the model)")
    if rank == 0:
        skipped_list = final["skipped"] if merged else []
        if skipped_list:
            shown = "; ".join(f"{s['path']} ({s['reason'][:70]})" for s in skipped_list[:3])
            log(f"extract: {len(skipped_list)} images skipped in all: {shown}"
                + (f"; and {len(skipped_list) - 3} more" if len(skipped_list) > 3 else "")
                + f" (every one with its reason: {out / 'manifest.json'}, 'skipped')")
        if not_images:
            log(f"extract: {not_images} file{'s' if not_images != 1 else ''} in {source} not images, ignored "
                f"(read: {', '.join(IMAGE_EXTENSIONS)})")
    return result


def batch_loader(batches: Sequence[Sequence[PlannedImage]], channels: int, mean: Sequence[float], std: Sequence[float],
                 workers: int, pin_memory: bool = False, defer_jpeg: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of the planned ``batches`` in order, decoded in ``workers`` processes: each item is
    ``(indices into the concatenated batches, (N, channels, H, W) normalized float tensor, file records, errors,
    (read s, decode s), JPEG bytes left to decode)``; ``pin_memory`` for a fast, non-blocking upload to a GPU;
    ``defer_jpeg`` leaves JPEGs to :class:`DeviceDecoder`."""
    items = [p for b in batches for p in b]
    return torch.utils.data.DataLoader(_Images(items, channels, mean, std, defer_jpeg), batch_sampler=_BatchRanges([len(b) for b in batches]),
                                       num_workers=workers, collate_fn=_collate, persistent_workers=False,
                                       pin_memory=pin_memory,
                                       worker_init_fn=_ignore_interrupts if workers else None,
                                       prefetch_factor=4 if workers else None)


def _ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C reaches the workers too (one process group); the main process handles it and stops them, so
    they ignore it instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigchld_kept() -> Iterator[None]:
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


RANDOM_WEIGHTS = "random"


def verify_store(folder: Union[str, Path], sample: int = 8, log: Callable[[str], None] = print,
                 weights: Optional[str] = None) -> dict:
    """Recompute ``sample`` images of a store (evenly spread) from its manifest and compare with what is
    stored: worst relative error and cosine per level. fp16 stores are expected within ~1e-3.

    A store is untrusted input: the model is rebuilt by :func:`featx.models.build_described_model` (nothing
    the manifest names is fetched; weights only if already on this machine). ``weights`` overrides the
    manifest's (any featx ``weights=``; the user's choice, so the usual rules apply). A store made with random
    weights is refused unless ``weights="random"`` says that is what is being verified."""
    store = FeatureStore(folder)  # refuses a store whose index, arrays and manifest disagree
    if not len(store):
        raise StoreError(f"{folder} holds no images, so nothing can be verified (FAIL)")
    m = store.manifest
    cfg = m["model_config"]
    check_file_config(cfg, f"{folder}/manifest.json")  # before anything is built, whatever the weights
    if weights == RANDOM_WEIGHTS:
        if named_weights(cfg):
            raise ValueError(f"{folder} was made with weights {cfg.get('weights')}, not random ones; drop --weights random")
        model = build_from_config(cfg)
    elif weights is not None:
        model = build_from_config({**cfg, "weights": weights})
    elif not named_weights(cfg):
        raise ValueError(f"{folder} holds features of a randomly initialized network (no weights were loaded), "
                         "useless for retrieval; pass --weights random to verify it anyway")
    else:
        model = build_described_model(cfg, f"{folder}/manifest.json",
                                      "pass --weights (the weights the store was made with) to verify with weights you have")
    pre = m["preprocessing"]
    settings = ExtractSettings(size=pre["shorter_side"] or 224, resize=tuple(pre["resize"]) if pre["resize"] else None,
                               levels=m["levels"], pool=m["pool"] or "avg", gem_p=m.get("gem_p") or 3.0,
                               maps=m["store"] == "maps", dtype="fp32", batch_size=1, workers=0)
    picks = [store.entry_at(int(i)) for i in np.linspace(0, len(store) - 1, min(sample, len(store)))] if len(store) else []
    root = Path(m["source_root"])
    with scratch_dir() as tmp:
        run, net = build_runner(cfg, settings, Path(tmp), model)
        names = [f.name for f in net.feature_info]
        worst = {lv: {"rel": 0.0, "cosine": 1.0} for lv in m["levels"]}
        for e in picks:
            file = root / e.path  # an absolute id stays itself
            item = PlannedImage(e.path, str(file), e.size, *_target(e.size, settings, pre["pad_to"]))
            _, x, record, error, _, _ = _Images([item], pre["channels"], pre["mean"], pre["std"])[0]
            digest = record.get("sha256", "")
            if error or digest != e.sha256:
                raise ValueError(f"{e.path}: the image changed since extraction (sha256 {digest[:12]} vs stored "
                                 f"{e.sha256[:12]})" if not error else f"{e.path}: {error}")
            outs = run(x[None])
            stored = store[e.path]
            for lv in m["levels"]:
                fresh = level_features(outs[names.index(lv)], [item.resized], m["strides"][lv], settings, np.float32)[0]
                d = compare_arrays(np.asarray(stored[lv], np.float32), fresh)
                worst[lv]["rel"] = max(worst[lv]["rel"], d.rel)
                worst[lv]["cosine"] = min(worst[lv]["cosine"], d.cosine)
    precision = m.get("precision", "fp32")
    gate_rel, gate_cos = VERIFY_GATES[precision]
    tol = max(gate_rel, 2e-3 if m["dtype"] == "fp16" else 0.0)  # the stored dtype's rounding, or the compute's
    report = {"images": len(picks), "levels": worst, "tolerance": tol, "min_cosine": gate_cos, "precision": precision,
              "passed": all(v["rel"] <= tol and v["cosine"] >= gate_cos for v in worst.values())}
    log(f"verify {folder}: {len(picks)} images recomputed; " + ", ".join(
        f"{lv} rel {v['rel']:.2e} cos {v['cosine']:.6f}" for lv, v in worst.items())
        + f" -> {'PASS' if report['passed'] else 'FAIL'} ({precision} compute: tolerance {tol:g}, cosine >= {gate_cos})")
    return report
