"""What featx trusts: a file names no code, featx deletes only what it made, a check judges by the reference and
not by what the checked file claims, and a store knows when its index, arrays and manifest disagree."""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import featx
from featx.deploy.metadata import check_metadata, graph_precision, model_from_metadata, read_metadata
from featx.errors import ParityError, StoreError, UnsafeConfigError
from featx.extraction import ExtractSettings, extract, verify_store
from featx.models import MAX_CHANNELS, check_file_config
from featx.extraction.store import FeatureStore
from helpers import run_cli

QUIET = dict(progress=False, log=lambda m: None)


def _payload(marker: Path) -> dict:
    """A model config whose data preprocessor is a call into subprocess (mmengine's registry would import and call
    it): it creates ``marker`` if anything builds it."""
    return {"type": "featx.ImageClassifier", "backbone": {"type": "featx.LeNet5"}, "num_classes": 3,
            "data_preprocessor": {"type": "subprocess.run", "args": f"touch {marker}", "shell": True}}


# -- 1. a file names no code ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg, where", [
    ({"type": "featx.ResNet18", "norm_cfg": {"type": "os.system"}}, "model.norm_cfg.type"),
    ({"type": "mmdet.ResNet"}, "model.type"),
    ({"type": "subprocess.Popen"}, "model.type"),
    ({"type": "featx.ResNet18FPN", "neck": {"type": "FPN", "act_cfg": {"type": "builtins.exec"}}}, "model.neck.act_cfg.type"),
    ({"type": "featx.ImageClassifier", "backbone": {"type": "featx.LeNet5"}, "num_classes": 3,
      "init_cfg": {"type": "Pretrained", "checkpoint": "/etc/passwd"}}, "model.init_cfg"),
    ({"type": "featx.TimmBackbone", "model_name": "resnet18", "checkpoint_path": "/etc/passwd"}, "model.checkpoint_path"),
    ({"type": "featx.TimmBackbone", "model_name": "resnet18", "pretrained_cfg_overlay": {"file": "/etc/passwd"}},
     "model.pretrained_cfg_overlay"),
    ({"type": "featx.ImageClassifier", "backbone": {"type": "featx.LeNet5"}, "num_classes": 4_000_000_000}, "model.num_classes"),
    ({"type": "featx.ResNet18FPN", "neck": {"out_channels": 2_000_000}}, "model.neck.out_channels"),
])
def test_a_file_config_naming_code_files_or_huge_sizes_is_refused_naming_the_key(cfg, where):
    with pytest.raises(UnsafeConfigError, match=f"the file: {where.replace('.', '[.]')}"):
        check_file_config(cfg, "the file")


def test_what_featx_writes_into_its_files_passes_the_check():
    for cfg in ({"type": "featx.ResNet50FPN", "norm_cfg": {"type": "FrozenBN", "eps": 0.0}, "weights": "DEFAULT"},
                {"type": "ResNet18FPN", "neck": {"act_cfg": {"type": "ReLU"}, "norm_cfg": "BN", "out_channels": 256}},
                {"type": "featx.ImageClassifier", "backbone": {"type": "featx.LeNet5"}, "num_classes": 10,
                 "hidden_act": "Tanh", "data_preprocessor": {"type": "ImgDataPreprocessor"}, "init_cfg": None},
                {"type": "featx_resnet50_fpn", "out_indices": [0, 1, 2, 3]}):
        check_file_config(cfg, "f")
    deep: dict = {"type": "featx.ResNet18"}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(UnsafeConfigError, match="nested deeper"):
        check_file_config(deep, "f")
    assert MAX_CHANNELS == 65536


def _evil_checkpoint(tmp_path: Path, marker: Path) -> Path:
    """A training checkpoint in featx train's format whose meta.cfg is plain data naming subprocess.run."""
    from featx.models.classifier import ImageClassifier

    torch.manual_seed(0)
    state = ImageClassifier(backbone={"type": "featx.LeNet5"}, num_classes=3).state_dict()
    cfg = _payload(marker)
    text = f"model = {cfg!r}\n"
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"cfg": text, "dataset_meta": {"classes": ["a", "b", "c"]}, "epoch": 1}, "state_dict": state}, path)
    return path


