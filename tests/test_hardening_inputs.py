"""Untrusted stores fetch nothing, tiny files cannot exhaust memory, no silent NaN, no stale features, and
the smaller bad inputs get one featx error each."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import featx
from featx.checkpoints import load_checkpoint_file
from featx.deploy.metadata import model_from_metadata, read_metadata
from featx.errors import CheckpointMismatchError, ParityError, UnsafeCheckpointError, WeightsError
from featx.extraction import ExtractSettings, extract, verify_store
from featx.extraction.prepare import store_lock
from featx.images import MAX_RESIZED_PIXELS
from featx.extraction.store import SHARD_DIR, FeatureStore
from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
FEATX = [sys.executable, "-m", "featx"]
QUIET = dict(progress=False, log=lambda m: None)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _photos(folder: Path, n: int = 3, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "r18.pth"
    torch.manual_seed(3)
    torch.save(featx.create_model("ResNet18").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, weights_file) -> Path:
    root = tmp_path_factory.mktemp("s")
    out = root / "store"
    extract({"type": "featx.ResNet18", "weights": str(weights_file)}, _photos(root / "photos"), out,
            ExtractSettings(size=32, workers=0), **QUIET)
    return out


def _with_weights(store: Path, dst: Path, weights) -> Path:
    """A copy of a store whose manifest names other weights (what an attacker controls)."""
    shutil.copytree(store, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["model_config"]["weights"] = weights
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


# -- 2. a store names weights: nothing is fetched ----------------------------------------------------------
def test_verify_fetches_nothing_a_store_names(store, tmp_path, torch_home):
    assert verify_store(store, sample=2, log=lambda m: None)["passed"]  # its own local weights: used
    url = _with_weights(store, tmp_path / "url", "http://127.0.0.1:9/resnet18-f37072fd.pth")
    with pytest.raises(WeightsError, match="does not fetch what a file names"):
        verify_store(url, log=lambda m: None)
    r = run_cli("extract", "--verify", str(url))
    assert r.returncode == 1 and "does not fetch" in r.stderr and "--weights" in r.stderr
    named = _with_weights(store, tmp_path / "named", "IMAGENET1K_V1")  # a torchvision name, not cached
    with pytest.raises(WeightsError, match="not on this machine"):
        verify_store(named, log=lambda m: None)
    device = _with_weights(store, tmp_path / "dev", "/dev/zero")  # never opened: it would never end
    with pytest.raises(WeightsError, match="not a regular file"):
        verify_store(device, log=lambda m: None)
    nested = _with_weights(store, tmp_path / "nested", None)
    manifest = json.loads((nested / "manifest.json").read_text())
    manifest["model_config"] = {"type": "featx.ResNet18FPN", "backbone": {"weights": "https://x.invalid/a.pth"}}
    (nested / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="does not fetch"):
        verify_store(nested, log=lambda m: None)
    assert not torch_home.exists() or not any(torch_home.rglob("*.pth"))
    # the user may say which weights to use
    own = json.loads((store / "manifest.json").read_text())["model_config"]["weights"]
    assert verify_store(url, sample=2, log=lambda m: None, weights=own)["passed"]


def test_parity_metadata_with_keys_the_model_does_not_take_is_one_error(tmp_path):
    from featx.deploy.onnx_export import ExportSettings, export_onnx

    path = tmp_path / "m.onnx"
    export_onnx("ResNet18", path, ExportSettings(exporter="torchscript"), log=lambda m: None)
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "featx.model_config":
            prop.value = json.dumps({"type": "featx.ResNet18", "no_such_option": 1})
    onnx.save(proto, str(path))
    with pytest.raises(ParityError, match="does not fit featx.ResNet18.*no_such_option"):
        model_from_metadata(read_metadata(path))


# -- 3. a tiny file cannot name a huge resize ---------------------------------------------------------------
@pytest.fixture(scope="module")
def thin_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("thin") / "thin.png"
    Image.new("RGB", (6000, 1), (9, 9, 9)).save(path)
    assert path.stat().st_size < 200
    return path


def test_extract_skips_an_image_whose_resize_would_be_huge(thin_png, tmp_path):
    folder = _photos(tmp_path / "photos", n=2)
    shutil.copy(thin_png, folder / "thin.png")
    result = extract("ResNet18", folder, tmp_path / "out", ExtractSettings(size=224, workers=0), **QUIET)
    assert result.images == 2 and result.skipped == 1
    skipped = FeatureStore(tmp_path / "out").skipped
    assert [s["path"] for s in skipped] == ["thin.png"]
    assert "1344000x224" in skipped[0]["reason"].replace(" ", "") or "224x1344000" in skipped[0]["reason"]
    assert f"{MAX_RESIZED_PIXELS / 1e6:.1f} million pixels" in skipped[0]["reason"]


def test_viz_and_predict_refuse_a_huge_resize(thin_png, tmp_path):
    r = run_cli("viz", str(thin_png), "--model", "ResNet18", "-o", str(tmp_path / "v.png"), "--size", "64")
    assert r.returncode == 1 and "would be resized to 64x384000" in r.stderr and not (tmp_path / "v.png").exists()
    from featx.images import pipeline_size_problem
    from featx.train.data import build_pipeline, default_pipeline

    val = build_pipeline(default_pipeline("val"))
    assert "256x1536000" in pipeline_size_problem(val, (1, 6000))
    assert pipeline_size_problem(val, (480, 640)) == ""
    assert pipeline_size_problem(build_pipeline(default_pipeline("train")), (1, 6000)) == ""  # crop first


# -- 4. no silent NaN -----------------------------------------------------------------------------------
def test_negative_normalization_variance_is_refused_by_name(tmp_path):
    state = featx.create_model("ResNet18").state_dict()
    state["layer2.0.bn1.running_var"][3] = -0.5
    torch.save(state, tmp_path / "neg.pth")
    with pytest.raises(CheckpointMismatchError, match=r"negative normalization variances.*layer2\.0\.bn1\.running_var"):
        featx.create_model("ResNet18", weights=str(tmp_path / "neg.pth"))
    r = run_cli("extract", "ResNet18", str(_photos(tmp_path / "p", 1)), "--out", str(tmp_path / "s"),
                "--weights", str(tmp_path / "neg.pth"), "--workers", "0", "--no-progress")
    assert r.returncode == 1 and "running_var" in r.stderr


def test_meta_tensors_in_a_checkpoint_are_one_error(tmp_path):
    state = {k: torch.empty_like(v, device="meta") for k, v in featx.create_model("ResNet18").state_dict().items()}
    torch.save(state, tmp_path / "meta.pth")
    with pytest.raises(CheckpointMismatchError, match="without data"):
        featx.create_model("ResNet18", weights=str(tmp_path / "meta.pth"))


def test_an_input_on_another_device_than_the_weights_is_one_error():
    m = featx.create_model("ResNet18").eval()
    with pytest.raises(ValueError, match=r"has its weights on cpu and got an input on meta; .*no data"):
        m(torch.empty(1, 3, 32, 32, device="meta"))
    with torch.device("meta"):
        on_meta = featx.create_model("ResNet18").eval()
        outs = on_meta(torch.empty(1, 3, 64, 64))  # shapes only: meta weights take meta inputs
    assert outs[-1].shape == (1, 512, 2, 2)


def test_extract_never_stores_non_finite_features(tmp_path):
    state = featx.create_model("ResNet18").state_dict()
    state["conv1.weight"] *= 1e6  # finite weights whose features overflow fp16 (max 65504)
    torch.save(state, tmp_path / "big.pth")
    cfg = {"type": "featx.ResNet18", "weights": str(tmp_path / "big.pth")}
    with pytest.raises(FloatingPointError, match="NaN or infinite.*fp16 holds at most 65504"):
        extract(cfg, _photos(tmp_path / "p", 2), tmp_path / "s", ExtractSettings(size=32, workers=0), **QUIET)
    assert not list((tmp_path / "s" / SHARD_DIR).glob("*.safetensors"))
    result = extract(cfg, tmp_path / "p", tmp_path / "s32", ExtractSettings(size=32, workers=0, dtype="fp32"), **QUIET)
    assert result.images == 2 and np.isfinite(FeatureStore(tmp_path / "s32").embeddings("C5")).all()


# -- 5. resume notices changed images -------------------------------------------------------------------
def test_resume_recomputes_images_changed_in_place(tmp_path):
    folder = _photos(tmp_path / "p", 4)
    settings = ExtractSettings(size=32, workers=0, batch_size=1, shard_batches=1)
    extract("ResNet18", folder, tmp_path / "s", settings, **QUIET)
    before = FeatureStore(tmp_path / "s").embeddings("C5").copy()
    # p2 changes in place: same size, other pixels (and a later mtime)
    Image.fromarray(np.full((40, 56, 3), 200, np.uint8)).save(folder / "p2.png")
    stat = (folder / "p2.png").stat()
    os.utime(folder / "p2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    lines: list[str] = []
    result = extract("ResNet18", folder, tmp_path / "s", settings, progress=False, log=lines.append)
    assert result.new == 1 and any("1 images changed since they were extracted (p2.png)" in m for m in lines)
    after = FeatureStore(tmp_path / "s")
    fresh = extract("ResNet18", folder, tmp_path / "fresh", settings, **QUIET)
    assert fresh.images == 4
    np.testing.assert_array_equal(after.embeddings("C5"), FeatureStore(tmp_path / "fresh").embeddings("C5"))
    row = list(after).index("p2.png")
    assert not np.array_equal(after.embeddings("C5")[row], before[row])
    others = [i for i in range(4) if i != row]
    np.testing.assert_array_equal(after.embeddings("C5")[others], before[others])
    # nothing changed: nothing recomputed
    again = extract("ResNet18", folder, tmp_path / "s", settings, **QUIET)
    assert again.new == 0


# -- 6. the smaller items ----------------------------------------------------------------------------------
def test_gem_p_zero_is_a_usage_error_and_creates_nothing(tmp_path):
    r = subprocess.run(FEATX + ["extract", "ResNet18", str(_photos(tmp_path / "p", 1)), "--out", str(tmp_path / "o"),
                                "--pool", "gem", "--gem-p", "0"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "expected a finite number > 0" in r.stderr and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="gem_p must be a finite number > 0"):
        extract("ResNet18", tmp_path / "p", tmp_path / "o", ExtractSettings(pool="gem", gem_p=0.0), **QUIET)
    assert not (tmp_path / "o").exists()


def test_config_files_get_featx_errors(tmp_path):
    from featx.models import target_config

    imports = tmp_path / "imports.py"
    imports.write_text('import os\nmodel = dict(type="featx.ResNet18", depth=os.cpu_count())\n')
    with pytest.raises(ValueError, match="lazy-import mode"):
        target_config(str(imports))
    (tmp_path / "base.txt").write_text("x")
    bad_base = tmp_path / "bad_base.py"
    bad_base.write_text('_base_ = "base.txt"\nmodel = dict(type="featx.ResNet18")\n')
    with pytest.raises(ValueError, match="its _base_ names a file that is not .py, .json, .yml, .yaml"):
        target_config(str(bad_base))
    missing = tmp_path / "missing_base.py"
    missing.write_text('_base_ = "gone.py"\nmodel = dict(type="featx.ResNet18")\n')
    with pytest.raises(FileNotFoundError, match="a file its _base_ names is missing"):
        target_config(str(missing))
    r = run_cli("export", str(imports), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 1 and "lazy-import mode" in r.stderr and not (tmp_path / "x.onnx").exists()


def test_an_allowed_pickle_call_with_crafted_arguments_is_refused_as_unsafe(tmp_path):
    import collections

    class Crafted:
        def __reduce__(self):
            return (collections.OrderedDict, (12345,))

    torch.save({"state_dict": Crafted()}, tmp_path / "crafted.pth")
    with pytest.raises(UnsafeCheckpointError, match="calls functions that weights_only loading allows"):
        load_checkpoint_file(tmp_path / "crafted.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "crafted.pth").read_bytes()[:100])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_checkpoint_file(tmp_path / "cut.pth")


def test_a_second_extract_into_a_store_being_written_is_refused(tmp_path):
    folder = _photos(tmp_path / "p", 1)
    out = tmp_path / "s"
    out.mkdir()
    with store_lock(out):
        with pytest.raises(RuntimeError, match=f"another featx extract \\(pid {os.getpid()}\\) is writing"):
            extract("ResNet18", folder, out, ExtractSettings(size=32, workers=0), **QUIET)
    assert extract("ResNet18", folder, out, ExtractSettings(size=32, workers=0), **QUIET).images == 1


def test_a_killed_exports_scratch_folder_is_removed_by_the_next(tmp_path, monkeypatch):
    from featx.io import scratch_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    script = ("from featx.io import scratch_dir\nimport os, time\n"
              "with scratch_dir() as d:\n    (d / 'model.onnx').write_bytes(b'x' * 1000)\n    print(d, flush=True)\n"
              "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    left = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert left.is_dir() and left.parent == tmp_path
    with scratch_dir() as mine:
        assert mine.is_dir()
        assert not left.exists()  # the dead process's folder is gone, the live one's stays
    assert not mine.exists()
