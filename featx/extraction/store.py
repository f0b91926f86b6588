"""A feature store on disk: what ``featx extract`` writes and ``FeatureStore`` reads.

Layout of a store folder::

    manifest.json                  model config, weights, preprocessing, levels, pooling, featx version;
                                   at the end also the counts and every unreadable image with its reason
    shards/<batch>.safetensors     one file per group of batches: ``pooled.<LEVEL>`` (rows x channels) or
                                   one ``map.<LEVEL>.<row>`` tensor per image; its metadata lists the rows
                                   (``featx.entries``: path, size, sha256, file bytes and mtime per row), the plan's batches it
                                   completes and the images of those that could not be decoded
    index.jsonl                    after the merge: one line per image (path, size, sha256, shard, row), in
                                   path order
    pooled.<LEVEL>.npy             after the merge (pooled stores): every image's embedding in index order,
                                   one array per level, memory-mapped when read

Every file is written atomically, so a killed extraction leaves whole shards only; the next run reads
their metadata and does only what is missing. Shards are named by their first batch, not by process,
so any number of processes can fill one store.
"""
from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Union

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from featx.errors import StoreError
from featx.io import atomic_path, remove_stale_temporaries, write_json

__all__ = ["StoreEntry", "FeatureStore", "read_manifest", "write_shard", "shard_metadata", "shard_entries", "merge_store", "remove_stale_shard_temporaries",
           "SHARD_DIR"]

SHARD_DIR = "shards"
_SHARD_NAME = re.compile(r"[A-Za-z0-9_-]+\.safetensors")  # a shard named by an index line: a file in shards/, no path


class StoreEntry(NamedTuple):
    """One image in the store (a named tuple: cheap to make for 100k lookups)."""

    path: str
    size: tuple[int, int]  # original (height, width)
    sha256: str
    shard: str
    row: int


def write_shard(folder: Union[str, Path], name: str, tensors: dict[str, np.ndarray], entries: list[dict],
                batches: list[int], skipped: list[dict]) -> Path:
    """Write one shard atomically: ``tensors`` plus, in its metadata, the rows' entries, the plan's batches
    it completes and the images of those batches that could not be decoded (with the reason)."""
    path = Path(folder) / SHARD_DIR / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"featx.entries": json.dumps(entries), "featx.batches": json.dumps(batches),
                "featx.skipped": json.dumps(skipped)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def shard_metadata(path: Union[str, Path]) -> dict[str, list]:
    """``{"entries", "batches", "skipped"}`` of a shard (its header only; no tensor is read)."""
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    return {key: json.loads(meta.get(f"featx.{key}", "[]")) for key in ("entries", "batches", "skipped")}


def shard_entries(path: Union[str, Path]) -> list[dict]:
    """The rows a shard holds (its metadata only; no tensor is read)."""
    return shard_metadata(path)["entries"]


def remove_stale_shard_temporaries(folder: Union[str, Path]) -> int:
    """Delete half-written shards left by killed processes (never those of running ones); returns how many."""
    names = {t.name[1:].split(".safetensors.")[0] for t in (Path(folder) / SHARD_DIR).glob(".*.safetensors.*.tmp")}
    return sum(len(remove_stale_temporaries(Path(folder) / SHARD_DIR / f"{n}.safetensors")) for n in names)


def _shards(folder: Path) -> list[Path]:
    return sorted((folder / SHARD_DIR).glob("*.safetensors"))


def read_manifest(folder: Path) -> dict:
    """A store's ``manifest.json``, refused (``StoreError`` naming it) when it is not JSON or not featx's."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path} is not a featx manifest (not JSON: {str(e)[:80]}); the store is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("store") not in ("pooled", "maps") \
            or not isinstance(manifest.get("levels"), list) or not all(isinstance(lv, str) for lv in manifest["levels"]):
        raise StoreError(f"{path} is not a featx manifest (no store kind or levels); the store is damaged")
    return manifest


def _allocate(path: Path, shape: tuple[int, int], dtype: np.dtype) -> np.memmap:
    """An ``.npy`` array file of ``shape`` at ``path`` whose blocks are all reserved on disk before anything is
    written through the memory map: a full disk is an ``OSError`` here, never a SIGBUS in the middle of a copy."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        with open(path, "rb+") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except BaseException:
        del out
        path.unlink(missing_ok=True)
        raise
    return out


