"""Untrusted files plant nothing, every bad input gets a clear error, nothing is silently wrong, and no file
is left behind half-written. One test per finding of the hardening review, and a battery of bad CLI inputs."""
from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from safetensors.torch import save_file

import featx
from featx.checkpoints import hub_checkpoint_path
from featx.deploy.metadata import model_from_metadata, read_metadata
from featx.errors import CheckpointMismatchError, ParityError, TrainError, UnsafeCheckpointError, WeightsError
from featx.io import atomic_write_bytes
from helpers import run_cli, write_color_imagefolder, write_tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def r18_onnx(tmp_path_factory) -> Path:
    from featx.deploy.onnx_export import ExportSettings, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "r18.onnx"
    export_onnx("ResNet18", path, ExportSettings(exporter="torchscript"), log=lambda m: None)
    return path


def _with_weights(src: Path, dst: Path, weights: str) -> Path:
    """A copy of an export whose metadata names other weights (what an attacker controls)."""
    import json

    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        if prop.key == "featx.model_config":
            prop.value = json.dumps({**json.loads(prop.value), "weights": weights})
    onnx.save(proto, str(dst))
    return dst


# -- security ------------------------------------------------------------------------------------------
def test_a_model_file_cannot_make_featx_fetch_or_plant_weights(r18_onnx, tmp_path, torch_home):
    # a URL named like torchvision's own file: never fetched, nothing written into the shared cache
    planted = _with_weights(r18_onnx, tmp_path / "evil.onnx", "http://127.0.0.1:9/resnet18-f37072fd.pth")
    with pytest.raises(ParityError, match="does not fetch what a file names"):
        model_from_metadata(read_metadata(planted))
    r = run_cli("parity", str(planted), "--sizes", "64x64", "--repeats", "0")
    assert r.returncode == 1 and "does not fetch" in r.stderr
    # a torchvision name that is not cached: not downloaded either
    named = _with_weights(r18_onnx, tmp_path / "named.onnx", "IMAGENET1K_V1")
    with pytest.raises(ParityError, match="not on this machine"):
        model_from_metadata(read_metadata(named))
    assert not torch_home.exists() or not any(torch_home.rglob("*.pth"))
    # the user may still say which weights to compare with
    own = tmp_path / "own.pth"
    torch.save(torchvision.models.resnet18().state_dict(), own)
    r = run_cli("parity", str(planted), "--model", "ResNet18", "--weights", str(own), "--sizes", "64x64",
                "--repeats", "0")
    assert r.returncode == 1 and "FAIL" in r.stdout  # compared with the user's weights, not the file's init


def test_a_replaced_torchvision_file_is_refused(torch_home):
    from torchvision.models import ResNet18_Weights

    path = hub_checkpoint_path(ResNet18_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), path)  # other weights under torchvision's name
    with pytest.raises(WeightsError, match=r"does not match the SHA-256 its name promises \(f37072fd\.\.\.; the file's is"):
        featx.create_model("ResNet18", weights="DEFAULT")
    import timm

    with pytest.raises(WeightsError, match="SHA-256"):  # timm's own pretrained path ends in the same check
        timm.create_model("featx_resnet18", pretrained=True)


def test_resume_from_a_crafted_checkpoint_gets_featxs_message(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"state_dict": {}, "meta": Evil()}, tmp_path / "epoch_1.pth")
    root = tmp_path / "data"
    write_color_imagefolder(root / "train", {"red": 3, "green": 3})
    write_color_imagefolder(root / "val", {"red": 2, "green": 2})
    cfg = write_tiny_config(tmp_path / "cfg.py", root)
    r = run_cli("train", cfg, "--work-dir", str(tmp_path / "work"), "--resume", str(tmp_path / "epoch_1.pth"))
    assert r.returncode == 1 and "UnsafeCheckpointError: refused to load" in r.stderr
    assert "will likely succeed" not in r.stderr  # torch's advice to retry with weights_only=False is not relayed
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "work").exists()


