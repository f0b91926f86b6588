"""``featx extract`` as a Ray Data pipeline: CPU tasks decode, model actors (GPUs or CPUs) run and pool, the
driver writes a featx store, or Ray writes parquet.

``extract_with_ray(model, source, out)`` plans exactly as ``featx.extract`` (:func:`featx.extraction.prepare_store`:
the same listing, batches, manifest, lock and resume rule), then streams the batches the store lacks through

    ray.data.from_items(batches) -> map(decode)            CPU tasks: read, hash, decode, resize, normalize
                                 -> map_batches(_Model)    ``model_actors`` actors, each ``gpus_per_actor`` GPUs:
                                                           featx's runner at the precision, pooled where it runs
                                 -> the driver             one shard per batch, then the merge

so the result is a featx store (``FeatureStore`` reads it; a rerun, by Ray or by ``featx extract``, does only the
missing batches). With ``output="parquet"`` Ray writes parquet files instead, one row per image (path, size,
sha256 and a float32 vector column per level); nothing else of a store is written. Ray is optional
(``featx[ray]``); on a cluster, ``ray.init(address="auto")`` before the call (or run the script with
``ray job submit``) and the same code spreads over the cluster's CPUs and GPUs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from featx.extraction import (ExtractSettings, PendingShard, PlannedImage, build_runner, decode_planned, finish_store,
                              level_features, prepare_store)
from featx.io import scratch_dir
from featx.models import build_from_config, model_config
from featx.models.specs import random_weights_notice
from featx.store import write_shard

__all__ = ["extract_with_ray"]


def _needs_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("featx's Ray pipeline needs Ray Data: pip install 'featx[ray]'") from None
    return ray


def _item_row(batch: int, items: list[PlannedImage]) -> dict:
    return {"batch": batch, "items": json.dumps([dataclasses.asdict(p) for p in items])}


def _decode_batch(row: dict, channels: int, mean: list, std: list) -> dict:
    """A Ray task: one planned batch read and decoded as featx's workers do it."""
    items = [PlannedImage(d["id"], d["file"], tuple(d["size"]), tuple(d["resized"]), tuple(d["padded"]))
             for d in json.loads(row["items"])]
    decoded = decode_planned(items, channels, mean, std)
    return {"batch": row["batch"], "items": row["items"], "x": torch.stack([d[1] for d in decoded]).numpy(),
            "records": json.dumps([d[2] for d in decoded]), "errors": json.dumps([d[3] for d in decoded])}


class _Model:
    """A Ray actor: featx's runner (the same build as ``featx extract``), pooling where the model runs."""

    def __init__(self, cfg: dict, settings: dict, levels: list, strides: dict, names: list, threads: int) -> None:
        torch.set_num_threads(max(1, threads))  # the actor's CPUs (Ray sets OMP_NUM_THREADS to them too)
        self.settings = ExtractSettings(**settings)
        self.scratch = contextlib.ExitStack()
        self.run, _ = build_runner(cfg, self.settings, self.scratch.enter_context(scratch_dir()))
        self.levels, self.strides, self.names = levels, strides, names
        self.dtype = np.float16 if self.settings.dtype == "fp16" else np.float32

    def __call__(self, batch: dict) -> dict:
        payloads = []
        for j in range(len(batch["batch"])):
            items = json.loads(batch["items"][j])
            outs = self.run(torch.from_numpy(np.ascontiguousarray(batch["x"][j])))
            resized = [tuple(d["resized"]) for d in items]
            values = {lv: level_features(outs[self.names.index(lv)], resized, self.strides[lv], self.settings, self.dtype)
                      for lv in self.levels}
            payloads.append(pickle.dumps({"values": values, "items": items, "records": json.loads(batch["records"][j]),
                                          "errors": json.loads(batch["errors"][j])}))
        return {"batch": batch["batch"], "payload": np.array(payloads, dtype=object)}


def _rows_of(payload: dict, levels: list) -> list[dict]:
    """Parquet rows (one per image) of a model actor's output."""
    rows = []
    for j, d in enumerate(payload["items"]):
        if payload["errors"][j]:
            continue
        row = {"path": d["id"], "height": d["size"][0], "width": d["size"][1], "sha256": payload["records"][j]["sha256"]}
        row.update({f"emb_{lv}": np.asarray(payload["values"][lv][j], np.float32).ravel() for lv in levels})
        rows.append(row)
    return rows


