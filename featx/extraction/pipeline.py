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
featx store folder (:mod:`featx.extraction.store`).

Nothing is lost and nothing is done twice: shards are written atomically and name the batches they hold,
so a rerun after a kill (any signal) does only the missing batches, with the same inputs in the same
batches, and gives the same store. Under ``torchrun`` each process takes every ``WORLD_SIZE``-th batch of
the one plan (a stable rule), writes its own shards, and rank 0 merges the index when all are done.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from featx.cpu import cpu_info
from featx.extraction.clock import StageClock
from featx.extraction.decoding import DeviceDecoder, batch_loader, sigchld_kept
from featx.extraction.distributed import barrier, rank_and_world
from featx.extraction.planning import PlannedImage
from featx.extraction.pooling import device_values, to_host
from featx.extraction.prepare import StorePlan, finish_store, prepare_store
from featx.extraction.running import build_runner
from featx.extraction.settings import ExtractResult, ExtractSettings
from featx.extraction.writer import PendingShard, ShardWriter
from featx.images import IMAGE_EXTENSIONS
from featx.io import scratch_dir
from featx.models import model_config
from featx.models.specs import random_weights_notice


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
    rank, world = rank_and_world()
    cfg = _config_of(model)
    if rank == 0 and random_weights_notice(cfg):
        log(random_weights_notice(cfg, "every stored feature"))
    with contextlib.ExitStack() as stack:
        run, net = build_runner(cfg, settings, Path(stack.enter_context(scratch_dir())))
        plan = prepare_store(cfg, net, source, out, settings, rank, world, stack, log)  # list, plan, manifest, lock
        mine = [b for b in range(len(plan.batches)) if b % world == rank and b not in plan.done]
        loop = run_batches(run, plan, mine, out, settings, f"extract [rank {rank}/{world}]" if world > 1 else "extract",
                           progress)  # decode, run, pool, write
        barrier(world)
        total = finish_store(out, plan.header_skipped) if rank == 0 else 0  # rank 0 merges the index
        barrier(world)
    return _result(out, source, plan, loop, total, len(mine), time.perf_counter() - start, rank, world, log)


@dataclass
class LoopResult:
    """What :func:`run_batches` did: images stored and skipped, its seconds, and the seconds per stage."""

    new: int
    skipped: int
    seconds: float
    clock: StageClock
    device: torch.device


def run_batches(run: Callable[[torch.Tensor], Any], plan: StorePlan, mine: list[int], out: Path,
                settings: ExtractSettings, label: str = "extract", progress: bool = True) -> LoopResult:
    """The extraction loop over the batches ``mine`` of ``plan``: workers read and decode each batch (or the model's
    device decodes its JPEGs), ``run`` computes the levels, each image is pooled over its own region on the device,
    and the values go to shards of ``out`` (written by a thread beside the loop, every ``shard_batches`` batches)."""
    items = [p for b in mine for p in plan.batches[b]]
    device = settings.input_device()
    device_decode = settings.resolved_decode() == "cuda"
    loader = batch_loader([plan.batches[b] for b in mine], plan.channels, plan.mean, plan.std, settings.workers,
                          pin_memory=device.type == "cuda", defer_jpeg=device_decode)
    decoder = DeviceDecoder(device, plan.channels, plan.mean, plan.std) if device_decode else None
    clock = StageClock(device)
    dtype = np.float16 if settings.dtype == "fp16" else np.float32
    pending = PendingShard(plan.levels, settings.dtype)
    new = skipped = completed = 0
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=False)
    start = time.perf_counter()
    with ShardWriter(out, pending, settings.maps, clock) as writer, bar, sigchld_kept():
        task = bar.add_task("images", total=len(items), rate="")
        waited = time.perf_counter()
        for batch_id, (indices, x, records, errors, worker_s, jpegs) in zip(mine, loader):
            clock.add("wait for workers", time.perf_counter() - waited)
            clock.add("read+hash (workers)", worker_s[0])
            clock.add("decode+resize (workers)", worker_s[1])
            batch = [items[i] for i in indices]
            values = _batch_values(run, x, batch, jpegs, errors, plan, settings, device, decoder, clock, dtype)
            stored, broken = pending.add_batch(batch_id, batch, values, records, errors)
            new, skipped = new + stored, skipped + broken
            if len(pending.batches) >= settings.shard_batches:
                writer.flush()
            completed += len(indices)
            bar.update(task, completed=completed, rate=f"{completed / max(time.perf_counter() - start, 1e-9):.1f} img/s")
            waited = time.perf_counter()
        writer.flush()
        writer.wait()
    return LoopResult(new, skipped, time.perf_counter() - start, clock, device)


