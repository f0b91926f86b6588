"""A feature store as index tools read it: LAION's release layout (npy matrices + parquet metadata) and faiss.

``export_index_layout(store, out)`` writes, for a merged pooled store::

    out/<LEVEL>/img_emb/img_emb_<k>.npy     float32 (rows x channels) matrices, the store's rows in order
    out/metadata/metadata_<k>.parquet       one row per image, in the same order: row, path, height, width,
                                            sha256, and the store's folder

which is how LAION-5B's embeddings were released and what autofaiss and clip-retrieval read (the k-th npy
file and the k-th parquet file hold the same images). ``FeatureStore.faiss_index(level)`` gives a faiss
index of the store itself. pyarrow and faiss are optional (``featx[index]``); each is imported when used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from featx.extraction.store import FeatureStore
from featx.io import atomic_path

__all__ = ["export_index_layout", "read_index_layout"]


def _needs(module: str, extra: str = "index") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this needs {module.split('.')[0]}: pip install 'featx[{extra}]'") from None


def export_index_layout(store: Union[str, Path, FeatureStore], out: Union[str, Path],
                        levels: Optional[Sequence[str]] = None, rows_per_file: int = 1_000_000) -> dict[str, Any]:
    """Write ``store``'s pooled vectors and ids in LAION's layout under ``out`` (see the module docstring);
    returns ``{"images", "levels", "files": [paths]}``. Every file is written atomically."""
    pq = _needs("pyarrow.parquet")
    pa = _needs("pyarrow")
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    if store.manifest["store"] != "pooled":
        raise ValueError(f"{store.folder} stores whole maps; the index layout needs pooled vectors (extract without --maps)")
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    levels = list(levels or store.levels)
    unknown = [lv for lv in levels if lv not in store.levels]
    if unknown:
        raise ValueError(f"levels {unknown} are not in {store.folder}; it has {', '.join(store.levels)}")
    out = Path(out)
    entries = store.entries
    files: list[str] = []
    for k, start in enumerate(range(0, max(len(entries), 1), rows_per_file)):
        part = entries[start:start + rows_per_file]
        for level in levels:
            folder = out / level / "img_emb"
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / f"img_emb_{k}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.asarray(store.embeddings(level)[start:start + len(part)], dtype=np.float32))
            files.append(str(folder / f"img_emb_{k}.npy"))
        table = pa.table({"row": pa.array(range(start, start + len(part)), pa.int64()),
                          "path": pa.array([e.path for e in part], pa.string()),
                          "height": pa.array([e.size[0] for e in part], pa.int32()),
                          "width": pa.array([e.size[1] for e in part], pa.int32()),
                          "sha256": pa.array([e.sha256 for e in part], pa.string()),
                          "store": pa.array([str(store.folder.resolve())] * len(part), pa.string())})
        (out / "metadata").mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "metadata" / f"metadata_{k}.parquet") as tmp:
            pq.write_table(table, str(tmp))
        files.append(str(out / "metadata" / f"metadata_{k}.parquet"))
    return {"images": len(entries), "levels": levels, "files": files}


def read_index_layout(folder: Union[str, Path], level: str) -> tuple[np.ndarray, Any]:
    """``(embeddings, metadata table)`` of one level of a layout written by :func:`export_index_layout`, read
    as autofaiss and clip-retrieval read it: the npy files and the parquet files each in name order (by k),
    concatenated."""
    pq = _needs("pyarrow.parquet")
    pa = _needs("pyarrow")
    folder = Path(folder)
    key = lambda p: int(p.stem.rsplit("_", 1)[1])  # noqa: E731  (img_emb_10 after img_emb_9)
    emb = [np.load(p) for p in sorted((folder / level / "img_emb").glob("img_emb_*.npy"), key=key)]
    meta = [pq.read_table(str(p)) for p in sorted((folder / "metadata").glob("metadata_*.parquet"), key=key)]
    if not emb or not meta:
        raise FileNotFoundError(f"{folder} holds no {level}/img_emb/*.npy or metadata/*.parquet")
    return np.concatenate(emb), pa.concat_tables(meta)