def test_a_checkpoint_naming_a_callable_runs_nothing(tmp_path):
    from featx.models import target_config
    from featx.train.predict import Predictor

    marker = tmp_path / "MARKER"
    evil = _evil_checkpoint(tmp_path, marker)
    with pytest.raises(UnsafeConfigError, match="model.data_preprocessor.type = 'subprocess.run'"):
        target_config(str(evil))
    with pytest.raises(UnsafeConfigError, match="subprocess.run"):
        Predictor(evil)
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    for args in (("predict", str(evil), str(image)), ("export", str(evil), "-o", str(tmp_path / "x.onnx"))):
        r = run_cli(*args)
        assert r.returncode == 1 and "UnsafeConfigError" in r.stderr and "subprocess.run" in r.stderr, (args, r.stderr)
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory) -> Path:
    from featx.deploy.onnx_export import ExportSettings, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "lenet.onnx"
    export_onnx("LeNet5", path, ExportSettings(exporter="torchscript"), log=lambda m: None)
    return path


def _edited(src: Path, dst: Path, **props) -> Path:
    """A copy of an export with some ``featx.*`` metadata replaced (what a sender of files controls)."""
    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        key = prop.key.removeprefix("featx.")
        if key in props:
            prop.value = props[key] if isinstance(props[key], str) else json.dumps(props[key])
    onnx.save(proto, str(dst))
    return dst


def test_an_onnx_file_naming_a_callable_runs_nothing(lenet_onnx, tmp_path):
    marker = tmp_path / "MARKER"
    evil = _edited(lenet_onnx, tmp_path / "evil.onnx", model_config=_payload(marker))
    with pytest.raises(ParityError, match="subprocess.run"):
        model_from_metadata(read_metadata(evil))
    r = run_cli("parity", str(evil), "--sizes", "32x32", "--repeats", "0")
    assert r.returncode == 1 and "subprocess.run" in r.stderr
    huge = _edited(lenet_onnx, tmp_path / "huge.onnx", model_config={"type": "featx.ResNet18FPN",
                                                                       "neck": {"out_channels": 2_000_000}})
    with pytest.raises(ParityError, match="outside 0..65536"):
        model_from_metadata(read_metadata(huge))
    assert not marker.exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    out = root / "store"
    extract("ResNet18", photos, out, ExtractSettings(size=32, workers=0), **QUIET)
    return out


def _copy(store: Path, dst: Path) -> Path:
    shutil.copytree(store, dst)
    return dst


def test_a_store_manifest_naming_a_callable_runs_nothing(store, tmp_path):
    marker = tmp_path / "MARKER"
    evil = _copy(store, tmp_path / "evil")
    manifest = json.loads((evil / "manifest.json").read_text())
    manifest["model_config"] = _payload(marker)
    (evil / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UnsafeConfigError, match="subprocess.run"):
        verify_store(evil, weights="random", log=lambda m: None)
    r = run_cli("extract", "--verify", str(evil), "--weights", "random")
    assert r.returncode == 1 and "subprocess.run" in r.stderr
    assert not marker.exists()