# -- silently wrong, now errors (or right) ------------------------------------------------------------
def test_fpn_rejects_zero_channels_and_coarse_to_fine_inputs():
    with pytest.raises(ValueError, match="out_channels must be a positive int"):
        featx.create_model("FPN", in_channels=[8, 16], out_channels=0, num_outs=2)
    fpn = featx.create_model("FPN", in_channels=[8, 16], out_channels=4, num_outs=2)
    with pytest.raises(ValueError, match="ascending stride order"):
        fpn((torch.rand(1, 8, 4, 4), torch.rand(1, 16, 8, 8)))
    with pytest.raises(ValueError, match="in_strides must be ascending"):
        featx.create_model("FPN", in_channels=[8, 16], out_channels=4, num_outs=2, in_strides=[8, 4])


def test_resnet_arch_and_depth_must_agree():
    with pytest.raises(ValueError, match="depth=50 contradicts arch='resnet18'"):
        featx.create_model("ResNet", arch="resnet18", depth=50)
    assert featx.create_model("ResNet", arch="resnext50_32x4d", depth=50).arch == "resnext50_32x4d"


def test_checkpoint_values_are_checked(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    as_int = {k: (v.to(torch.int32) if v.is_floating_point() else v) for k, v in state.items()}
    save_file(as_int, str(tmp_path / "int.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="non-floating-point tensors where ResNet has float weights"):
        featx.create_model("ResNet18", weights=str(tmp_path / "int.safetensors"))
    as_double = {k: (v.double() if v.is_floating_point() else v) for k, v in state.items()}
    save_file(as_double, str(tmp_path / "f64.safetensors"))
    m = featx.create_model("ResNet18", weights=str(tmp_path / "f64.safetensors"))
    assert m.load_report.cast == {"float64": 100} and "cast to the model's precision" in str(m.load_report)
    assert m.conv1.weight.dtype == torch.float32
    nan = dict(state, **{"layer2.0.conv1.weight": torch.full_like(state["layer2.0.conv1.weight"], float("nan"))})
    torch.save(nan, tmp_path / "nan.pth")
    with pytest.raises(CheckpointMismatchError, match="NaN or infinite values in 1 tensors \\(layer2.0.conv1.weight\\)"):
        featx.create_model("ResNet18", weights=str(tmp_path / "nan.pth"))


def test_input_dtype_must_match_the_weights():
    m = featx.create_model("ResNet18").eval()
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(TypeError, match=f"has float32 weights and expects float32 input, got {str(dtype)[6:]}"):
            m(torch.rand(1, 3, 32, 32, dtype=dtype))
    with torch.no_grad():
        assert m.double()(torch.rand(1, 3, 32, 32, dtype=torch.float64))[0].dtype == torch.float64


def test_training_that_would_do_nothing_is_refused(tmp_path):
    root = tmp_path / "data"
    write_color_imagefolder(root / "train", {"red": 3, "green": 3})
    write_color_imagefolder(root / "val", {"red": 2, "green": 2})
    cfg = write_tiny_config(tmp_path / "cfg.py", root)
    r = run_cli("train", cfg, "--work-dir", str(tmp_path / "w"), "--cfg-options", "train_cfg.max_epochs=0")
    assert r.returncode == 1 and "train_cfg.max_epochs must be a positive int, got 0" in r.stderr
    assert not (tmp_path / "w").exists()


# -- files ---------------------------------------------------------------------------------------------
def test_digits_folder_gets_a_plain_folders_mode(tmp_path):
    from featx.train.digits import write_digits_imagefolder

    old = os.umask(0o022)
    try:
        write_digits_imagefolder(tmp_path / "digits", val_ratio=0.5)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "digits").stat().st_mode) == 0o755


def test_a_dead_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.onnx.{pid}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    mine = tmp_path / f".out.onnx.{os.getpid()}.live01.tmp"  # a live writer's (this process) stays
    mine.write_bytes(b"y")
    atomic_write_bytes(tmp_path / "out.onnx", b"done")
    assert not stale.exists() and mine.exists() and (tmp_path / "out.onnx").read_bytes() == b"done"


@pytest.mark.slow
def test_sigterm_during_export_leaves_nothing(tmp_path):
    out = tmp_path / "r50.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "featx", "export", "ResNet50FPN", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob(".r50.onnx.*.tmp")):  # the export is writing
        time.sleep(0.2)
    assert list(tmp_path.glob(".r50.onnx.*.tmp")), "the export never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated; nothing half-written is left" in err
    assert list(tmp_path.iterdir()) == []


def test_shipped_configs_are_found_from_anywhere(tmp_path, monkeypatch):
    from featx.shipped import shipped_config

    monkeypatch.chdir(tmp_path)
    assert shipped_config("configs/finetune/resnet18_digits.py").is_file()
    with pytest.raises(FileNotFoundError, match="config not found: configs/finetune/nope.py"):
        shipped_config("configs/finetune/nope.py")


def test_the_wheel_ships_profiles_and_configs(tmp_path):
    import zipfile

    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("featx-*.whl"))).namelist()
    assert "featx/deploy/profiles/static_fp32.py" in names
    assert any(n.endswith("data/share/featx/configs/finetune/resnet18_digits.py") for n in names)
    assert any(n.endswith("data/share/featx/configs/finetune/_base_/runtime.py") for n in names)


