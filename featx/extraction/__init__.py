"""Features of whole image collections to disk (``featx extract``), as a pipeline of small stages:

    listing      the images of a folder, a .txt/.csv list or a glob          list_images, check_source
    planning     header sizes -> resized, padded, batches of one shape       plan_batches, PlannedImage
    decoding     DataLoader workers (or the device) read, hash, decode       batch_loader, DeviceDecoder
    running      the model in its runtime (torch, ONNX Runtime, OpenVINO)    build_runner
    pooling      each image's own region, pooled or cropped                  pool_maps, level_features
    writer       shards written by a thread beside the loop                  PendingShard, ShardWriter
    prepare      a store's manifest, lock and resume state; the final merge  prepare_store, finish_store
    pipeline     the loop that chains them                                   extract, run_batches
    verify       a sample recomputed and compared with the store             verify_store
    store        the store's reader and shard format                         FeatureStore
    store_index  a store in LAION's npy + parquet layout                     export_index_layout
    ray          the same stages as a Ray Data pipeline                      extract_with_ray

``featx.extraction.extract``, ``ExtractSettings``, ``verify_store`` and ``FeatureStore`` are the entry points; the
Ray path (``featx[ray]``) and the index layout (``featx[index]``) load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from featx._moved import forwarding

from featx.extraction.listing import check_source, list_images
from featx.extraction.pipeline import extract
from featx.extraction.settings import ExtractResult, ExtractSettings
from featx.extraction.store import FeatureStore
from featx.extraction.verify import verify_store

__all__ = ["extract", "ExtractSettings", "ExtractResult", "verify_store", "FeatureStore", "list_images", "check_source",
           "extract_with_ray", "export_index_layout", "read_index_layout"]

_LAZY = {"extract_with_ray": "featx.extraction.ray", "export_index_layout": "featx.extraction.store_index",
         "read_index_layout": "featx.extraction.store_index"}
# names this module defined before it became a package of stages
_MOVED = {**dict.fromkeys(["POOLS"], "featx.extraction.settings"), "source_root": "featx.extraction.listing",
          **dict.fromkeys(["plan_batches", "PlannedImage", "image_size"], "featx.extraction.planning"),
          **dict.fromkeys(["batch_loader", "DeviceDecoder", "decode_planned", "decode_planned_bytes"],
                          "featx.extraction.decoding"),
          **dict.fromkeys(["build_runner", "model_normalization"], "featx.extraction.running"),
          **dict.fromkeys(["valid_sizes", "pool_maps", "level_features", "device_values", "to_host"],
                          "featx.extraction.pooling"),
          "StageClock": "featx.extraction.clock", "PendingShard": "featx.extraction.writer",
          **dict.fromkeys(["prepare_store", "StorePlan", "finish_store"], "featx.extraction.prepare")}
_moved_getattr, _ = forwarding(__name__, _MOVED)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    return _moved_getattr(name)
