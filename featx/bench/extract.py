"""Benchmark ``featx extract`` against the model alone, and the store's read side, in one run.

Throughput: for each collection, ``extract`` runs end to end into a fresh store (DataLoader workers
decode, the model runs, vectors are pooled and written) and the same model, built the same way
(``optimize_for_inference``, direct convolutions), runs the same batch shapes on tensors decoded
beforehand. The ratio ``extract / raw`` says whether the pipeline is the bottleneck (target: >= 0.9).
A third side is the loop a user would write instead (:func:`plain_loop`: PIL, torchvision transforms, a
DataLoader, the model under autocast, pooled levels to numpy), at the same device, precision and workers.
Collections:
  digits   scikit-learn's 1797 digits (8x8 grayscale PNGs), upscaled to ``size`` (224)
  jpeg     generated 640x480 JPEGs: crops of matplotlib's sample photos, with noise, quality 90

Store: 100k pooled 2048-d fp16 vectors written as shards and merged, then timed: opening the store
(parsing its index), 100k lookups by path, and ``embeddings()`` (checked to be backed by the mapped
file, and viewed by ``torch.from_numpy`` without a copy).

Every report names the CPU and its ISA flags: ratios change from one CPU to another.
"""
from __future__ import annotations

import json
import mmap
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from featx.cpu import cpu_info
from featx.extraction import ExtractSettings, extract, list_images
from featx.extraction.decoding import batch_loader
from featx.extraction.planning import plan_batches
from featx.extraction.running import build_runner, model_normalization
from featx.extraction.store import FeatureStore, merge_store, write_shard
from featx.features import input_channels
from featx.images import sample_image_path
from featx.io import scratch_dir, write_json
from featx.models import create_model, model_config

__all__ = ["make_digits_collection", "make_jpeg_collection", "raw_pass", "plain_loop", "bench_collection", "bench_store",
           "run_extract_benchmark"]


