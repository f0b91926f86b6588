"""``featx extract``: a whole collection into a resumable, sharded store, and reading it back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featx.extraction import ExtractSettings, extract, list_images, verify_store
from featx.extraction.planning import plan_batches
from featx.extraction.store import SHARD_DIR, FeatureStore

REPO = Path(__file__).resolve().parents[1]
FEATX = [sys.executable, "-m", "featx"]


def _collection(folder: Path, photos: int = 4) -> Path:
    """Real and odd images: scikit-learn digits (8x8 grayscale PNGs), generated photos of two sizes as
    JPEG, an RGBA PNG, a 16-bit PNG, a palette PNG, a broken JPEG, a truncated JPEG and a text file."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    (folder / "digits").mkdir(parents=True)
    for i in range(6):
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).save(folder / "digits" / f"{i}.png")
    rng = np.random.default_rng(0)
    (folder / "photos").mkdir()
    for i in range(photos):
        h, w = (120, 160) if i % 2 else (90, 60)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / "photos" / f"p{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(folder / "deep.png")
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (folder / "truncated.jpg").write_bytes((folder / "photos" / "p1.jpg").read_bytes()[:2000])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    return _collection(tmp_path_factory.mktemp("collection"))


@pytest.fixture(scope="module")
def pooled(collection, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "pooled"
    extract("ResNet18", collection, out, ExtractSettings(size=64, batch_size=3, workers=2, shard_batches=2),
            progress=False, log=lambda m: None)
    return out


def test_list_images_and_plan(collection):
    images = list_images(collection)
    ids = [i for i, _ in images]
    assert ids == sorted(ids) and len(ids) == 6 + 4 + 5 and "notes.txt" not in ids
    batches, skipped = plan_batches(images, ExtractSettings(size=64, batch_size=3), 32)
    assert [s["path"] for s in skipped] == ["broken.jpg"]  # its header cannot be read; truncated.jpg's can
    assert all(len({p.padded for p in b}) == 1 and len(b) <= 3 for b in batches)
    assert sum(len(b) for b in batches) == 14
    p0 = next(p for b in batches for p in b if p.id == "photos/p0.jpg")  # 90x60 -> shorter side 64
    assert p0.size == (90, 60) and p0.resized == (96, 64) and p0.padded == (96, 64)
    assert plan_batches(images, ExtractSettings(size=64, batch_size=3), 32)[0] == batches  # stable


def test_pooled_store_contents(pooled, collection):
    store = FeatureStore(pooled)
    assert len(store) == 13 and list(store) == sorted(store)
    assert {s["path"] for s in store.skipped} == {"broken.jpg", "truncated.jpg"}
    assert all(s["reason"] for s in store.skipped)
    emb = store.embeddings("C5")
    assert isinstance(emb, np.memmap) and emb.shape == (13, 512) and emb.dtype == np.float16
    view = torch.from_numpy(emb)  # no copy: the tensor views the mapped file
    assert view.data_ptr() == emb.__array_interface__["data"][0]
    for level, channels in zip(("C2", "C3", "C4", "C5"), (64, 128, 256, 512)):
        assert store.embeddings(level).shape == (13, channels)
    first = store.entries[0]
    assert np.array_equal(store[first.path]["C5"], emb[0])
    assert first.sha256 == __import__("hashlib").sha256((collection / first.path).read_bytes()).hexdigest()
    assert store.entry("deep.png").size == (40, 40)
    manifest = store.manifest
    assert manifest["model_config"]["type"] == "featx.ResNet18" and manifest["preprocessing"]["shorter_side"] == 64
    assert manifest["levels"] == ["C2", "C3", "C4", "C5"] and manifest["merged"]["images"] == 13
    with pytest.raises(KeyError, match="not in this store"):
        store["nope.jpg"]
    with pytest.raises(KeyError, match="level 'P5'"):
        store.embeddings("P5")


def test_verify_recomputes_and_catches_tampering(pooled, tmp_path):
    report = verify_store(pooled, sample=4, log=lambda m: None, weights="random")
    assert report["passed"] and report["images"] == 4
    assert all(v["rel"] < 2e-3 and v["cosine"] > 0.9999 for v in report["levels"].values())
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(pooled, copy)
    arr = np.load(copy / "pooled.C5.npy", mmap_mode="r+")
    arr[:] = arr[:] * np.float16(1.05)
    arr.flush()
    del arr
    bad = verify_store(copy, sample=4, log=lambda m: None, weights="random")
    assert not bad["passed"] and bad["levels"]["C5"]["rel"] > 0.04 and bad["levels"]["C4"]["rel"] < 2e-3


def test_list_csv_and_glob_sources_match_the_folder(pooled, collection, tmp_path):
    store = FeatureStore(pooled)
    rows = ["path,label"] + [f"{p},x" for p in store] + ["broken.jpg,x"]
    (collection / "list.csv").write_text("\n".join(rows) + "\n")
    (collection / "list.txt").write_text("\n".join(store) + "\n")
    try:
        for source in (collection / "list.csv", collection / "list.txt"):
            out = tmp_path / source.suffix[1:]
            extract("ResNet18", source, out, ExtractSettings(size=64, batch_size=3, workers=0), progress=False,
                    log=lambda m: None)
            other = FeatureStore(out)
            assert list(other) == list(store)
            assert np.array_equal(other.embeddings("C5"), store.embeddings("C5"))
    finally:
        (collection / "list.csv").unlink()
        (collection / "list.txt").unlink()
    cwd = os.getcwd()
    os.chdir(collection)
    try:
        ids = [i for i, _ in list_images("photos/*.jpg")]
    finally:
        os.chdir(cwd)
    assert ids == [f"photos/p{i}.jpg" for i in range(4)]


def test_maps_store_crops_each_image(collection, tmp_path):
    out = tmp_path / "maps"
    extract("ResNet18", collection / "photos", out,
            ExtractSettings(size=64, levels=["C3", "C5"], maps=True, dtype="fp32", batch_size=4, workers=0),
            progress=False, log=lambda m: None)
    store = FeatureStore(out)
    maps = store["p0.jpg"]  # 90x60 -> 96x64
    assert maps["C3"].shape == (128, 12, 8) and maps["C5"].shape == (512, 3, 2) and maps["C5"].dtype == np.float32
    assert store["p1.jpg"]["C5"].shape == (512, 2, 3)  # 120x160 -> 64x85, padded to 64x96
    with pytest.raises(ValueError, match="pooled store"):
        store.embeddings("C5")
    assert verify_store(out, sample=2, log=lambda m: None, weights="random")["passed"]


def test_resume_refuses_other_settings_or_a_changed_collection(collection, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for p in (collection / "photos").iterdir():
        (source / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "store"
    settings = ExtractSettings(size=64, batch_size=2, workers=0)
    first = extract("ResNet18", source, out, settings, progress=False, log=lambda m: None)
    again = extract("ResNet18", source, out, settings, progress=False, log=lambda m: None)
    assert first.new == 4 and again.new == 0 and again.images == 4
    with pytest.raises(ValueError, match="other settings \\(pool\\)"):
        extract("ResNet18", source, out, ExtractSettings(size=64, batch_size=2, workers=0, pool="max"),
                progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="other settings \\(runtime\\)"):  # runtimes differ in the last bits
        extract("ResNet18", source, out, settings, progress=False, log=lambda m: None, runtime="onnxruntime")
    (source / "extra.png").write_bytes((collection / "rgba.png").read_bytes())
    with pytest.raises(ValueError, match="collection changed"):
        extract("ResNet18", source, out, settings, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="levels \\['P9'\\]"):
        extract("ResNet18", source, tmp_path / "x", ExtractSettings(levels=["P9"]), progress=False, log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="source not found"):
        extract("ResNet18", tmp_path / "missing", tmp_path / "y", progress=False, log=lambda m: None)


def test_onnxruntime_runtime_matches_torch(pooled, collection, tmp_path):
    out = tmp_path / "ort"
    extract("ResNet18", collection, out, ExtractSettings(size=64, batch_size=3, workers=0, runtime="onnxruntime"),
            progress=False, log=lambda m: None)
    a, b = FeatureStore(out), FeatureStore(pooled)
    assert list(a) == list(b)
    for level in a.levels:
        x, y = a.embeddings(level).astype(np.float32), b.embeddings(level).astype(np.float32)
        assert np.abs(x - y).max() <= 2e-3 * np.abs(y).max()


def test_cli_errors_and_verify_exit_code(pooled, tmp_path):
    bad = subprocess.run(FEATX + ["extract", "ResNet18", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "needs MODEL SOURCE --out STORE" in bad.stderr
    refused = subprocess.run(FEATX + ["extract", "--verify", str(pooled)], capture_output=True, text=True, cwd=REPO)
    assert refused.returncode == 1 and "randomly initialized network" in refused.stderr
    assert "pass --weights random to verify it anyway" in refused.stderr and "Traceback" not in refused.stderr
    ok = subprocess.run(FEATX + ["extract", "--verify", str(pooled), "--weights", "random"], capture_output=True, text=True,
                        cwd=REPO)
    assert ok.returncode == 0 and "PASS" in ok.stdout


def test_cli_levels_with_commas_and_json_summary(collection, tmp_path):
    out, summary = tmp_path / "cli", tmp_path / "summary.json"
    r = subprocess.run(FEATX + ["extract", "ResNet18", str(collection / "photos"), "--out", str(out), "--levels", "C3,C5",
                                "--size", "32", "--workers", "0", "--no-progress", "--json", str(summary)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert FeatureStore(out).levels == ["C3", "C5"] and FeatureStore(out).embeddings("C5").shape == (4, 512)
    s = json.loads(summary.read_text())
    assert s["images"] == 4 and s["new"] == 4 and s["skipped"] == 0 and s["levels"] == ["C3", "C5"]


def _shard_count(out: Path) -> int:
    return len(list((out / SHARD_DIR).glob("*.safetensors"))) if (out / SHARD_DIR).is_dir() else 0


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_store(tmp_path):
    """Kill -9 mid-run; the rerun does only the missing batches and the store equals an uninterrupted one."""
    source = _collection(tmp_path / "src", photos=40)
    args = ["extract", "ResNet18", str(source), "--size", "224", "--batch", "2", "--shard-batches", "1",
            "--workers", "0", "--threads", "1", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(FEATX + args + ["--out", str(killed)], stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 120
    while _shard_count(killed) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _shard_count(killed)
    assert partial >= 3 and not (killed / "index.jsonl").exists(), "the run ended before it could be killed"
    rerun = subprocess.run(FEATX + args + ["--out", str(killed)], capture_output=True, text=True, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr
    done_now = int(rerun.stderr.split("extract: ")[1].split(" images now")[0])
    whole = tmp_path / "whole"
    subprocess.run(FEATX + args + ["--out", str(whole)], check=True, capture_output=True, cwd=REPO)
    a, b = FeatureStore(killed), FeatureStore(whole)
    assert len(a) == len(b) == 49 and done_now < 49
    assert list(a) == list(b) and [e.sha256 for e in a.entries] == [e.sha256 for e in b.entries]
    assert a.skipped == b.skipped
    for level in a.levels:
        assert np.array_equal(a.embeddings(level), b.embeddings(level))
    assert not list((killed / SHARD_DIR).glob(".*.tmp"))


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    source = _collection(tmp_path / "src", photos=6)
    args = ["extract", "ResNet18", str(source), "--size", "64", "--batch", "2", "--workers", "0", "--threads", "1",
            "--no-progress"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                "-m", "featx"]
    two = subprocess.run(torchrun + args + ["--out", str(tmp_path / "two"), "--json", str(tmp_path / "two.json")],
                         capture_output=True, text=True, cwd=REPO)
    assert two.returncode == 0, two.stderr[-2000:]
    subprocess.run(FEATX + args + ["--out", str(tmp_path / "one")], check=True, capture_output=True, cwd=REPO)
    a, b = FeatureStore(tmp_path / "two"), FeatureStore(tmp_path / "one")
    summary = json.loads((tmp_path / "two.json").read_text())
    assert summary["world_size"] == 2 and summary["merged"] and summary["images"] == 15
    assert len(list((tmp_path / "two" / SHARD_DIR).glob("*.safetensors"))) == 2  # one per process
    assert list(a) == list(b) and a.skipped == b.skipped
    for level in a.levels:
        assert np.array_equal(a.embeddings(level), b.embeddings(level))


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_decoder_matches_pil(mode):
    """JPEGs go through torchvision's decoder (fast), others through PIL: the pixels must be PIL's."""
    import io

    from featx.extraction.decoding import decode_image
    from featx.images import sample_image_path

    buf = io.BytesIO()
    Image.open(sample_image_path()).convert(mode).save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    rgb = decode_image(data, 3)
    ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 600, 512) and torch.equal(rgb, ref)
    gray = decode_image(data, 1)
    ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("L")).copy())[None]
    # libjpeg takes the luma plane; PIL converts RGB to L: within a few levels of 255
    assert gray.shape == (1, 600, 512) and (gray.int() - ref.int()).abs().float().mean() < 0.1


def test_extract_benchmark_reports_ratios_and_a_mapped_store(tmp_path):
    """The benchmark's machinery on a tiny run (its numbers are meaningful only at full size)."""
    from featx.bench.extract import run_extract_benchmark

    lines: list[str] = []
    report = run_extract_benchmark("ResNet18FPN", jpegs=4, digits=6, size=32, batch=4, workers=0, rounds=1,
                                   store_images=1000, json_path=str(tmp_path / "r.json"), log=lines.append)
    assert [c["collection"] for c in report["collections"]] == ["digits", "jpeg"]
    assert [c["images"] for c in report["collections"]] == [6, 4]
    for c in report["collections"]:
        assert c["raw_images_per_s"] > 0 and c["extract_images_per_s"] > 0 and c["ratio"] > 0
        assert c["plain_loop_images_per_s"] > 0
        assert c["vs_plain_loop"] == pytest.approx(c["extract_images_per_s"] / c["plain_loop_images_per_s"], rel=1e-2)
        assert c["stages"]["model"]["seconds"] > 0
    assert report["precision"] == "fp32" and report["device"] == "cpu"
    assert any("vs a plain PyTorch loop" in line for line in lines)
    s = report["store"]
    assert s["images"] == 1000 and s["lookups"] == 1000 and s["memory_mapped"] and s["torch_view_shares_memory"]
    assert json.loads((tmp_path / "r.json").read_text())["store"]["dim"] == 2048
    assert lines[0].startswith("CPU: ") and any("-> " in line and "x (end to end" in line for line in lines)


_SIGCHLD_SCRIPT = """
import random, signal, subprocess, sys
from pathlib import Path
from featx.extraction import ExtractSettings, extract
from featx.images import sample_image_path

tmp = Path(sys.argv[1])
before = signal.getsignal(signal.SIGCHLD)
extract("ResNet18", sample_image_path().parent, tmp / "store", ExtractSettings(size=32, workers=2), progress=False,
        log=lambda m: None)
print("kept", signal.getsignal(signal.SIGCHLD) == before, flush=True)
if sys.argv[2] == "nncf":  # what crashed a later subprocess.run while torch's handler stayed behind
    from featx.deploy.onnx_export import ExportSettings
    from featx.deploy.openvino_export import export_openvino
    from featx.deploy.openvino_int8 import quantize_openvino
    from featx.detection.shapes import render_image

    rng = random.Random(0)
    (tmp / "calib").mkdir()
    for i in range(6):
        render_image(rng, 128)[0].save(tmp / "calib" / f"{i}.png")
    export_openvino("ResNet18FPN", tmp / "r18.xml", ExportSettings(exporter="torchscript"), log=lambda m: None)
    quantize_openvino(tmp / "r18.xml", tmp / "aa.xml", tmp / "calib", (96, 96), 6, max_drop=0.0005, log=lambda m: None)
    print("child", subprocess.run([sys.executable, "-c", "print(7)"], capture_output=True, text=True).stdout.strip())
"""


def test_extract_leaves_sigchld_as_it_was(tmp_path):
    """A DataLoader with workers installs torch's SIGCHLD handler for good; extract puts the old one back."""
    r = subprocess.run([sys.executable, "-c", _SIGCHLD_SCRIPT, str(tmp_path), "plain"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0 and "kept True" in r.stdout, r.stderr[-2000:]


@pytest.mark.slow
def test_extract_then_accuracy_aware_nncf_then_a_subprocess_does_not_crash(tmp_path):
    """The crash the handler caused: SIGSEGV (exit -11) at the subprocess after NNCF's accuracy control."""
    pytest.importorskip("nncf")
    r = subprocess.run([sys.executable, "-c", _SIGCHLD_SCRIPT, str(tmp_path), "nncf"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0 and "kept True" in r.stdout and "child 7" in r.stdout, (r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize("how", ["avg", "max", "gem"])
def test_batched_pooling_equals_pooling_each_images_own_region(how):
    """Pooling where the model runs, batched with a per-image valid region, gives the numbers of cropping each
    image's region and pooling it alone (float64 reference)."""
    from featx.extraction.pooling import pool_maps, valid_sizes

    torch.manual_seed(0)
    maps = torch.randn(4, 8, 7, 10).relu() + 0.01 * torch.rand(4, 8, 7, 10)
    resized = [(28, 40), (25, 37), (9, 3), (28, 1)]  # stride 4: 7x10, 7x10 (ceil), 3x1, 7x1
    valid = valid_sizes(resized, (7, 10), 4)
    assert valid == [(7, 10), (7, 10), (3, 1), (7, 1)]
    out = pool_maps(maps, valid, how, p=3.0)
    assert out.shape == (4, 8) and out.dtype == torch.float32
    for i, (vh, vw) in enumerate(valid):
        region = maps[i, :, :vh, :vw].double().flatten(1)
        ref = {"avg": region.mean(1), "max": region.amax(1),
               "gem": region.clamp_min(1e-6).pow(3.0).mean(1).pow(1 / 3.0)}[how]
        assert torch.allclose(out[i].double(), ref, rtol=1e-6, atol=1e-7), (how, i)
    # padding never leaks in: a huge value outside an image's region changes nothing
    spiked = maps.clone()
    spiked[2, :, 5:, 5:] = 1e6
    assert torch.equal(pool_maps(spiked, valid, how)[2], out[2])


def test_the_stored_vectors_leave_the_model_pooled_in_the_stored_dtype():
    from featx.extraction import ExtractSettings
    from featx.extraction.pooling import level_features

    maps = torch.rand(2, 4, 6, 6)
    fp16 = level_features(maps, [(24, 24), (12, 20)], 4, ExtractSettings(pool="avg"), np.float16)
    assert [v.dtype for v in fp16] == [np.float16, np.float16] and fp16[0].shape == (4,)
    assert np.allclose(fp16[1], maps[1, :, :3, :5].mean((1, 2)).numpy(), rtol=1e-3)
    cropped = level_features(maps, [(24, 24), (12, 20)], 4, ExtractSettings(maps=True), np.float32)
    assert [c.shape for c in cropped] == [(4, 6, 6), (4, 3, 5)] and np.array_equal(cropped[1], maps[1, :, :3, :5].numpy())


def test_a_cuda_device_that_is_not_there_is_one_clear_line(tmp_path, monkeypatch):
    from helpers import run_cli

    from featx.devices import checked_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 30), (200, 20, 20)).save(tmp_path / "imgs" / "a.png")
    for args in (("extract", "ResNet18", str(tmp_path / "imgs"), "--out", str(tmp_path / "s"), "--device", "cuda"),
                 ("predict", str(tmp_path / "no.pth"), str(tmp_path / "imgs"), "--device", "cuda")):
        r = run_cli(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 1 and "--device cuda: no CUDA device is usable here" in lines[0], r.stderr
        assert "use --device cpu" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"has 1 CUDA device\(s\), numbered 0..0"):
        checked_device("cuda:3")
    assert checked_device("cuda:0").index == 0 and checked_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="--device must be cpu, cuda or cuda:N"):
        checked_device("gpu")


# -- precision and where the time goes ---------------------------------------------------------------------------
def test_precision_is_recorded_checked_and_part_of_resume(collection, tmp_path):
    quiet = dict(progress=False, log=lambda m: None)
    out = tmp_path / "bf16"
    result = extract("ResNet18", collection / "photos", out, ExtractSettings(size=64, workers=0, precision="bf16"), **quiet)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "bf16" and result.summary["precision"] == "bf16"
    with pytest.raises(ValueError, match="other settings \\(precision\\)"):
        extract("ResNet18", collection / "photos", out, ExtractSettings(size=64, workers=0), **quiet)
    fp32 = extract("ResNet18", collection / "photos", tmp_path / "fp32", ExtractSettings(size=64, workers=0), **quiet)
    assert fp32.summary["precision"] == "fp32"  # auto on a CPU
    a, b = FeatureStore(out), FeatureStore(tmp_path / "fp32")
    for level in a.levels:
        x, y = a.embeddings(level).astype(np.float32), b.embeddings(level).astype(np.float32)
        rel = np.abs(x - y).max() / np.abs(y).max()
        assert 1e-4 < rel < 6e-2  # bf16 compute differs from fp32, within --verify's bf16 gate
    report = verify_store(out, sample=2, log=lambda m: None, weights="random")
    assert report["passed"] and report["precision"] == "bf16" and report["tolerance"] == 6e-2
    # a store made before precisions were recorded ran fp32 and resumes as such
    old = json.loads((tmp_path / "fp32" / "manifest.json").read_text())
    del old["precision"]
    (tmp_path / "fp32" / "manifest.json").write_text(json.dumps(old))
    assert extract("ResNet18", collection / "photos", tmp_path / "fp32", ExtractSettings(size=64, workers=0), **quiet).new == 0
    for bad, words in [(dict(precision="fp16"), "fp16 is for CUDA"), (dict(precision="tf32"), "tf32 is a CUDA mode"),
                       (dict(precision="bf16", runtime="onnxruntime"), "is for --runtime torch"),
                       (dict(precision="int4"), "precision must be auto or one of")]:
        with pytest.raises(ValueError, match=words):
            extract("ResNet18", collection / "photos", tmp_path / "bad", ExtractSettings(size=64, **bad), **quiet)
    assert not (tmp_path / "bad").exists()


def test_the_summary_says_where_the_time_went(collection, tmp_path):
    lines: list[str] = []
    result = extract("ResNet18", collection, tmp_path / "s", ExtractSettings(size=64, workers=2, batch_size=3,
                                                                            shard_batches=1), progress=False,
                     log=lines.append)
    stages = result.summary["stages"]
    assert {"wait for workers", "read+hash (workers)", "decode+resize (workers)", "upload", "model", "pool", "download",
            "write", "write (writer thread)"} <= set(stages)
    assert stages["model"]["seconds"] > 0 and all(v["seconds"] >= 0 for v in stages.values())
    assert stages["model"]["images_per_s"] == pytest.approx(result.new / stages["model"]["seconds"], rel=1e-2)
    assert any(m.startswith("extract: time per stage on ") and "(fp32)" in m for m in lines)
    assert result.summary["device_name"]


def test_stage_clock_adds_host_stages():
    import time as _time

    from featx.extraction.clock import StageClock

    clock = StageClock(torch.device("cpu"))
    clock.start()
    _time.sleep(0.02)
    clock.mark("a")
    clock.mark("b")
    clock.add("a", 1.0)
    clock.settle()
    assert 1.02 <= clock.seconds["a"] < 1.2 and 0 <= clock.seconds["b"] < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extract_at_fp16_is_within_its_gate_of_the_cpu(collection, tmp_path):
    quiet = dict(progress=False, log=lambda m: None)
    gpu = extract("ResNet18", collection, tmp_path / "gpu", ExtractSettings(size=64, device="cuda"), **quiet)
    assert gpu.summary["precision"] == "fp16" and gpu.summary["stages"]["model"]["seconds"] > 0
    assert verify_store(tmp_path / "gpu", sample=4, log=lambda m: None, weights="random")["passed"]


def test_device_decode_equals_the_workers_decode_and_falls_back(collection, tmp_path, monkeypatch):
    """--decode cuda's path (JPEGs batched through decode_jpeg where the model runs, resized there), run on the CPU:
    the same stored numbers as the workers' decode, the same skipped files (a broken JPEG falls back to the host
    decoders, which refuse it with their reason), and the decoder is part of what a resume must match."""
    import featx.extraction.settings as extraction

    quiet = dict(progress=False, log=lambda m: None)
    settings = ExtractSettings(size=64, workers=2, batch_size=3)
    extract("ResNet18", collection, tmp_path / "host", settings, **quiet)
    monkeypatch.setattr(extraction.ExtractSettings, "resolved_decode", lambda self: "cuda")
    result = extract("ResNet18", collection, tmp_path / "device", settings, **quiet)
    a, b = FeatureStore(tmp_path / "host"), FeatureStore(tmp_path / "device")
    assert list(a) == list(b) and result.images == len(a)
    for level in a.levels:
        assert np.array_equal(a.embeddings(level), b.embeddings(level))
    assert [s["path"] for s in a.skipped] == [s["path"] for s in b.skipped] == ["broken.jpg", "truncated.jpg"]
    assert "decode+resize (device)" in result.summary["stages"]
    assert "on the model's device" in b.manifest["preprocessing"]["decoder"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="other settings \\(preprocessing\\)"):
        extract("ResNet18", collection, tmp_path / "device", settings, **quiet)


def test_decode_choices_are_checked():
    assert ExtractSettings().resolved_decode() == "cpu"  # auto on a CPU
    with pytest.raises(ValueError, match="--decode cuda decodes JPEGs where the model runs"):
        ExtractSettings(decode="cuda").check()
    with pytest.raises(ValueError, match="decode must be one of"):
        ExtractSettings(decode="gpu").check()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decode_is_within_the_gate_of_the_cpu_decode(collection, tmp_path):
    quiet = dict(progress=False, log=lambda m: None)
    base = dict(size=64, device="cuda", precision="fp32")
    extract("ResNet18", collection, tmp_path / "cpu", ExtractSettings(decode="cpu", **base), **quiet)
    extract("ResNet18", collection, tmp_path / "gpu", ExtractSettings(decode="cuda", **base), **quiet)
    a, b = FeatureStore(tmp_path / "cpu"), FeatureStore(tmp_path / "gpu")
    assert list(a) == list(b)
    for level in a.levels:
        x, y = a.embeddings(level).astype(np.float32), b.embeddings(level).astype(np.float32)
        assert np.abs(x - y).max() <= 2e-2 * np.abs(y).max()