def test_broken_pipe_ends_quietly(monkeypatch):
    from featx.cli import main

    class ClosedPipe(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return os.open(os.devnull, os.O_WRONLY)

    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["info", "ResNet18", "--size", "64x64"]) == 141
    assert "BrokenPipeError" not in err.getvalue()


# -- a battery of bad CLI inputs: one clear line, the right exit code, nothing written ------------------
BAD = [
    (["export", "ResNet18", "--cfg-options", "frozen_stages"], 2, "--cfg-options takes key=value items"),
    (["train", "{cfg}", "--cfg-options", "=3"], 2, "--cfg-options takes key=value items"),
    (["export", "ResNet18", "--opset", "7", "-o", "{tmp}/x.onnx"], 1, "the dynamo exporter writes opset 18 or newer"),
    (["export", "ResNet18", "--fp16-io", "-o", "{tmp}/x.onnx"], 1, "--fp16-io needs --fp16"),
    (["export", "ResNet18", "-o", "{tmp}"], 2, "is a folder; expected a file path"),
    (["export", "ResNet18", "--weights", "{tmp}/notes.txt", "-o", "{tmp}/x.onnx"], 1, "not a checkpoint"),
    (["export", "ResNet18", "--weights", "{tmp}", "-o", "{tmp}/x.onnx"], 1, "is a folder; expected a checkpoint file"),
    (["parity", "{tmp}", "--repeats", "0"], 1, "is a folder; expected an .onnx file"),
    (["parity", "{tmp}/x.onnx", "--batch", "0"], 2, "expected an integer >= 1, got 0"),
    (["parity", "{tmp}/x.onnx", "--json", "/nonexistent/r.json"], 2, "folder /nonexistent does not exist"),
    (["bench", "--repeats", "0"], 2, "expected an integer >= 1, got 0"),
    (["bench", "--model", "ResNet18", "--entries", "torchvision"], 1, "resnet_fpn_backbone has no counterpart"),
    (["info", "ResNet18", "--size", "0x10"], 2, "size must be positive"),
    (["viz", "sample", "--size", "0"], 2, "expected an integer in 16..4096, got 0"),
    (["viz", "sample", "--size", "20000"], 2, "expected an integer in 16..4096, got 20000"),
    (["viz", "sample", "--model", "ResNet18", "-o", "{tmp}/x.jpg"], 1, "featx viz writes PNG images"),
    (["viz", "{tmp}", "--model", "ResNet18", "-o", "{tmp}/x.png"], 1, "is a folder; expected an image file"),
    (["check-weights", "ResNet18", "--tol", "-1"], 2, "expected a number >= 0, got -1"),
    (["train-detector", "{tmp}/shapes", "--model", "MobileNetV3Small"], 1, "needs a composite with an FPN"),
    (["train", "{tmp}/missing.py"], 1, "config file not found"),
    (["export", "ResNet51FPN"], 1, "did you mean ResNet50FPN"),
]