def test_an_export_profile_is_data_and_code_in_it_never_runs(tmp_path):
    from featx.deploy.onnx_export import load_profile

    marker = tmp_path / "MARKER"
    profile = tmp_path / "p.py"
    profile.write_text(f"fp16 = False\nopset = __import__('os').system('touch {marker}')\n")
    with pytest.raises(UnsafeConfigError, match="line 2"):
        load_profile(str(profile))
    r = run_cli("export", "LeNet5", "--profile", str(profile), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 1 and "not plain data" in r.stderr
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()
    profile.write_text("fp16 = False\nopset = 17\nexporter = 'torchscript'\n")
    assert load_profile(str(profile)).opset == 17


def test_a_config_whose_base_is_a_device_or_a_pipe_is_refused_at_once(tmp_path):
    from featx.config_text import read_config_file

    cfg = tmp_path / "c.py"
    cfg.write_text("_base_ = '/dev/zero'\nmodel = dict(type='featx.ResNet18')\n")
    with pytest.raises(ValueError, match="/dev/zero is not a regular file"):
        read_config_file(cfg)
    fifo = tmp_path / "base.py"
    os.mkfifo(fifo)
    cfg.write_text("_base_ = ['./base.py']\nmodel = dict(type='featx.ResNet18')\n")
    start = time.monotonic()
    with pytest.raises(ValueError, match="base.py is not a regular file"):
        read_config_file(cfg)
    assert time.monotonic() - start < 5  # refused, not read (a FIFO with no writer blocks forever)
    big = tmp_path / "big.py"
    big.write_text("a = 1\n" * 300_000)
    with pytest.raises(ValueError, match="a config file is at most"):
        read_config_file(big)


# -- 2. featx deletes only what it made -------------------------------------------------------------------------
def test_the_scratch_sweep_removes_only_folders_featx_marked(tmp_path, monkeypatch):
    import tempfile

    from featx.io import SCRATCH_MARKER, is_featx_scratch, scratch_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    backup = tmp_path / "featx-99999-mybackup"
    backup.mkdir()
    (backup / "data.txt").write_text("keep me")
    photos = tmp_path / "featx-2024-photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    forged = tmp_path / "featx-99998-forged"  # a marker that names another folder proves nothing
    forged.mkdir()
    (forged / SCRATCH_MARKER).write_text("featx scratch folder\npid 99998\nfolder featx-99998-other\n")
    dead = tmp_path / "featx-99997-abcd"  # what a killed featx process leaves
    dead.mkdir()
    (dead / SCRATCH_MARKER).write_text("featx scratch folder\npid 99997\nfolder featx-99997-abcd\n")
    (dead / "model.onnx").write_bytes(b"x" * 100)
    assert is_featx_scratch(dead) == 99997 and is_featx_scratch(backup) is None and is_featx_scratch(forged) is None
    with scratch_dir() as mine:
        assert (mine / SCRATCH_MARKER).is_file() and is_featx_scratch(mine) == os.getpid()
    assert (backup / "data.txt").read_text() == "keep me" and (photos / "a.jpg").exists() and forged.exists()
    assert not dead.exists() and not mine.exists()


def test_the_accel_scratch_in_memory_is_swept_the_same_way(tmp_path, monkeypatch):
    import featx.accel.scratch as scratch
    from featx.io import SCRATCH_MARKER

    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setattr(scratch, "MEMORY_ROOTS", (str(memory),))
    dead = memory / "featx-99996-x1"
    dead.mkdir()
    (dead / SCRATCH_MARKER).write_text("featx scratch folder\npid 99996\nfolder featx-99996-x1\n")
    someone_elses = memory / "featx-99995-theirs"
    someone_elses.mkdir()
    with scratch.memory_scratch_dir(needed=1) as tmp:
        assert Path(tmp).parent == memory
    assert not dead.exists() and someone_elses.exists()


# -- 3. checks judge by the reference ---------------------------------------------------------------------------
def _scaled_weights(src: Path, dst: Path, factor: float) -> Path:
    """A copy of an fp32 export whose conv weights were scaled (a wrong model, whatever its metadata says)."""
    proto = onnx.load(str(src))
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    for init in proto.graph.initializer:
        if init.name in conv_weights:
            array = onnx.numpy_helper.to_array(init) * factor
            init.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), init.name))
    onnx.save(proto, str(dst))
    return dst


