"""featx extract on a local Ray instance: the same store as featx extract, resumable by either, and parquet."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featx.extraction import ExtractSettings, extract
from featx.extraction.store import FeatureStore

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray") / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        h, w = (40, 56) if i % 2 else (48, 48)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def test_ray_makes_the_store_featx_extract_makes_and_either_resumes_it(local_ray, photos, tmp_path):
    from featx.extraction.ray import extract_with_ray

    settings = ExtractSettings(size=32, batch_size=3, workers=0)
    quiet = dict(log=lambda m: None)
    r = extract_with_ray("ResNet18", photos, tmp_path / "ray", settings, **quiet)
    extract("ResNet18", photos, tmp_path / "ref", settings, progress=False, **quiet)
    a, b = FeatureStore(tmp_path / "ray"), FeatureStore(tmp_path / "ref")
    assert r["new"] == r["images"] == 7 and r["skipped"] == 1
    assert list(a) == list(b) and a.manifest["plan_sha256"] == b.manifest["plan_sha256"]
    for level in a.levels:
        np.testing.assert_allclose(a.embeddings(level).astype(np.float32), b.embeddings(level).astype(np.float32),
                                   rtol=0, atol=1e-6 * float(np.abs(b.embeddings(level)).max()))
    assert [s["path"] for s in a.skipped] == [s["path"] for s in b.skipped] == ["broken.jpg"]
    assert extract_with_ray("ResNet18", photos, tmp_path / "ray", settings, **quiet)["new"] == 0
    assert extract("ResNet18", photos, tmp_path / "ray", settings, progress=False, **quiet).new == 0


def test_ray_writes_parquet_with_a_vector_column_per_level(local_ray, photos, tmp_path):
    from featx.extraction.ray import extract_with_ray

    settings = ExtractSettings(size=32, batch_size=3, workers=0, levels=["C5"], dtype="fp32")
    r = extract_with_ray("ResNet18", photos, tmp_path / "pq", settings, output="parquet", log=lambda m: None)
    extract("ResNet18", photos, tmp_path / "ref", settings, progress=False, log=lambda m: None)
    rows = sorted(pq.read_table(str(tmp_path / "pq")).to_pylist(), key=lambda row: row["path"])
    ref = FeatureStore(tmp_path / "ref")
    assert r["new"] == 7 and r["skipped"] == 1 and [row["path"] for row in rows] == list(ref)
    np.testing.assert_allclose(np.array([row["emb_C5"] for row in rows]), ref.embeddings("C5"), atol=1e-5)
    assert not (tmp_path / "pq" / "manifest.json").exists()


def test_actors_that_would_leave_no_cpu_for_decoding_are_refused(local_ray, photos, tmp_path):
    from featx.extraction.ray import extract_with_ray

    with pytest.raises(ValueError, match="take all 2 CPUs of the Ray cluster; leave some for the decoding tasks"):
        extract_with_ray("ResNet18", photos, tmp_path / "s", model_actors=1, cpus_per_actor=2, log=lambda m: None)


def test_ray_refuses_non_finite_features_as_featx_extract_does(local_ray, photos, tmp_path):
    import torch

    import featx
    from featx.extraction.ray import extract_with_ray

    state = featx.create_model("ResNet18").state_dict()
    state["conv1.weight"] *= 1e6  # finite weights whose features overflow fp16
    torch.save(state, tmp_path / "big.pth")
    with pytest.raises(FloatingPointError, match="NaN or infinite.*fp16 holds at most 65504"):
        extract_with_ray({"type": "featx.ResNet18", "weights": str(tmp_path / "big.pth")}, photos, tmp_path / "s",
                         ExtractSettings(size=32, batch_size=3, workers=0), log=lambda m: None)


def test_a_ray_dataset_of_image_bytes_gives_featx_extracts_vectors(local_ray, photos, tmp_path):
    """Images given as a Ray dataset of bytes (read_binary_files: columns path, bytes) plan, batch and decode as
    files do: the same vectors as featx extract of the folder, a resumable store, and parquet."""
    from featx.extraction.ray import extract_with_ray

    settings = ExtractSettings(size=32, batch_size=3, workers=0)
    quiet = dict(log=lambda m: None)
    dataset = ray.data.read_binary_files(str(photos), include_paths=True)
    r = extract_with_ray("ResNet18", dataset, tmp_path / "bytes", settings, **quiet)
    extract("ResNet18", photos, tmp_path / "ref", settings, progress=False, **quiet)
    a, b = FeatureStore(tmp_path / "bytes"), FeatureStore(tmp_path / "ref")
    assert r["new"] == r["images"] == 7 and r["skipped"] == 1
    names = [p.rsplit("/", 1)[-1] for p in a]
    assert names == list(b) and all(p.startswith("/") for p in a)  # the dataset's ids, in featx's order
    for level in a.levels:
        np.testing.assert_allclose(a.embeddings(level).astype(np.float32), b.embeddings(level).astype(np.float32),
                                   rtol=0, atol=1e-6 * float(np.abs(b.embeddings(level)).max()))
    assert [s["path"].rsplit("/", 1)[-1] for s in a.skipped] == ["broken.jpg"]
    assert a.manifest["source"].startswith("a Ray dataset (8 rows")
    assert [e.sha256 for e in (a.entry_at(i) for i in range(len(a)))] == [e.sha256 for e in (b.entry_at(i) for i in range(len(b)))]
    assert extract_with_ray("ResNet18", dataset, tmp_path / "bytes", settings, **quiet)["new"] == 0  # resumed: all done
    pq_dir = tmp_path / "pq"
    r = extract_with_ray("ResNet18", dataset, pq_dir, settings, output="parquet", **quiet)
    rows = sorted(pq.read_table(str(pq_dir)).to_pylist(), key=lambda row: row["path"])
    assert r["new"] == 7 and [row["path"] for row in rows] == list(a)
    np.testing.assert_allclose(np.array([row["emb_C5"] for row in rows]), a.embeddings("C5").astype(np.float32), atol=1e-3)


def test_a_dataset_without_the_columns_or_with_repeated_ids_is_refused(local_ray, tmp_path):
    from featx.extraction.ray import extract_with_ray

    import io

    one = Image.new("RGB", (40, 40))
    buf = io.BytesIO()
    one.save(buf, format="PNG")
    rows = [{"key": "a", "jpg": buf.getvalue()}, {"key": "a", "jpg": buf.getvalue()}]
    with pytest.raises(ValueError, match="no column 'path' or 'bytes' .*its columns: key, jpg"):
        extract_with_ray("ResNet18", ray.data.from_items(rows), tmp_path / "s", log=lambda m: None)
    with pytest.raises(ValueError, match="repeats 'a': ids must be unique"):
        extract_with_ray("ResNet18", ray.data.from_items(rows), tmp_path / "s", id_column="key", bytes_column="jpg",
                         log=lambda m: None)


def test_webdataset_shards_as_the_docs_read_them(local_ray, tmp_path):
    """read_webdataset decodes images unless decoder=None: decoded arrays are refused, bytes extracted."""
    import io
    import tarfile

    from featx.extraction.ray import extract_with_ray

    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for i in range(2):
            buf = io.BytesIO()
            Image.new("RGB", (48, 40), (60 * i, 90, 30)).save(buf, format="JPEG")
            info = tarfile.TarInfo(f"img{i}.jpg")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    shard = str(tmp_path / "shard-000.tar")
    kw = dict(id_column="__key__", bytes_column="jpg", size=32, log=lambda m: None)
    with pytest.raises(ValueError, match="holds ndarray, not encoded bytes.*decoder=None"):
        extract_with_ray("ResNet18", ray.data.read_webdataset(shard), tmp_path / "a", **kw)
    r = extract_with_ray("ResNet18", ray.data.read_webdataset(shard, decoder=None), tmp_path / "b", **kw)
    assert r["new"] == 2 and list(FeatureStore(tmp_path / "b")) == ["img0", "img1"]


def test_rows_without_bytes_or_with_garbage_are_skipped_as_unreadable_files_are(local_ray, tmp_path):
    """A row whose bytes are None, and a dataset where the only other row is not an image (so Ray's shuffle sees
    blocks with no planned row): skipped with their reasons, the good image stored."""
    import io

    from featx.extraction.ray import extract_with_ray

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buf, format="PNG")
    settings = ExtractSettings(size=32, workers=0)
    for name, bad in (("none", None), ("garbage", b"not an image")):
        rows = [{"path": "bad", "bytes": bad}, {"path": "good.png", "bytes": buf.getvalue()}]
        r = extract_with_ray("ResNet18", ray.data.from_items(rows), tmp_path / name, settings, log=lambda m: None)
        store = FeatureStore(tmp_path / name)
        assert r["new"] == r["images"] == 1 and r["skipped"] == 1 and list(store) == ["good.png"]
        assert [s["path"] for s in store.skipped] == ["bad"]
        assert ("no image bytes" in store.skipped[0]["reason"]) == (bad is None)
