"""``featx extract`` as a Ray Data pipeline: CPU tasks decode, model actors (GPUs or CPUs) run and pool, the
driver writes a featx store, or Ray writes parquet.

``extract_with_ray(model, source, out)`` plans exactly as ``featx.extract`` (:func:`featx.extraction.prepare.prepare_store`:
the same listing, batches, manifest, lock and resume rule), then streams the batches the store lacks through

    ray.data.from_items(batches) -> map(decode)            CPU tasks: read, hash, decode, resize, normalize
                                 -> map_batches(_Model)    ``model_actors`` actors, each ``gpus_per_actor`` GPUs:
                                                           featx's runner at the precision, pooled where it runs
                                 -> the driver             one shard per batch, then the merge

``source`` is a folder, list or glob as for ``featx extract``, or an existing Ray dataset of encoded images
(``ray.data.read_binary_files(..., include_paths=True)``, a WebDataset's ``jpg`` column, a parquet table of
bytes): ``id_column`` names each image's id (unique; what the store's index and parquet rows call it) and
``bytes_column`` its encoded bytes. Then the headers are read in Ray tasks first (only ``(h, w)`` comes back
to the driver), the plan is made from them as from files, and each planned batch's bytes are gathered by a
groupby on the batch number before the same decoding:

    dataset -> map(header) -> driver: plan -> dataset -> filter, batch number -> groupby(batch)
            -> map_groups(decode) -> the model actors and the writer above

The driver holds the plan, as ``featx extract`` does for files, and the filter and decoding tasks receive the
plan's id -> batch map and planned items with their arguments (through Ray's object store): about 100 bytes per
image, which bounds the collection one call takes to what those tasks' memory holds; split a larger dataset and
extract it into one store per part.

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

from featx.extraction.decoding import decode_planned, decode_planned_bytes
from featx.extraction.planning import PlannedImage, image_size
from featx.extraction.pooling import level_features
from featx.extraction.prepare import finish_store, prepare_store
from featx.extraction.running import build_runner
from featx.extraction.settings import ExtractSettings
from featx.extraction.store import write_shard
from featx.extraction.writer import PendingShard
from featx.io import scratch_dir
from featx.models import build_from_config, model_config
from featx.models.specs import random_weights_notice

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
    items = _planned(json.loads(row["items"]))
    return _decoded_row(row["batch"], row["items"], decode_planned(items, channels, mean, std))


def _decoded_row(batch: int, items_json: str, decoded: list[tuple]) -> dict:
    """What the model actors take: a batch's number, planned items, ``(N, C, H, W)`` input, records and errors."""
    return {"batch": batch, "items": items_json, "x": torch.stack([d[1] for d in decoded]).numpy(),
            "records": json.dumps([d[2] for d in decoded]), "errors": json.dumps([d[3] for d in decoded])}


def _planned(rows: list[dict]) -> list[PlannedImage]:
    return [PlannedImage(d["id"], d["file"], tuple(d["size"]), tuple(d["resized"]), tuple(d["padded"])) for d in rows]


def _planned_rows(table: Any, id_column: str, bytes_column: str, batch_of: dict) -> Any:
    """A Ray task: the rows of a block of the dataset that the plan holds, as ``id`` (string), ``data`` (binary) and
    ``batch`` (int64) columns, that schema also when no row is kept."""
    import pyarrow as pa

    ids = [str(i) for i in table.column(id_column).to_pylist()]
    data = table.column(bytes_column).to_pylist()
    keep = [j for j, i in enumerate(ids) if i in batch_of]
    return pa.table({"id": pa.array([ids[j] for j in keep], pa.string()),
                     "data": pa.array([bytes(data[j]) for j in keep], pa.binary()),
                     "batch": pa.array([batch_of[ids[j]] for j in keep], pa.int64())})


def _header(row: dict, id_column: str, bytes_column: str) -> dict:
    """A Ray task: an encoded image's id and header size (or why it is unreadable: no bytes, not an image); its
    bytes stay behind."""
    data = row[bytes_column]
    size = (image_size(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview))
            else f"no image bytes in this row ({type(data).__name__})")
    return {"id": str(row[id_column]), "h": -1 if isinstance(size, str) else size[0],
            "w": -1 if isinstance(size, str) else size[1], "error": size if isinstance(size, str) else ""}