def test_parity_takes_its_gate_from_the_graph_and_the_user_never_from_the_files_claim(lenet_onnx, tmp_path):
    from featx.deploy.parity import parity

    assert graph_precision(lenet_onnx) == "fp32"
    scaled = _scaled_weights(lenet_onnx, tmp_path / "scaled.onnx", 1.05)
    assert not parity(scaled, sizes=[(32, 32)], batches=[1], repeats=0, log=lambda m: None).passed  # fp32 gate
    claims_int8 = _edited(scaled, tmp_path / "claims_int8.onnx", precision="int8")
    with pytest.raises(ParityError, match="its metadata says int8, but its graph computes in fp32"):
        parity(claims_int8, sizes=[(32, 32)], batches=[1], repeats=0, log=lambda m: None)
    r = run_cli("parity", str(claims_int8), "--sizes", "32x32", "--repeats", "0")
    assert r.returncode == 1 and "graph computes in fp32" in r.stderr and "4 of 4" not in r.stdout
    # the user may choose a gate; the choice is theirs and the report says it
    report = parity(lenet_onnx, sizes=[(32, 32)], batches=[1], repeats=0, log=lambda m: None, precision="fp16")
    assert report.passed and report.gate["max_rel"] == 5e-2


@pytest.mark.parametrize("props, words", [
    ({"levels": "[1, 2, 3]"}, "levels"),
    ({"precision": "int3"}, "precision 'int3'"),
    ({"input": {"name": "input", "channels": 1, "mean": [float("nan")], "std": [0.5]}}, "input mean"),
    ({"input": {"name": "input", "channels": 1, "mean": [0.5], "std": [0.0]}}, "input std"),
])
def test_metadata_that_contradicts_the_graph_or_makes_no_sense_is_refused_before_a_run(lenet_onnx, tmp_path, props, words):
    from featx.deploy.parity import parity

    bad = _edited(lenet_onnx, tmp_path / "bad.onnx", **props)
    with pytest.raises(ParityError, match=words):
        parity(bad, sizes=[(32, 32)], batches=[1], repeats=0, log=lambda m: None)


def test_graph_precision_reads_the_graph(lenet_onnx, tmp_path):
    from featx.deploy.onnx_export import ExportSettings, export_onnx

    half = tmp_path / "half.onnx"
    export_onnx("LeNet5", half, ExportSettings(exporter="torchscript", fp16=True), log=lambda m: None)
    assert graph_precision(half) == "fp16" and read_metadata(half)["precision"] == "fp16"
    meta = read_metadata(lenet_onnx)
    check_metadata(meta, lenet_onnx, [lv["output"] for lv in meta["levels"]], "fp32")  # featx's own file: fine


# -- 4. a store knows when it is inconsistent -------------------------------------------------------------------
def _rewrite_index(folder: Path, edit) -> None:
    lines = (folder / "index.jsonl").read_text().splitlines()
    (folder / "index.jsonl").write_text("".join(line + "\n" for line in edit(lines)))


def test_a_store_whose_index_arrays_and_manifest_disagree_is_refused(store, tmp_path):
    assert len(FeatureStore(store)) == 6
    cases = {
        "one line removed": lambda lines: lines[1:],
        "empty": lambda lines: [],
        "a path twice": lambda lines: lines[:-1] + [lines[0]],
        "a shard outside the store": lambda lines: [json.dumps({**json.loads(lines[0]), "shard": "../../../../etc/passwd"})]
        + lines[1:],
    }
    for name, edit in cases.items():
        bad = _copy(store, tmp_path / name.replace(" ", "_"))
        _rewrite_index(bad, edit)
        with pytest.raises(StoreError, match="index.jsonl"):
            FeatureStore(bad)
    cut = _copy(store, tmp_path / "cut")
    level = FeatureStore(store).levels[-1]
    np.save(cut / f"pooled.{level}.npy", np.load(cut / f"pooled.{level}.npy")[:4])
    with pytest.raises(StoreError, match=f"pooled.{level}.npy has 4 rows for 6 index lines"):
        FeatureStore(cut)
    r = run_cli("store-export", str(cut), "--out", str(tmp_path / "exported"))
    assert r.returncode == 1 and "4 rows for 6" in r.stderr
    truncated = _copy(store, tmp_path / "truncated_manifest")
    (truncated / "manifest.json").write_text((store / "manifest.json").read_text()[:50])
    with pytest.raises(StoreError, match="not JSON"):
        FeatureStore(truncated)


