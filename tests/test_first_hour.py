"""What a new user meets first: random weights are never silent, offline downloads fail with featx's one
line, --device errors alike everywhere, Ctrl-C is one line that says how to resume, and extract names
what it skipped or ignored."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featx.errors import WeightsUnavailableError
from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
FEATX = [sys.executable, "-m", "featx"]
RANDOM_NOTE = "has no weights loaded"


def _photos(folder: Path, n: int, size: tuple[int, int] = (48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"p{i:03d}.jpg")
    return folder


# -- random weights ----------------------------------------------------------------------------------------
def test_commands_say_when_weights_are_random(tmp_path):
    photos = _photos(tmp_path / "photos", 2)
    r = run_cli("extract", "ResNet18", str(photos), "--out", str(tmp_path / "s"), "--size", "32", "--workers", "0",
                "--no-progress")
    assert r.returncode == 0 and RANDOM_NOTE in r.stderr and "--weights DEFAULT" in r.stderr
    r = run_cli("export", "ResNet18", "-o", str(tmp_path / "m.onnx"), "--exporter", "torchscript")
    assert r.returncode == 0 and RANDOM_NOTE in r.stderr and "the exported file" in r.stderr
    r = run_cli("viz", str(photos / "p000.jpg"), "--model", "ResNet18", "--size", "32", "-o", str(tmp_path / "v.png"))
    assert r.returncode == 0 and RANDOM_NOTE in r.stderr and "the picture" in r.stderr
    # with weights: no note
    own = tmp_path / "own.pth"
    import featx

    torch.save(featx.create_model("ResNet18").state_dict(), own)
    r = run_cli("extract", "ResNet18", str(photos), "--out", str(tmp_path / "s2"), "--size", "32", "--workers", "0",
                "--no-progress", "--weights", str(own))
    assert r.returncode == 0 and RANDOM_NOTE not in r.stderr


def test_the_manifest_records_random_weights(tmp_path):
    import json

    from featx.extraction import ExtractSettings, extract

    extract("ResNet18", _photos(tmp_path / "p", 1), tmp_path / "s", ExtractSettings(size=32, workers=0),
            progress=False, log=lambda m: None)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["random_weights"] is True and manifest["weights"].startswith("none (random init")


# -- offline ---------------------------------------------------------------------------------------------
def test_timm_pretrained_offline_is_featxs_one_error(tmp_path, monkeypatch):
    import timm

    import featx  # noqa: F401  (registers featx_* in timm)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as e:
        timm.create_model("featx_resnet18", pretrained=True)
    text = str(e.value)
    assert "resnet18-f37072fd.pth is not cached and could not be downloaded" in text
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in text
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in text


# -- --device ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
@pytest.mark.parametrize("args", [
    ["viz", "sample", "--model", "ResNet18", "--device", "cuda"],
    ["extract", "ResNet18", "PHOTOS", "--out", "OUT", "--device", "cuda"],
    ["bench", "--model", "ResNet18", "--device", "cuda", "--repeats", "1"],
    ["train-detector", "OUT", "--make-shapes", "--device", "cuda"],
])
def test_device_cuda_without_a_gpu_is_one_line_with_a_way_out(args, tmp_path):
    photos = _photos(tmp_path / "photos", 1)
    args = [str(photos) if a == "PHOTOS" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    r = run_cli(*args)
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert lines[0].endswith("use --device cpu, or run on a machine with an NVIDIA GPU and a CUDA build of torch")
    assert "no CUDA device is usable here" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


# -- Ctrl-C ----------------------------------------------------------------------------------------------------
def _interrupt_after(args: list[str], wait_for: str, cwd: Path, delay: float = 0.0) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(FEATX + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = ""
    if wait_for:
        while wait_for not in seen:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, seen + err)


def test_ctrl_c_during_extract_is_one_line_that_says_how_to_resume(tmp_path):
    photos = _photos(tmp_path / "photos", 400, size=(160, 200))
    r = _interrupt_after(["extract", "ResNet18", str(photos), "--out", str(tmp_path / "s"), "--size", "160",
                          "--batch", "4", "--workers", "2", "--no-progress"], RANDOM_NOTE, REPO, delay=1.0)
    assert r.returncode == 130, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last == ("featx extract: interrupted; nothing half-written is left; rerun the same command to resume "
                    "(finished shards are kept)")


def _interpreter_startup() -> float:
    """Seconds this machine takes to start Python with this environment's site packages (their .pth hooks
    included) and exit: before that, a Ctrl-C is Python's own traceback, which no featx code can catch."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return sorted(times)[1]


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4])
def test_ctrl_c_while_starting_is_one_line(delay, tmp_path):
    """Ctrl-C while featx starts (its own imports: torch, the CLI), measured from when Python has started."""
    r = _interrupt_after(["extract", "ResNet18", str(_photos(tmp_path / "p", 1)), "--out", str(tmp_path / "s")], "",
                         REPO, delay=_interpreter_startup() + delay)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode in (130, -signal.SIGINT) or (r.returncode == 0 and delay > 0.3), r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "interrupted" in ln]) <= 1


# -- what extract skipped ----------------------------------------------------------------------------------------
def test_extract_names_what_it_skipped_and_ignored(tmp_path):
    photos = _photos(tmp_path / "photos", 2)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (photos / "notes.txt").write_text("x")
    (photos / "labels.csv").write_text("x")
    r = run_cli("extract", "ResNet18", str(photos), "--out", str(tmp_path / "s"), "--size", "32", "--workers", "0",
                "--no-progress")
    assert r.returncode == 0
    assert "1 images skipped in all: broken.jpg (" in r.stderr and "manifest.json" in r.stderr
    assert "2 files in" in r.stderr and "not images, ignored" in r.stderr


def test_the_docs_torchvision_detector_line_downloads_nothing(monkeypatch):
    import torchvision

    line = next(ln for ln in (REPO / "docs" / "clients.md").read_text().splitlines()
                if ln.startswith("tv = torchvision.models.detection.fasterrcnn_resnet50_fpn("))
    code = line.split("#")[0].strip()

    def offline(*args, **kwargs):
        raise AssertionError(f"the docs' line downloads: {code}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    scope = {"torchvision": torchvision}
    exec(code, scope)
    assert scope["tv"].roi_heads.box_predictor.cls_score.out_features == 3
