"""A store before and after an extraction: its manifest (written, or checked against the settings), its lock,
the shards of changed images dropped, the batches already done; at the end the skip list and the merged index."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from torch import nn

from featx.extraction.distributed import barrier
from featx.extraction.listing import list_source, source_root
from featx.extraction.planning import PlannedImage, plan_batches, plan_digest
from featx.extraction.running import model_normalization
from featx.extraction.settings import DECODER_NAMES, ExtractSettings
from featx.extraction.store import SHARD_DIR, merge_store, read_manifest, remove_stale_shard_temporaries, shard_metadata
from featx.features import input_channels
from featx.io import write_json
from featx.models.specs import named_weights
from featx.version import __version__


LOCK_FILE = ".featx-extract.lock"


@contextlib.contextmanager
def store_lock(out: Path) -> Iterator[None]:
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


def drop_changed_images(out: Path, files: dict[str, Path], log: Callable[[str], None]) -> None:
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
    filling a store (``extract``, ``featx.extraction.ray``) starts here, so they make the same store.

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
    divisor = net.size_divisibility
    images, not_images, unreadable = list_source(source) if sizes is None else ([(i, Path(i)) for i in sorted(sizes)], 0, [])
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
        "plan_sha256": plan_digest(batches),
    }
    # what decides the stored numbers: a resumed run must not mix (runtimes differ in the last bits)
    key_fields = ("model_config", "store", "levels", "pool", "gem_p", "dtype", "precision", "preprocessing", "batch_size",
                  "runtime", "device", "plan_sha256")
    existing = out / "manifest.json"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(store_lock(out))
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
        drop_changed_images(out, dict(images), log)
    barrier(world)

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