def _batch_values(run: Callable[[torch.Tensor], Any], x: torch.Tensor, batch: list[PlannedImage], jpegs: list,
                  errors: list[str], plan: StorePlan, settings: ExtractSettings, device: torch.device,
                  decoder: Optional[DeviceDecoder], clock: StageClock, dtype: type) -> dict[str, list[np.ndarray]]:
    """One decoded batch through upload, (device decoding,) the model and pooling: each level's values per image."""
    clock.start()
    x = x.to(device, non_blocking=True)
    clock.mark("upload")
    if decoder is not None:
        x = decoder(x, batch, jpegs, errors)
        clock.mark("decode+resize (device)")
    outs = run(x)
    clock.mark("model")
    resized = [p.resized for p in batch]
    on_device = {lv: device_values(outs[plan.names.index(lv)], resized, plan.strides[lv], settings, dtype)
                 for lv in plan.levels}
    clock.mark("pool")
    t = time.perf_counter()
    values = {lv: to_host(v) for lv, v in on_device.items()}
    clock.add("download", time.perf_counter() - t)
    clock.settle()
    return values


def _result(out: Path, source: Union[str, Path], plan: StorePlan, loop: LoopResult, total: int, batches: int,
            seconds: float, rank: int, world: int, log: Callable[[str], None]) -> ExtractResult:
    """The run's :class:`ExtractResult` (its ``summary`` as ``featx extract --json`` prints it), and its log lines."""
    merged = rank == 0
    skipped_now = loop.skipped + (len(plan.header_skipped) if merged else 0)
    result = ExtractResult(str(out), total, loop.new, skipped_now, batches, seconds,
                           loop.new / seconds if seconds else 0.0, loop.seconds, rank, world, merged)
    manifest = plan.manifest
    result.summary = {k: v for k, v in asdict(result).items() if k != "summary"} | {
        "levels": plan.levels, "store": manifest["store"], "not_images": plan.not_images,
        "precision": manifest["precision"],
        "device_name": torch.cuda.get_device_name(loop.device) if loop.device.type == "cuda" else cpu_info().model,
        "stages": {stage: {"seconds": round(sec, 3), "images_per_s": round(loop.new / sec, 1) if sec > 0 else None}
                   for stage, sec in loop.clock.seconds.items()}}
    log(f"extract: {loop.new} images now ({skipped_now} skipped) in {seconds:.1f} s"
        + (f"; the store holds {total} images" if merged else ""))
    if loop.new:
        log(f"extract: time per stage on {result.summary['device_name']} ({manifest['precision']}): "
            + ", ".join(f"{stage} {sec:.2f} s" for stage, sec in loop.clock.seconds.items())
            + " (workers' seconds are summed over workers; the writer thread runs beside the model)")
    if merged:
        skipped_list = json.loads((out / "manifest.json").read_text())["skipped"]
        if skipped_list:
            shown = "; ".join(f"{s['path']} ({s['reason'][:70]})" for s in skipped_list[:3])
            log(f"extract: {len(skipped_list)} images skipped in all: {shown}"
                + (f"; and {len(skipped_list) - 3} more" if len(skipped_list) > 3 else "")
                + f" (every one with its reason: {out / 'manifest.json'}, 'skipped')")
        if plan.not_images:
            log(f"extract: {plan.not_images} file{'s' if plan.not_images != 1 else ''} in {source} not images, ignored "
                f"(read: {', '.join(IMAGE_EXTENSIONS)})")
    return result