@pytest.mark.parametrize("args,code,words", BAD, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _, _) in enumerate(BAD)])
def test_bad_cli_input_is_one_clear_line_and_writes_nothing(args, code, words, tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "x.onnx").write_bytes(b"unchanged")
    cfg = tmp_path / "cfg.py"
    cfg.write_text("model = dict(type='featx.ImageClassifier')\n")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    r = run_cli(*[a.replace("{tmp}", str(tmp_path)).replace("{cfg}", str(cfg)) for a in args])
    assert r.returncode == code, r.stdout + r.stderr
    assert words in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    if code == 1:  # featx's own error: exactly one error line and the --debug hint
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("writing", "exporting"))]
        assert len(lines) == 2 and lines[-1].strip() == "(run with --debug for the full traceback)", r.stderr
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert after == before  # nothing written, nothing changed, no temporary left


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    code = textwrap.dedent("""
        from featx.cli import main
        main(["info", "ResNet51FPN", "--debug"])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" in r.stderr and "UnknownModelError" in r.stderr


def test_a_mismatched_checkpoint_message_reaches_the_user_whole(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    r = run_cli("export", "ResNet50", "--weights", str(tmp_path / "r18.pth"), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 1
    line = r.stderr.splitlines()[0]
    assert "shape mismatches (layer1.0.conv1.weight: checkpoint [64, 64, 3, 3] vs model [64, 64, 1, 1]" in line
    assert "keys missing from the checkpoint" in line and not (tmp_path / "x.onnx").exists()


def test_zero_sized_inputs_are_clear_errors():
    m = featx.create_model("ResNet18").eval()
    with pytest.raises(ValueError, match=r"needs inputs of at least 1x1 pixels .* got shape \(1, 3, 0, 64\)"):
        m(torch.rand(1, 3, 0, 64))
    with pytest.raises(ValueError, match="needs inputs of at least 75x75"):
        featx.create_model("InceptionV3").eval()(torch.rand(1, 3, 64, 64))


def test_export_default_location_is_what_its_help_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("export", "ResNet18", "--exporter", "torchscript", "--no-winograd")
    assert run_cli(*args).returncode == 0 and (tmp_path / "ResNet18_dynamic_fp32.onnx").is_file()
    (tmp_path / "export").mkdir()
    assert run_cli(*args).returncode == 0 and (tmp_path / "export" / "ResNet18_dynamic_fp32.onnx").is_file()
    assert "export/<model>_<profile>.onnx when an export/ folder is here, else ./<model>_<profile>.onnx" in \
        " ".join(run_cli("export", "--help").stdout.split())


@pytest.mark.slow
def test_train_detector_without_out_says_nothing_is_saved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("train-detector", "shapes", "--make-shapes", "--num-train", "2", "--num-val", "1", "--iters", "1",
                "--batch", "2", "--warmup", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no --out given, so the trained detector is not saved" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"] and not list(tmp_path.rglob("*.pth"))


def test_a_process_forked_during_a_command_dies_on_sigterm(monkeypatch):
    # OpenVINO's telemetry forks a child that can block in getaddrinfo on a machine without internet and is
    # SIGTERMed after 3 s; had the child inherited the CLI's Python SIGTERM handler (run only when the C call
    # returns), `featx export --format openvino` would wait ~10 min at exit to join it (seen on this machine)
    import argparse
    import multiprocessing

    from featx import cli

    fork = multiprocessing.get_context("fork")
    seen = {}

    def command(args):
        seen["parent handler"] = signal.getsignal(signal.SIGTERM) is cli._terminate
        child = fork.Process(target=lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(30)))
        child.start()
        child.join(20)
        seen["child exit"] = child.exitcode

    def parser():
        p = argparse.ArgumentParser()
        p.set_defaults(func=command, command="probe")
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([]) == 0
    # killed by the signal itself (not exit code 1 from a KeyboardInterrupt raised by an inherited handler)
    assert seen == {"parent handler": True, "child exit": -signal.SIGTERM}
    assert signal.getsignal(signal.SIGTERM) is not cli._terminate  # restored after the command