def merge_store(folder: Union[str, Path]) -> int:
    """Write ``pooled.<LEVEL>.npy`` (pooled stores) and then ``index.jsonl`` from the shards; returns the number
    of images. Run once every process has finished (``featx extract`` does it on rank 0). Each array is written to
    a hidden ``.part`` file whose space is reserved up front and renamed into place only when whole; the index
    comes last, so a merge that fails leaves no index that the arrays do not match."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    rows: list[tuple[dict, str]] = []
    for shard in _shards(folder):
        rows += [(e, shard.name) for e in shard_entries(shard)]
    rows.sort(key=lambda r: r[0]["path"])
    paths = [e["path"] for e, _ in rows]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{folder} holds some images twice; the shards disagree (was it written by two plans?)")
    (folder / "index.jsonl").unlink(missing_ok=True)  # the old index would not match the new arrays
    if manifest["store"] == "pooled":
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for i, (e, shard) in enumerate(rows):  # shards without rows (every image broken) hold no vectors
            by_shard.setdefault(shard, []).append((i, e["row"]))
        for level in manifest["levels"]:
            out = None
            part = folder / f".pooled.{level}.npy.part"
            try:
                for shard, places in by_shard.items():
                    with safe_open(str(folder / SHARD_DIR / shard), framework="numpy") as f:
                        block = f.get_tensor(f"pooled.{level}")
                    if out is None:
                        out = _allocate(part, (len(rows), block.shape[1]), block.dtype)
                    out[[i for i, _ in places]] = block[[r for _, r in places]]
                target = folder / f"pooled.{level}.npy"
                if out is None:
                    np.save(target, np.zeros((0, 0), np.float32))
                    continue
                out.flush()
                del out
                out = None
                part.replace(target)
            except OSError as e:
                out = None
                part.unlink(missing_ok=True)
                raise StoreError(f"cannot write {folder}/pooled.{level}.npy: {e.strerror or e} (need "
                                 f"{len(rows)} rows of {level}); nothing was left half-written") from None
    with atomic_path(folder / "index.jsonl") as tmp:
        with open(tmp, "w") as f:
            for e, shard in rows:
                f.write(json.dumps({"path": e["path"], "size": e["size"], "sha256": e["sha256"], "shard": shard,
                                    "row": e["row"]}) + "\n")
    manifest["merged"] = {"images": len(rows), "shards": len(_shards(folder))}
    write_json(folder / "manifest.json", manifest)
    return len(rows)


class FeatureStore:
    """Read a store written by ``featx extract``.

    ``len(store)``, ``path in store``, ``store[path]`` (``{level: array}``; pooled vectors or whole maps),
    ``iter(store)`` (paths in order), ``store.entries``, ``store.embeddings(level)`` (all pooled vectors
    of a level as one memory-mapped ``(N, C)`` array, no copy; ``torch.from_numpy`` views it; writes stay in
    the process, copy-on-write), and
    ``store.skipped`` (unreadable images and why), ``store.faiss_index(level)`` (with faiss installed). Many processes can read one store at once: everything
    is read-only and memory-mapped.

    >>> store = FeatureStore("features/")
    >>> x = store.embeddings("P5")          # (N, 256) float16, memory-mapped
    >>> store["photos/cat.jpg"]["P5"]        # one image's vector
    """

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder)
        if not (self.folder / "manifest.json").is_file():
            raise FileNotFoundError(f"{self.folder} is not a featx feature store (no manifest.json)")
        self.manifest = read_manifest(self.folder)
        if not (self.folder / "index.jsonl").is_file() or "merged" not in self.manifest:
            raise FileNotFoundError(f"{self.folder} is not merged yet (no index.jsonl): finish or rerun featx extract")
        # one C-level json parse of all lines (~5x faster than a loads per line); entries built on demand
        text = (self.folder / "index.jsonl").read_text(encoding="utf-8")
        enabled = gc.isenabled()
        gc.disable()  # the parse makes 100k+ dicts: the cyclic collector would scan them repeatedly for nothing
        try:
            self._records: list[dict] = json.loads("[" + ",".join(text.splitlines()) + "]")
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.folder}/index.jsonl has a line that is not JSON ({str(e)[:80]}); the store is "
                             "damaged: rerun featx extract into it to merge it again") from None
        finally:
            if enabled:
                gc.enable()
        self._row: dict[str, int] = {r["path"]: i for i, r in enumerate(self._records)
                                     if isinstance(r, dict) and isinstance(r.get("path"), str)}
        self.levels: list[str] = list(self.manifest["levels"])
        self._embeddings: dict[str, np.ndarray] = {}
        self._check_consistent()

    def _check_consistent(self) -> None:
        """The index, the arrays and the manifest agree: as many index lines as the merge recorded, each a
        well-formed entry with a unique path and a shard inside ``shards/``, and every pooled array with one row
        per line. A store that disagrees is refused: its rows would belong to other images."""
        where = f"{self.folder}/index.jsonl"
        merged = self.manifest.get("merged")
        expected = merged.get("images") if isinstance(merged, dict) else None
        n = len(self._records)
        if not isinstance(expected, int) or expected != n:
            raise StoreError(f"{where} has {n} lines but the manifest records {expected} merged images; the store is "
                             "damaged: rerun featx extract into it to merge it again")
        if len(self._row) != n:
            raise StoreError(f"{where} names some image twice (or has an entry without a path): {n} lines, "
                             f"{len(self._row)} paths; the store is damaged")
        for i, r in enumerate(self._records):
            if not (isinstance(r.get("shard"), str) and isinstance(r.get("row"), int) and r["row"] >= 0
                    and isinstance(r.get("sha256"), str) and isinstance(r.get("size"), list) and len(r["size"]) == 2):
                raise StoreError(f"{where}, line {i + 1}: not a featx index entry ({str(r)[:120]}); the store is damaged")
        outside = sorted(name for name in {r["shard"] for r in self._records} if not _SHARD_NAME.fullmatch(name))
        if outside:  # a path, not a file in shards/: never opened
            raise StoreError(f"{where} names shard {outside[0][:80]!r}, not a file in {SHARD_DIR}/; the store is damaged")
        if self.manifest["store"] == "pooled":
            for level in self.levels:
                path = self.folder / f"pooled.{level}.npy"
                try:
                    rows = np.load(path, mmap_mode="r").shape[0] if n else 0
                except (OSError, ValueError) as e:
                    raise StoreError(f"{path} cannot be read ({str(e)[:80]}); the store is damaged") from None
                if rows != n:
                    raise StoreError(f"{path} has {rows} rows for {n} index lines; the store is damaged: rerun featx "
                                     "extract into it to merge it again")

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, path: object) -> bool:
        return path in self._row

    def __iter__(self) -> Iterator[str]:
        return (r["path"] for r in self._records)

    def entry_at(self, i: int) -> StoreEntry:
        """The ``i``-th entry in index (path) order."""
        r = self._records[i]
        return StoreEntry(r["path"], tuple(r["size"]), r["sha256"], r["shard"], r["row"])

    @property
    def entries(self) -> list[StoreEntry]:
        """Every image's entry, in index (path) order."""
        return [self.entry_at(i) for i in range(len(self._records))]

    @property
    def skipped(self) -> list[dict]:
        return list(self.manifest.get("skipped", []))

    def embeddings(self, level: str) -> np.ndarray:
        """Every image's pooled vector at ``level``, ``(N, C)`` in index order, memory-mapped (no copy)."""
        if self.manifest["store"] != "pooled":
            raise ValueError(f"{self.folder} stores whole maps; embeddings() needs a pooled store")
        if level not in self.levels:
            raise KeyError(f"level {level!r} is not in this store; it has {', '.join(self.levels)}")
        if level not in self._embeddings:
            # copy-on-write mapping: writable views (torch.from_numpy without a warning), the file never changes
            self._embeddings[level] = np.load(self.folder / f"pooled.{level}.npy", mmap_mode="c")
        return self._embeddings[level]

    def __getitem__(self, path: str) -> dict[str, np.ndarray]:
        i = self._row.get(path)
        if i is None:
            raise KeyError(f"{path!r} is not in this store ({len(self)} images)")
        if self.manifest["store"] == "pooled":
            return {level: self.embeddings(level)[i] for level in self.levels}
        e = self.entry_at(i)
        with safe_open(str(self.folder / SHARD_DIR / e.shard), framework="numpy") as f:
            return {level: f.get_tensor(f"map.{level}.{e.row}") for level in self.levels}

    def faiss_index(self, level: str, metric: str = "cosine") -> Any:
        """An exact faiss index of ``level``'s pooled vectors, row ``i`` = the ``i``-th image (index order):
        ``cosine`` (inner product of L2-normalized vectors; normalize queries with ``faiss.normalize_L2``) or
        ``l2``. ``index.search(queries, k)`` gives rows; ``entry_at(row).path`` names them. Needs faiss
        (``featx[index]``)."""
        try:
            import faiss  # optional: featx[index]
        except ImportError:
            raise ImportError("FeatureStore.faiss_index needs faiss: pip install 'featx[index]'") from None
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be cosine or l2, got {metric!r}")
        vectors = np.ascontiguousarray(self.embeddings(level), dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(vectors.shape[1])
        if metric == "cosine":
            faiss.normalize_L2(vectors)
        index.add(vectors)
        return index

    def entry(self, path: str) -> Optional[StoreEntry]:
        i = self._row.get(path)
        return None if i is None else self.entry_at(i)