def extract_with_ray(model: Union[str, dict], source: Union[str, Path], out: Union[str, Path],
                     settings: Optional[ExtractSettings] = None, model_actors: int = 1, gpus_per_actor: float = 0.0,
                     cpus_per_actor: int = 1,
                     output: str = "store", log: Callable[[str], None] = print, **options: Any) -> dict[str, Any]:
    """Extract as ``featx.extract`` does, on Ray Data (see the module docstring); ``options`` are
    :class:`ExtractSettings` fields. ``output``: ``"store"`` (a featx store in ``out``) or ``"parquet"`` (Ray's
    parquet files in ``out``). ``model_actors`` actors run the model, each with ``cpus_per_actor`` CPUs (its torch
    threads) and ``gpus_per_actor`` GPUs; decoding runs in Ray tasks on the other CPUs. Returns ``{"images", "new", "skipped", "seconds", "images_per_s", "output"}``.
    Starts a local Ray instance when none is running."""
    ray = _needs_ray()
    if output not in ("store", "parquet"):
        raise ValueError(f"output must be store or parquet, got {output!r}")
    settings = dataclasses.replace(settings or ExtractSettings(), **options)
    settings.check()
    if settings.runtime != "torch" or settings.maps and output == "parquet":
        raise ValueError("the Ray pipeline runs the torch runtime, and parquet output takes pooled vectors")
    start = time.perf_counter()
    out = Path(out)
    cfg = model_config(model)
    if random_weights_notice(cfg):
        log(random_weights_notice(cfg, "every stored feature"))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    cpus = ray.cluster_resources().get("CPU", 0)
    if model_actors * cpus_per_actor >= cpus:  # decoding tasks would wait for a CPU forever
        raise ValueError(f"{model_actors} model actor(s) x {cpus_per_actor} CPU(s) take all {cpus:g} CPUs of the Ray "
                         "cluster; leave some for the decoding tasks (fewer actors or cpus_per_actor)")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # featx's own lines say what runs; Ray's logs are in its session folder
    with contextlib.ExitStack() as stack:
        net = build_from_config(cfg)
        if output == "store":
            plan = prepare_store(cfg, net, source, out, settings, 0, 1, stack, log)
        else:  # parquet: the same plan, nothing of a store written
            scratch = stack.enter_context(scratch_dir())
            plan = prepare_store(cfg, net, source, scratch / "plan", settings, 0, 1, stack, lambda m: None)
        todo = [b for b in range(len(plan.batches)) if b not in plan.done]
        log(f"ray: {len(todo)} of {len(plan.batches)} batches to extract, {model_actors} model actor(s)")
        new = broken = 0
        if todo:
            ds = ray.data.from_items([_item_row(b, plan.batches[b]) for b in todo], override_num_blocks=len(todo))
            ds = ds.map(_decode_batch, fn_kwargs=dict(channels=plan.channels, mean=plan.mean, std=plan.std))
            ds = ds.map_batches(_Model, batch_size=1, concurrency=model_actors, num_gpus=gpus_per_actor,
                                num_cpus=cpus_per_actor,
                                fn_constructor_kwargs=dict(cfg=cfg, settings=dataclasses.asdict(settings),
                                                           levels=plan.levels, strides=plan.strides, names=plan.names,
                                                           threads=cpus_per_actor))
            if output == "parquet":
                rows = ds.flat_map(lambda r: _rows_of(pickle.loads(r["payload"]), plan.levels)).materialize()
                new = rows.count()
                broken = sum(len(plan.batches[b]) for b in todo) - new
                rows.write_parquet(str(out))
            else:
                for row in ds.iter_rows():
                    payload = pickle.loads(row["payload"])
                    items = [PlannedImage(d["id"], d["file"], tuple(d["size"]), tuple(d["resized"]), tuple(d["padded"]))
                             for d in payload["items"]]
                    pending = PendingShard(plan.levels, settings.dtype)
                    stored, skipped = pending.add_batch(int(row["batch"]), items, payload["values"], payload["records"],
                                                        payload["errors"])
                    write_shard(out, f"b{int(row['batch']):07d}", pending.tensors(settings.maps), pending.entries,
                                pending.batches, pending.skipped)
                    new, broken = new + stored, broken + skipped
        total = finish_store(out, plan.header_skipped) if output == "store" else new
    seconds = time.perf_counter() - start
    result = {"images": total, "new": new, "skipped": broken + len(plan.header_skipped), "seconds": round(seconds, 2),
              "images_per_s": round(new / seconds, 2) if seconds else 0.0, "output": str(out)}
    log(f"ray: {new} images now in {seconds:.1f} s" + (f"; the store holds {total} images" if output == "store" else ""))
    return result