def test_verify_fails_a_short_or_empty_index(store, tmp_path):
    short = _copy(store, tmp_path / "short")
    _rewrite_index(short, lambda lines: lines[:3])
    r = run_cli("extract", "--verify", str(short), "--weights", "random")
    assert r.returncode == 1 and "3 lines but the manifest records 6" in r.stderr and "PASS" not in r.stdout
    empty = _copy(store, tmp_path / "empty")
    _rewrite_index(empty, lambda lines: [])
    manifest = json.loads((empty / "manifest.json").read_text())
    manifest["merged"]["images"] = 0
    (empty / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="holds no images"):
        verify_store(empty, weights="random", log=lambda m: None)


def test_a_full_disk_during_the_merge_is_one_error_and_leaves_no_half_store(store, tmp_path, monkeypatch):
    from featx.extraction.store import merge_store

    copy = _copy(store, tmp_path / "full")
    (copy / "index.jsonl").unlink()

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(StoreError, match="No space left on device"):
        merge_store(copy)
    assert not list(copy.glob(".*.part")) and not (copy / "index.jsonl").exists()
    monkeypatch.undo()
    assert merge_store(copy) == 6 and len(FeatureStore(copy)) == 6


# -- 6. the rest: lists, names, folders, classes, devices, options, disks ------------------------------------------
def _png(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def test_a_skipped_image_is_retried_once_its_file_changes(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _png(photos / "a.png")
    whole = _png(photos / "b.png", 1).read_bytes()
    (photos / "b.png").write_bytes(whole[: len(whole) // 2] + bytes(len(whole) - len(whole) // 2))  # cut: same size
    settings = ExtractSettings(size=32, workers=0)
    first = extract("ResNet18", photos, tmp_path / "s", settings, **QUIET)
    assert first.images == 1 and [s["path"] for s in FeatureStore(tmp_path / "s").skipped] == ["b.png"]
    (photos / "b.png").write_bytes(whole)  # the whole file again, the same size
    os.utime(photos / "b.png", ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    again = extract("ResNet18", photos, tmp_path / "s", settings, **QUIET)
    store = FeatureStore(tmp_path / "s")
    assert again.images == 2 and list(store) == ["a.png", "b.png"] and store.skipped == []


def test_a_list_naming_a_pipe_or_a_quoted_comma_path_and_odd_names_never_hang_or_abort(tmp_path):
    photos = tmp_path / "imgs"
    photos.mkdir()
    _png(photos / "a,b.png")
    _png(photos / "c.png", 1)
    os.mkfifo(photos / "pipe.png")
    listing = tmp_path / "list.csv"
    listing.write_text('path,label\n"imgs/a,b.png",2\nimgs/c.png,3\nimgs/pipe.png,4\n')
    start = time.monotonic()
    result = extract("ResNet18", listing, tmp_path / "s", ExtractSettings(size=32, workers=0), **QUIET)
    assert time.monotonic() - start < 120
    store = FeatureStore(tmp_path / "s")
    assert list(store) == ["imgs/a,b.png", "imgs/c.png"] and result.images == 2
    assert [(s["path"], "not a regular file" in s["reason"]) for s in store.skipped] == [("imgs/pipe.png", True)]
    # a file name that is not UTF-8: skipped with its reason, the run goes on
    odd = tmp_path / "odd"
    odd.mkdir()
    _png(odd / "fine.png")
    _png(Path(os.fsdecode(bytes(odd) + b"/caf\xe9.png")), 2)
    extract("ResNet18", odd, tmp_path / "odd_store", ExtractSettings(size=32, workers=0), **QUIET)
    store = FeatureStore(tmp_path / "odd_store")
    assert list(store) == ["fine.png"] and len(store.skipped) == 1 and "not UTF-8" in store.skipped[0]["reason"]


def test_an_unreadable_subfolder_is_reported_among_the_skipped(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    (photos / "locked").mkdir(parents=True)
    _png(photos / "a.png")
    _png(photos / "locked" / "b.png", 1)
    real_walk = os.walk

    def walk(top, onerror=None, **kw):  # as os.walk meets a folder it may not list (root may list them all)
        for folder, dirs, files in real_walk(top, onerror=onerror, **kw):
            if Path(folder).name == "locked":
                onerror(PermissionError(13, "Permission denied", folder))
                continue
            yield folder, dirs, files

    monkeypatch.setattr(os, "walk", walk)
    extract("ResNet18", photos, tmp_path / "s", ExtractSettings(size=32, workers=0), **QUIET)
    store = FeatureStore(tmp_path / "s")
    assert list(store) == ["a.png"]
    assert [s["path"] for s in store.skipped] == ["locked/"] and "cannot be read" in store.skipped[0]["reason"]


def test_class_names_must_be_a_list_of_the_classifiers_length(tmp_path):
    from featx.models.classifier import ImageClassifier
    from featx.train.predict import Predictor

    state = ImageClassifier(backbone={"type": "featx.LeNet5"}, num_classes=3).state_dict()
    text = "model = dict(type='featx.ImageClassifier', backbone=dict(type='featx.LeNet5'), num_classes=3)\n"
    for classes, words in (("abc", "not a list of class names"), (["a", "b"], "names 2 classes"),
                           ([1, 2, 3], "not a list of class names")):
        path = tmp_path / "c.pth"
        torch.save({"meta": {"cfg": text, "dataset_meta": {"classes": classes}}, "state_dict": state}, path)
        with pytest.raises(ValueError, match=words):
            Predictor(path)
    torch.save({"meta": {"cfg": text, "dataset_meta": {"classes": ["x", "y", "z"]}}, "state_dict": state}, path)
    assert Predictor(path).classes == ["x", "y", "z"]


def test_every_device_kind_is_checked_before_anything_is_built(tmp_path):
    from featx.devices import checked_device

    for device in ("mps", "meta", "xpu"):
        with pytest.raises(ValueError, match=f"no {device} device is usable here"):
            checked_device(device)
    photos = tmp_path / "p"
    photos.mkdir()
    _png(photos / "a.png")
    r = run_cli("extract", "ResNet18", str(photos), "--out", str(tmp_path / "s"), "--device", "mps")
    assert r.returncode != 0 and "no mps device is usable" in r.stderr and not (tmp_path / "s" / "manifest.json").exists()


@pytest.mark.parametrize("option", ["norm_cfg=dict(type='BN',eps=1)", "x=[1,(2]"])
def test_cfg_options_mmengine_cannot_parse_are_one_usage_line(option, tmp_path):
    r = run_cli("export", "ResNet18", "--cfg-options", option, "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and "--cfg-options: cannot parse" in r.stderr and "Traceback" not in r.stderr


def test_a_full_or_read_only_disk_is_one_line_naming_the_folder():
    from featx.cli import _error_line

    assert _error_line(OSError(errno.ENOSPC, "No space left on device", "/data/store/.pooled.C5.npy.part")).startswith(
        "no space left on the device writing in /data/store;")
    assert _error_line(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x.onnx")).startswith(
        "the file system is read-only writing in /mnt/ro;")

    class SafetensorError(Exception):
        pass

    assert _error_line(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
                       ).startswith("no space left on the device;")
    assert _error_line(ValueError("an ordinary message")) == "an ordinary message"


def test_an_image_path_that_is_a_pipe_is_refused_not_read(tmp_path):
    from featx.images import load_image

    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(ValueError, match="not a regular file"):
        load_image(fifo)
    assert time.monotonic() - start < 5


def test_resuming_into_a_store_with_a_damaged_manifest_is_one_store_error(store, tmp_path):
    damaged = _copy(store, tmp_path / "damaged")
    (damaged / "manifest.json").write_text((store / "manifest.json").read_text()[:40])
    source = json.loads((store / "manifest.json").read_text())["source"]
    with pytest.raises(StoreError, match="manifest.json is not a featx manifest"):
        extract("ResNet18", source, damaged, ExtractSettings(size=32, workers=0), **QUIET)


def test_an_interrupt_that_escapes_the_command_is_one_line(monkeypatch, capsys):
    import featx.cli as cli

    def late_interrupt(argv=None):  # a second Ctrl-C while the first is handled, or while handlers are restored
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_main", late_interrupt)
    assert cli.main(["list"]) == 130
    assert capsys.readouterr().err.strip() == "featx: interrupted"