def _decode_group(group: dict, id_column: str, bytes_column: str, items_of: dict, channels: int, mean: list,
                  std: list) -> dict:
    """A Ray task: one planned batch's rows of the dataset (any order), decoded in the plan's order."""
    batch = int(group["batch"][0])
    data = {str(i): bytes(b) for i, b in zip(group[id_column], group[bytes_column])}
    items_json = items_of[batch]
    items = _planned(json.loads(items_json))
    row = _decoded_row(batch, items_json, decode_planned_bytes(items, [data[p.id] for p in items], channels, mean, std))
    # map_groups returns a batch: each field as a one-row column
    return {k: np.array([v], dtype=object) if isinstance(v, str) else np.asarray(v)[None] for k, v in row.items()}


def _dataset_sizes(dataset: Any, id_column: str, bytes_column: str) -> dict[str, Union[tuple[int, int], str]]:
    columns = dataset.columns()
    missing = [c for c in (id_column, bytes_column) if c not in columns]
    if missing:
        raise ValueError(f"the dataset has no column {' or '.join(map(repr, missing))} (its columns: {', '.join(columns)}); "
                         "pass id_column= and bytes_column=")
    sample = dataset.take(1)
    if sample and not isinstance(sample[0][bytes_column], (bytes, bytearray, type(None))):
        raise ValueError(f"the dataset's {bytes_column!r} column holds {type(sample[0][bytes_column]).__name__}, not encoded "
                         "bytes: featx decodes and resizes images itself (read_webdataset decodes unless decoder=None)")
    rows = dataset.map(_header, fn_kwargs=dict(id_column=id_column, bytes_column=bytes_column)).take_all()
    sizes: dict[str, Union[tuple[int, int], str]] = {}
    for r in rows:
        if r["id"] in sizes:
            raise ValueError(f"the dataset's {id_column!r} column repeats {r['id']!r}: ids must be unique (they key the store)")
        sizes[r["id"]] = r["error"] or (int(r["h"]), int(r["w"]))
    return sizes


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


def extract_with_ray(model: Union[str, dict], source: Any, out: Union[str, Path],
                     settings: Optional[ExtractSettings] = None, model_actors: int = 1, gpus_per_actor: float = 0.0,
                     cpus_per_actor: int = 1, output: str = "store", id_column: str = "path", bytes_column: str = "bytes",
                     log: Callable[[str], None] = print, **options: Any) -> dict[str, Any]:
    """Extract as ``featx.extract`` does, on Ray Data (see the module docstring); ``source`` is a path (folder,
    list, glob) or a Ray dataset with ``id_column`` and ``bytes_column``; ``options`` are
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
    dataset = source if isinstance(source, ray.data.Dataset) else None
    sizes = _dataset_sizes(dataset, id_column, bytes_column) if dataset is not None else None
    described = f"a Ray dataset ({len(sizes)} rows; ids: {id_column!r}, bytes: {bytes_column!r})" if sizes is not None else source
    with contextlib.ExitStack() as stack:
        net = build_from_config(cfg)
        if output == "store":
            plan = prepare_store(cfg, net, described, out, settings, 0, 1, stack, log, sizes)
        else:  # parquet: the same plan, nothing of a store written
            scratch = stack.enter_context(scratch_dir())
            plan = prepare_store(cfg, net, described, scratch / "plan", settings, 0, 1, stack, lambda m: None, sizes)
        todo = [b for b in range(len(plan.batches)) if b not in plan.done]
        log(f"ray: {len(todo)} of {len(plan.batches)} batches to extract, {model_actors} model actor(s)")
        new = broken = 0
        if todo and dataset is not None:
            batch_of = {p.id: b for b in todo for p in plan.batches[b]}
            items_of = {b: _item_row(b, plan.batches[b])["items"] for b in todo}
            # each block keeps the planned rows with their batch number, in one fixed schema even when a block
            # keeps none (an empty block without the "batch" column fails Ray's shuffle: "Invalid sort key column")
            ds = (dataset.map_batches(_planned_rows, batch_format="pyarrow",
                                      fn_kwargs=dict(id_column=id_column, bytes_column=bytes_column, batch_of=batch_of))
                  .groupby("batch")
                  .map_groups(_decode_group, fn_kwargs=dict(id_column="id", bytes_column="data", items_of=items_of,
                                                            channels=plan.channels, mean=plan.mean, std=plan.std)))
        elif todo:
            ds = ray.data.from_items([_item_row(b, plan.batches[b]) for b in todo], override_num_blocks=len(todo))
            ds = ds.map(_decode_batch, fn_kwargs=dict(channels=plan.channels, mean=plan.mean, std=plan.std))
        if todo:
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
                    items = _planned(payload["items"])
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
