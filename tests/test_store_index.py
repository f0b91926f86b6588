"""A store as index tools read it: LAION's npy + parquet layout (read back as autofaiss reads it) and faiss."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featx.extraction import ExtractSettings, extract
from featx.extraction.store import FeatureStore
from featx.extraction.store_index import export_index_layout, read_index_layout
from helpers import run_cli

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        h, w = (40, 56) if i % 2 else (48, 48)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    extract("ResNet18", photos, root / "store", ExtractSettings(size=32, workers=0, dtype="fp32"),
            progress=False, log=lambda m: None)
    return root / "store"


def test_the_layout_holds_every_row_in_order_and_reads_back_as_autofaiss_reads_it(store, tmp_path):
    r = export_index_layout(store, tmp_path / "out", rows_per_file=3)
    s = FeatureStore(store)
    assert r["images"] == 7 and r["levels"] == ["C2", "C3", "C4", "C5"]
    assert sorted(p.name for p in (tmp_path / "out" / "C5" / "img_emb").iterdir()) == \
        ["img_emb_0.npy", "img_emb_1.npy", "img_emb_2.npy"]  # 3 + 3 + 1 rows
    assert np.load(tmp_path / "out" / "C5" / "img_emb" / "img_emb_2.npy").shape == (1, 512)
    for level in s.levels:
        emb, meta = read_index_layout(tmp_path / "out", level)
        assert emb.dtype == np.float32 and np.array_equal(emb, s.embeddings(level).astype(np.float32))
        assert meta.column("path").to_pylist() == list(s) and meta.column("row").to_pylist() == list(range(7))
    first = pq.read_table(str(tmp_path / "out" / "metadata" / "metadata_0.parquet")).to_pylist()[0]
    e = s.entry_at(0)
    assert first["path"] == e.path and (first["height"], first["width"]) == e.size and first["sha256"] == e.sha256


def test_store_export_command_and_its_errors(store, tmp_path):
    r = run_cli("store-export", str(store), "--out", str(tmp_path / "o"), "--levels", "C4,C5")
    assert r.returncode == 0 and "wrote 7 images, levels C4, C5" in r.stdout
    assert not (tmp_path / "o" / "C2").exists()
    bad = run_cli("store-export", str(store), "--out", str(tmp_path / "b"), "--levels", "P9")
    assert bad.returncode == 1 and "levels ['P9'] are not in" in bad.stderr


def test_faiss_finds_each_image_as_its_own_nearest_neighbour(store):
    faiss = pytest.importorskip("faiss")
    s = FeatureStore(store)
    for metric in ("cosine", "l2"):
        index = s.faiss_index("C5", metric)
        queries = np.ascontiguousarray(s.embeddings("C5"), dtype=np.float32)
        if metric == "cosine":
            faiss.normalize_L2(queries)
        _, rows = index.search(queries, 2)
        assert index.ntotal == 7 and rows[:, 0].tolist() == list(range(7))
    with pytest.raises(ValueError, match="metric must be cosine or l2"):
        s.faiss_index("C5", "dot")