def make_digits_collection(folder: Path, count: Optional[int] = None) -> Path:
    """scikit-learn's digits as 8x8 grayscale PNGs (``count`` of them; all 1797 by default)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    n = len(digits.images) if count is None else min(count, len(digits.images))
    for i in range(n):
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def make_jpeg_collection(folder: Path, count: int, size: tuple[int, int] = (480, 640), seed: int = 0) -> Path:
    """``count`` photo-like ``size`` (H, W) JPEGs: random crops of matplotlib's sample photo, resized, with
    a little noise so that no two files are alike (real content: the decoder's cost depends on it)."""
    rng = np.random.default_rng(seed)
    photo = Image.open(sample_image_path()).convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(count):
        cw, ch = rng.integers(photo.width // 2, photo.width + 1), rng.integers(photo.height // 2, photo.height + 1)
        x0, y0 = rng.integers(0, photo.width - cw + 1), rng.integers(0, photo.height - ch + 1)
        crop = np.asarray(photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR), np.int16)
        noisy = (crop + rng.integers(-6, 7, crop.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def raw_pass(model: str, source: Path, settings: ExtractSettings, workdir: Path) -> Callable[[], float]:
    """A timer of the model alone: built as ``extract`` builds it (:func:`build_runner`), on the plan's
    batches decoded once beforehand; each call runs one pass and returns its images/s (after a warm-up)."""
    run, net = build_runner(model_config(model), settings, workdir)
    mean, std = model_normalization(net)
    batches, _ = plan_batches(list_images(source), settings, net.size_divisibility)
    images = sum(len(b) for b in batches)
    tensors = [x for _, x, *_ in batch_loader(batches, input_channels(net), mean, std, workers=0)]
    run(tensors[0])  # warm-up

    def one_pass() -> float:
        t = time.perf_counter()
        for x in tensors:
            outs = run(x)
        if outs and outs[0].is_cuda:  # the maps stay on the GPU: wait for its work, or only launches are timed
            torch.cuda.synchronize(outs[0].device)
        return images / (time.perf_counter() - t)

    return one_pass


class _PlainImages(torch.utils.data.Dataset):
    """What a user's own loop reads: files in a list, PIL decode, torchvision transforms."""

    def __init__(self, files: list[Path], transform: Callable) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB"))


def plain_loop(model: str, source: Path, settings: ExtractSettings) -> Callable[[], float]:
    """A timer of the loop a user would write instead of ``featx extract``: an ImageFolder-style dataset (PIL
    decode, torchvision ``Resize`` + ``CenterCrop`` to the shorter side, ``ToTensor``, ``Normalize``), a
    DataLoader with the same workers and batch size, the featx model in eval mode under ``torch.autocast`` at the
    same precision, average-pooled levels copied to the host and kept as numpy. Each call is one pass, in
    images/s (after a warm-up batch)."""
    from torchvision import transforms

    device = torch.device(settings.device)
    precision = settings.resolved_precision()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    net = create_model(model).eval().to(device)
    mean, std = model_normalization(net)
    transform = transforms.Compose([transforms.Resize(settings.size), transforms.CenterCrop(settings.size),
                                    transforms.ToTensor(), transforms.Normalize(mean, std)])
    files = [f for _, f in list_images(source)]
    loader = torch.utils.data.DataLoader(_PlainImages(files, transform), batch_size=settings.batch_size,
                                         num_workers=settings.workers, pin_memory=device.type == "cuda")

    def forward(x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return [f.float().mean(dim=(2, 3)).cpu().numpy() for f in net(x.to(device, non_blocking=True))]

    forward(next(iter(loader)))  # warm-up

    def one_pass() -> float:
        t = time.perf_counter()
        kept = [forward(x) for x in loader]
        assert sum(len(k[0]) for k in kept) == len(files)
        return len(files) / (time.perf_counter() - t)

    return one_pass


def bench_collection(model: str, source: Path, settings: ExtractSettings, workdir: Path, rounds: int = 2,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """``extract`` vs the raw model and vs a plain PyTorch loop on one collection; the best of ``rounds`` runs
    each, alternated."""
    raw, plain, loop, end_to_end, images = 0.0, 0.0, 0.0, 0.0, 0
    raw_once = raw_pass(model, source, settings, workdir)
    plain_once = plain_loop(model, source, settings)
    stages: dict = {}
    for r in range(rounds):
        raw = max(raw, raw_once())
        plain = max(plain, plain_once())
        out = workdir / f"store_{source.name}_{r}"
        result = extract(model, source, out, settings, progress=False, log=lambda m: None)
        images = result.new
        if result.new / result.loop_seconds > loop:
            stages = result.summary["stages"]
        loop = max(loop, result.new / result.loop_seconds)
        end_to_end = max(end_to_end, result.images_per_s)
        log(f"  {source.name} round {r + 1}: raw {raw:.1f} img/s, plain loop {plain:.1f} img/s, extract loop "
            f"{result.new / result.loop_seconds:.1f} img/s, end to end {result.images_per_s:.1f} img/s")
    return {"collection": source.name, "images": images, "raw_images_per_s": round(raw, 2),
            "plain_loop_images_per_s": round(plain, 2), "extract_images_per_s": round(loop, 2),
            "end_to_end_images_per_s": round(end_to_end, 2), "ratio": round(loop / raw, 3),
            "vs_plain_loop": round(loop / plain, 3), "end_to_end_ratio": round(end_to_end / raw, 3), "stages": stages}


def bench_store(workdir: Path, count: int = 100_000, dim: int = 2048, lookups: int = 100_000,
                shard_rows: int = 10_000) -> dict[str, Any]:
    """Write and merge a store of ``count`` pooled ``dim``-d fp16 vectors, then time reading it."""
    folder = workdir / "store_100k"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_json(folder / "manifest.json", {"store": "pooled", "levels": ["C5"], "dtype": "fp16"})
    for start in range(0, count, shard_rows):
        rows = min(shard_rows, count - start)
        entries = [{"path": f"images/{i:07d}.jpg", "size": [480, 640], "sha256": f"{i:064x}", "row": i - start}
                   for i in range(start, start + rows)]
        vectors = rng.standard_normal((rows, dim), dtype=np.float32).astype(np.float16)
        write_shard(folder, f"b{start:07d}", {"pooled.C5": vectors}, entries, [start // shard_rows], [])
    t = time.perf_counter()
    merge_store(folder)
    merge_s = time.perf_counter() - t
    t = time.perf_counter()
    store = FeatureStore(folder)
    open_s = time.perf_counter() - t
    paths = [f"images/{i:07d}.jpg" for i in rng.permutation(count)[:lookups]]
    t = time.perf_counter()
    rows = [store.entry(p).row for p in paths]
    lookup_s = time.perf_counter() - t
    t = time.perf_counter()
    embeddings = store.embeddings("C5")
    view = torch.from_numpy(np.asarray(embeddings))
    load_s = time.perf_counter() - t
    mapped = isinstance(embeddings, np.memmap) and isinstance(embeddings.base, mmap.mmap)  # the file's pages
    assert len(rows) == lookups and tuple(view.shape) == (count, dim)
    return {"images": count, "dim": dim, "dtype": "fp16", "size_mb": round(embeddings.nbytes / 2**20, 1),
            "merge_s": round(merge_s, 3), "open_s": round(open_s, 3), "lookups": lookups,
            "lookups_s": round(lookup_s, 4), "embeddings_s": round(load_s, 5), "memory_mapped": bool(mapped),
            "torch_view_shares_memory": view.data_ptr() == np.asarray(embeddings).__array_interface__["data"][0]}


def run_extract_benchmark(model: str = "ResNet18FPN", jpegs: int = 256, digits: Optional[int] = 512, size: int = 224,
                          batch: int = 32, workers: int = 2, threads: Optional[int] = None, rounds: int = 2,
                          collections: Sequence[str] = ("digits", "jpeg"), store: bool = True,
                          store_images: int = 100_000, json_path: Optional[str] = None, log: Callable[[str], None] = print,
                          device: str = "cpu", precision: str = "auto") -> dict[str, Any]:
    """The whole benchmark (see the module docstring); returns (and optionally writes) the report."""
    if threads:
        torch.set_num_threads(threads)
    settings = ExtractSettings(size=size, batch_size=batch, workers=workers, shard_batches=4, device=device,
                               precision=precision)
    settings.check()
    cpu = cpu_info()
    gpu = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else None
    report: dict[str, Any] = {"cpu": cpu.to_dict(), "gpu": gpu, "torch_threads": torch.get_num_threads(), "model": model,
                              "size": size, "batch": batch, "workers": workers, "device": device,
                              "precision": settings.resolved_precision(), "collections": [], "store": None}
    log(f"CPU: {cpu.model} ({cpu.isa}), {cpu.cores} CPUs, torch threads {report['torch_threads']}"
        + (f"; GPU: {gpu}" if gpu else "") + f"; precision {report['precision']}")
    with scratch_dir() as tmp:
        work = Path(tmp)
        for name in collections:
            if name == "digits":
                source = make_digits_collection(work / "digits", digits)
            elif name == "jpeg":
                source = make_jpeg_collection(work / "jpeg", jpegs)
            else:
                raise ValueError(f"unknown collection {name!r}; choose digits or jpeg")
            log(f"{name}: {len(list_images(source))} images, {model} pooled, shorter side {size}, batch {batch}, "
                f"{workers} workers")
            report["collections"].append(bench_collection(model, source, settings, work, rounds, log))
        if store:
            report["store"] = bench_store(work, count=store_images, lookups=store_images,
                                          shard_rows=max(1, min(10_000, store_images // 4)))
    for row in report["collections"]:
        log(f"{row['collection']:>6}: extract {row['extract_images_per_s']:.1f} img/s vs raw model "
            f"{row['raw_images_per_s']:.1f} img/s -> {row['ratio']:.2f}x (end to end {row['end_to_end_ratio']:.2f}x); "
            f"vs a plain PyTorch loop {row['plain_loop_images_per_s']:.1f} img/s -> {row['vs_plain_loop']:.2f}x")
    s = report["store"]
    if s:
        log(f" store: {s['images']} x {s['dim']} fp16 ({s['size_mb']} MB): open {s['open_s']:.3f} s, {s['lookups']} "
            f"lookups {s['lookups_s']:.3f} s, embeddings() {s['embeddings_s'] * 1000:.2f} ms, memory-mapped "
            f"{s['memory_mapped']}, torch view without copy {s['torch_view_shares_memory']}")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    return report
