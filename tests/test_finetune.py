"""ImageFolder fine-tuning on mmengine's Runner: data checks, training, resume, DDP, predict, export."""
from __future__ import annotations

import json
import re
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, write_color_imagefolder, write_tiny_config
from mmengine.hooks import Hook
from PIL import Image

from featx.checkpoints import MMENGINE_CHECKPOINT_TYPES, allow_mmengine_checkpoints
from featx.errors import DataError, TrainError
from featx.train.checkpoint import ATOMIC_BACKEND, AtomicLocalBackend, find_resume_checkpoint, read_training_checkpoint
from featx.train.data import ImageFolderDataset, resolve_splits, scan_class_folders
from featx.train.runner import load_config, prepare_config, train

REPO = Path(__file__).resolve().parents[1]


# -- data ------------------------------------------------------------------------------------------
def _write_bad_files(folder: Path) -> None:
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)
    good = folder / "000.png"
    data = good.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an image")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """train/ and val/ with 3 classes, plus every kind of file the scanner must survive."""
    root = tmp_path_factory.mktemp("tiny")
    write_color_imagefolder(root / "train", {"blue": 6, "green": 6, "red": 6}, seed=0)
    write_color_imagefolder(root / "val", {"blue": 3, "green": 3, "red": 3}, seed=1)
    _write_bad_files(root / "train" / "red")
    (root / "train" / "empty_class").mkdir()
    # other pixel formats, converted to RGB: grayscale, RGBA, 16-bit grayscale
    Image.fromarray(np.full((16, 16), 120, np.uint8), "L").save(root / "train" / "green" / "gray.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 230, 255
    Image.fromarray(rgba, "RGBA").save(root / "train" / "red" / "rgba.png")
    Image.fromarray(np.full((16, 16), 50000, np.uint16)).save(root / "train" / "blue" / "deep16.png")
    return root


def test_scan_skips_and_counts_bad_files(tiny_root):
    scan = scan_class_folders(tiny_root / "train")
    assert scan.classes == ["blue", "green", "red"]
    assert len(scan.samples) == 18 + 3  # 18 colour squares + gray + rgba + 16-bit
    unreadable = [Path(p).name for reason, files in scan.skipped.items() if reason.startswith("unreadable") for p in files]
    assert sorted(unreadable) == ["corrupt.png", "truncated.png"]
    assert [Path(p).name for p in scan.skipped["non-image files (by extension)"]] == ["notes.txt"]
    assert scan.empty_classes == ["empty_class"]
    assert sum(scan.converted.values()) == 3
    text = scan.summary()
    assert "skipped 1 non-image files" in text and "empty_class" in text and "converted to RGB" in text


def test_dataset_converts_pixel_formats(tiny_root):
    ds = ImageFolderDataset(str(tiny_root), "train", pipeline=[dict(type="ToImage"),
                                                               dict(type="ToDtype", dtype="float32", scale=True)])
    assert ds.metainfo == {"classes": ("blue", "green", "red")}
    items = {Path(p).name: ds[i] for i, (p, _) in enumerate(ds.samples)}
    gray, rgba, deep = items["gray.png"]["inputs"], items["rgba.png"]["inputs"], items["deep16.png"]["inputs"]
    for x in (gray, rgba, deep):
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(gray, torch.full_like(gray, 120 / 255))
    assert torch.allclose(rgba[0], torch.full((16, 16), 230 / 255)) and rgba[1:].abs().max() == 0
    assert abs(deep.mean().item() - round(50000 / 65535 * 255) / 255) < 1e-6  # 16-bit scaled, not clipped
    assert items["gray.png"]["labels"] == 1 and ds.class_counts() == [7, 7, 7]


def test_bad_datasets_are_clear_errors_before_training(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        resolve_splits(tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DataError, match="empty dataset: no readable images"):
        resolve_splits(tmp_path / "empty")
    diff = tmp_path / "diff"
    write_color_imagefolder(diff / "train", {"blue": 2, "red": 2})
    write_color_imagefolder(diff / "val", {"blue": 1, "green": 1})
    with pytest.raises(DataError, match=r"only in val: \['green'\]; missing from val: \['red'\]"):
        resolve_splits(diff)
    no_val = tmp_path / "noval"
    write_color_imagefolder(no_val / "train", {"blue": 2, "red": 2})
    with pytest.raises(DataError, match="has train/ but no val/"):
        resolve_splits(no_val)
    one = tmp_path / "one"
    write_color_imagefolder(one, {"blue": 4})
    with pytest.raises(DataError, match="at least 2 classes"):
        resolve_splits(one)
    # through the command: one line, exit 1, before any Runner exists
    cfg = write_tiny_config(tmp_path / "cfg.py", diff)
    r = run_cli("train", cfg, "--work-dir", str(tmp_path / "wd"))
    assert r.returncode == 1 and "DataError: the classes of" in r.stderr
    assert not (tmp_path / "wd").exists()


def test_single_folder_split_is_seeded_and_stratified(tmp_path):
    write_color_imagefolder(tmp_path, {"blue": 10, "green": 10, "red": 5})
    a = resolve_splits(tmp_path, val_ratio=0.2, seed=3)
    b = resolve_splits(tmp_path, val_ratio=0.2, seed=3)
    c = resolve_splits(tmp_path, val_ratio=0.2, seed=4)
    assert a["train"] == b["train"] and a["val"] == b["val"] and a["val"] != c["val"]
    assert [sum(1 for _, y in a["val"] if y == k) for k in range(3)] == [2, 2, 1]
    assert len(a["train"]) == 20 and not set(a["train"]) & set(a["val"])


def test_make_digits_writes_the_real_dataset(tmp_path):
    r = run_cli("make-digits", str(tmp_path / "digits"))
    assert r.returncode == 0, r.stderr
    info = resolve_splits(tmp_path / "digits")
    assert info["classes"] == [str(d) for d in range(10)]
    assert len(info["train"]) == 1438 and len(info["val"]) == 359  # all 1,797 scans
    with Image.open(info["val"][0][0]) as im:
        assert im.size == (8, 8) and im.mode == "L"
    again = run_cli("make-digits", str(tmp_path / "digits"))
    assert again.returncode == 1 and "exists" in again.stderr


# -- training --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    cfg = write_tiny_config(work / "tiny.py", tiny_root, epochs=3)
    r = run_cli("train", cfg, "--work-dir", str(work / "wd"))
    assert r.returncode == 0, r.stderr[-3000:]
    return work / "wd", r


def test_training_console_is_concise_and_the_full_log_is_in_the_work_dir(trained):
    wd, r = trained
    console = r.stdout + r.stderr
    assert len(console.splitlines()) < 30, console
    for noise in ("System environment", "GPU number", "nccl", "Config:", "Hooks will be executed", "will be deprecated"):
        assert noise not in console
    assert re.search(r"epoch 3/3 +train loss [0-9.]+ +val top-1 [0-9.]+%", r.stderr)
    # one loss figure: the console's per-epoch line is history.json's train_loss (the epoch's mean)
    shown = [float(x) for x in re.findall(r"epoch \d/3 +train loss ([0-9.]+)", r.stderr)]
    history = json.loads((wd / "history.json").read_text())
    assert shown == [float(f"{h['train_loss']:.4f}") for h in history]
    log = Path(re.search(r"full log: (\S+)", r.stdout).group(1))
    assert log.parent.parent == wd
    text = log.read_text()
    assert "System environment" in text and "Hooks will be executed" in text and "Epoch(train)" in text
    if not torch.cuda.is_available():
        assert "nccl" not in text


def test_short_run_writes_checkpoints_pictures_and_metrics(trained):
    wd, r = trained
    assert "val top-1" in r.stdout
    assert (wd / "epoch_3.pth").is_file() and not (wd / "epoch_1.pth").exists()  # last kept
    best = list(wd.glob("best_accuracy_top1_epoch_*.pth"))
    assert len(best) == 1
    # best.pth: the same file under a name the docs can use
    assert (wd / "best.pth").read_bytes() == best[0].read_bytes() and f"best checkpoint: {wd / 'best.pth'}" in r.stdout
    assert (wd / "last_checkpoint").read_text().strip().endswith("epoch_3.pth")
    assert not list(wd.glob(".*.tmp"))  # atomic writes left nothing behind
    for png in ("curves.png", "confusion_matrix.png"):
        with Image.open(wd / png) as im:
            assert im.format == "PNG" and im.size[0] >= 300
    m = json.loads((wd / "metrics.json").read_text())
    final = m["final"]
    assert final["classes"] == ["blue", "green", "red"] and final["count"] == 9
    assert np.array(final["confusion"]).shape == (3, 3) and np.array(final["confusion"]).sum() == 9
    assert set(final["per_class"]) == {"blue", "green", "red"}
    assert final["top5"] is None  # fewer than 5 classes
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert all("train_loss" in h and "accuracy_top1" in h and "lr" in h for h in m["history"])
    ckpt = read_training_checkpoint(wd / "epoch_3.pth")
    assert ckpt["meta"]["dataset_meta"] == {"classes": ("blue", "green", "red")}
    assert ckpt["meta"]["epoch"] == 3 and "optimizer" in ckpt and "param_schedulers" in ckpt
    # paramwise: the backbone learns at half the head's rate (lr_mult=0.5 in the tiny config)
    lrs = sorted({round(g["lr"], 12) for g in ckpt["optimizer"]["param_groups"]})
    assert len(lrs) == 2 and abs(lrs[0] / lrs[1] - 0.5) < 1e-9


def test_resume_needs_exactly_the_allow_listed_types(trained):
    """mmengine checkpoints fail torch.load(weights_only=True) until featx allow-lists their types."""
    wd, _ = trained
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
            torch.load(wd / "epoch_3.pth", weights_only=True)
    finally:
        allow_mmengine_checkpoints()
    assert torch.load(wd / "epoch_3.pth", weights_only=True)["meta"]["epoch"] == 3
    # each allow-listed type is needed: dropping any one makes the load fail
    for dropped in MMENGINE_CHECKPOINT_TYPES:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals([t for t in MMENGINE_CHECKPOINT_TYPES if t is not dropped])
        try:
            with pytest.raises(pickle.UnpicklingError):
                torch.load(wd / "epoch_3.pth", weights_only=True)
        finally:
            allow_mmengine_checkpoints()


class _Crash(Hook):
    """Simulates a kill: raises when epoch ``at`` (0-based) is about to start."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_epoch(self, runner) -> None:
        if runner.epoch == self.at:
            raise KeyboardInterrupt("killed")


class _CountIters(Hook):
    def __init__(self) -> None:
        self.iters: list[tuple[int, float]] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.iters.append((runner.epoch, runner.optim_wrapper.get_lr()["lr"][0]))


def test_kill_and_resume_continues_at_the_right_epoch_with_the_same_lr(tiny_root, tmp_path):
    """With random crops: each epoch's randomness comes from (seed, epoch), so the resumed run's weights are
    the uninterrupted run's (before per-epoch seeds they differed by ~1e-1)."""
    cfg = write_tiny_config(tmp_path / "tiny.py", tiny_root, epochs=4, random_aug=True)
    full = _CountIters()
    train(cfg, work_dir=str(tmp_path / "full"), extra_hooks=[full])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, work_dir=str(tmp_path / "killed"), extra_hooks=[_Crash(at=2)])
    assert find_resume_checkpoint(tmp_path / "killed").name == "epoch_2.pth"
    resumed = _CountIters()
    r = train(cfg, work_dir=str(tmp_path / "killed"), resume="auto", extra_hooks=[resumed])
    # it trained epochs 3 and 4 only (0-based 2, 3), at exactly the learning rates of the uninterrupted run
    assert sorted({e for e, _ in resumed.iters}) == [2, 3]
    assert resumed.iters == [it for it in full.iters if it[0] >= 2]
    a = read_training_checkpoint(tmp_path / "full" / "epoch_4.pth")["state_dict"]
    b = read_training_checkpoint(Path(r["last_checkpoint"]))["state_dict"]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_resume_with_another_seed_in_the_config_takes_the_checkpoints(tiny_root, tmp_path):
    cfg = write_tiny_config(tmp_path / "tiny.py", tiny_root, epochs=2, random_aug=True)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, work_dir=str(tmp_path / "wd"), extra_hooks=[_Crash(at=1)], cfg_options={"randomness.seed": 7})
    prepared = prepare_config(load_config(cfg), work_dir=str(tmp_path / "wd"), resume="auto")
    assert prepared.randomness.seed == 7  # the sampler is built with it, before mmengine reads the checkpoint


def test_the_epoch_line_is_one_line_in_a_redirected_console(capsys):
    from types import SimpleNamespace

    from featx.train.hooks import ProgressHook

    hook = ProgressHook()
    hook.after_train_iter(None, 0, outputs={"loss": torch.tensor(2.5)})
    metrics = {"accuracy/top1": 98.61, "accuracy/top5": 100.0, "accuracy/mean_class": 98.57}
    hook.after_val_epoch(SimpleNamespace(epoch=12, max_epochs=12), metrics)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["epoch 12/12  train loss 2.5000  val top-1 98.61%  top-5 100.00%  mean per-class 98.57%"]


def test_epoch_seeds_differ_by_epoch_rank_and_seed():
    from featx.train.hooks import epoch_seed

    seeds = {epoch_seed(s, e, r) for s in (0, 1, 2**40) for e in range(20) for r in range(4)}
    assert len(seeds) == 3 * 20 * 4 and all(0 <= x < 2**32 for x in seeds)


def _digits_lrs(tiny_root, tmp_path, name, **options):
    counter = _CountIters()
    train(str(REPO / "configs" / "finetune" / "resnet18_digits.py"), work_dir=str(tmp_path / name),
          data_root=str(tiny_root), extra_hooks=[counter], cfg_options={"train_dataloader.batch_size": 3, **options})
    return counter.iters


def test_max_epochs_scales_the_schedule_so_it_anneals_at_the_end(tiny_root, tmp_path):
    """--cfg-options train_cfg.max_epochs=2 on the 12-epoch digits recipe: warm-up then cosine over the 2 epochs
    asked (it used to end the run at lr 0.049 of the 0.05 peak, the cosine still at its top)."""
    iters = _digits_lrs(tiny_root, tmp_path, "two", **{"train_cfg.max_epochs": 2})
    lrs = [lr for _, lr in iters]
    assert sorted({e for e, _ in iters}) == [0, 1] and len(lrs) >= 8
    assert lrs[0] == pytest.approx(0.05 * 0.1)  # the warm-up's start
    peak = lrs.index(max(lrs))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then only decaying
    assert lrs[-1] < 0.1 * max(lrs)  # annealed by the last iteration (unscaled: still at the cosine's top)
    cfg = load_config(REPO / "configs" / "finetune" / "resnet18_digits.py", {"train_cfg.max_epochs": 24})
    warmup, cosine = cfg.param_scheduler
    assert (warmup.end, cosine.begin, cosine.end, cosine.T_max) == (1, 1, 24, 23)
    # a schedule given with the epochs is taken as given
    given = [dict(type="ConstantLR", factor=1.0, by_epoch=True, begin=0, end=3)]
    cfg = load_config(REPO / "configs" / "finetune" / "resnet18_digits.py",
                      {"train_cfg.max_epochs": 3, "param_scheduler": given})
    assert cfg.param_scheduler == given


def test_a_run_shorter_than_its_warm_up_is_refused_with_the_fix():
    shipped = REPO / "configs" / "finetune" / "resnet50_imagefolder.py"  # warm-up: epochs 0-2 of 20
    with pytest.raises(TrainError, match=r"max_epochs=1 is not longer than the schedule's param_scheduler\[0\] "
                                         r"\(LinearLR, epochs 0-2 of the config's 20\)") as refused:
        load_config(shipped, {"train_cfg.max_epochs": 1})
    fix = str(refused.value).split("--cfg-options ")[1].split()
    assert fix == ["train_cfg.max_epochs=1", "param_scheduler.0.end=0.5", "param_scheduler.1.begin=0.5",
                   "param_scheduler.1.end=1", "param_scheduler.1.T_max=0.5"]
    import ast

    cfg = load_config(shipped, {k: ast.literal_eval(v) for k, v in (item.split("=") for item in fix)})  # the fix loads (test_shipped_... runs it)
    assert [(p.begin, p.end) for p in cfg.param_scheduler] == [(0, 0.5), (0.5, 1)]


def test_resuming_with_more_epochs_follows_the_new_length(tiny_root, tmp_path):
    cfg = write_tiny_config(tmp_path / "tiny.py", tiny_root, epochs=2, random_aug=False)
    train(cfg, work_dir=str(tmp_path / "wd"))
    counter = _CountIters()
    r = run_cli("train", cfg, "--work-dir", str(tmp_path / "wd"), "--resume", "--cfg-options",
                "train_cfg.max_epochs=4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming with another schedule length" in r.stdout + r.stderr
    train(cfg, work_dir=str(tmp_path / "wd2"), cfg_options={"train_cfg.max_epochs": 2})
    train(cfg, work_dir=str(tmp_path / "wd2"), resume="auto", cfg_options={"train_cfg.max_epochs": 4},
          extra_hooks=[counter])
    lrs = [lr for e, lr in counter.iters]
    assert sorted({e for e, _ in counter.iters}) == [2, 3]
    assert lrs[-1] < lrs[0]  # still decaying over the two new epochs, not flat at the old end's value


def test_frozen_layers_without_weights_warn(tmp_path, tiny_root):
    from featx.errors import UntrainedFrozenWarning
    from featx.train.runner import untrained_frozen_layers

    shipped = REPO / "configs" / "finetune" / "resnet50_imagefolder.py"
    assert untrained_frozen_layers(load_config(shipped)) is None  # weights="DEFAULT"
    cfg = load_config(shipped, {"model.backbone.weights": None})
    message = untrained_frozen_layers(cfg)
    assert "frozen_stages=1 keeps the stem and stage 1 at their random init" in message
    assert "norm_eval=True" in message and "model.backbone.frozen_stages=-1 model.backbone.norm_eval=False" in message
    with pytest.warns(UntrainedFrozenWarning, match="trains to chance"):
        prepare_config(cfg, work_dir=str(tmp_path / "wd"), data_root=str(tiny_root))
    assert untrained_frozen_layers(load_config(shipped, {"model.backbone.weights": None,
                                                         "model.backbone.frozen_stages": -1,
                                                         "model.backbone.norm_eval": False})) is None
    assert untrained_frozen_layers(load_config(REPO / "configs" / "finetune" / "resnet18_digits.py")) is None


def test_atomic_checkpoint_backend_leaves_nothing_on_failure(tmp_path, monkeypatch):
    backend = AtomicLocalBackend()
    backend.put(b"old", tmp_path / "epoch_1.pth")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        backend.put(b"new" * 1000, tmp_path / "epoch_1.pth")
    assert (tmp_path / "epoch_1.pth").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pth"]


def test_prepare_config_fills_classes_and_refuses_what_cannot_run(tiny_root, tmp_path):
    cfg = load_config(write_tiny_config(tmp_path / "tiny.py", tiny_root))
    ready = prepare_config(cfg, work_dir=str(tmp_path / "wd"))
    assert ready.model.num_classes == 3
    assert ready.default_hooks.checkpoint.backend_args == {"backend": ATOMIC_BACKEND}
    cfg.model.num_classes = 5
    with pytest.raises(DataError, match="model.num_classes is 5 but .* has 3 classes"):
        prepare_config(cfg)
    cfg.model.num_classes = None
    with pytest.raises(TrainError, match="no checkpoint in .* to resume from"):
        prepare_config(cfg, work_dir=str(tmp_path / "fresh"), resume="auto")
    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match="--amp needs a CUDA GPU"):
            prepare_config(cfg, amp=True)
    with pytest.raises(TrainError, match="started by torchrun"):
        prepare_config(cfg, launcher="pytorch")
    r = run_cli("train", str(tmp_path / "tiny.py"), "--amp")
    if not torch.cuda.is_available():
        assert r.returncode == 1 and "--amp needs a CUDA GPU" in r.stderr


# -- predict and export ----------------------------------------------------------------------------
def test_predict_agrees_with_the_validation_metric(trained, tiny_root):
    from featx.images import expand_image_paths
    from featx.train.predict import Predictor

    wd, _ = trained
    best = next(wd.glob("best_accuracy_top1_epoch_*.pth"))
    epoch = int(best.stem.rsplit("_", 1)[1])
    predictor = Predictor(best)
    assert predictor.classes == ["blue", "green", "red"] and predictor.epoch == epoch
    paths = expand_image_paths([tiny_root / "val"])
    preds = predictor.predict(paths, topk=5)
    assert len(preds) == 9 and all(len(p.top) == 3 for p in preds)  # top-k capped at the class count
    for p in preds:
        probs = [t[2] for t in p.top]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
    correct = sum(p.top[0][0] == Path(p.image).parent.name for p in preds)
    history = json.loads((wd / "history.json").read_text())
    best_top1 = next(h["accuracy_top1"] for h in history if h["epoch"] == epoch)
    assert abs(correct / 9 * 100 - best_top1) < 1e-6  # same model, same preprocessing

    r = run_cli("predict", str(best), str(tiny_root / "val" / "red"), str(tiny_root / "train" / "red" / "corrupt.png"),
                "--json", "--topk", "2")
    assert r.returncode == 1  # one unreadable image
    rows = json.loads(r.stdout)
    assert [Path(x["image"]).name for x in rows] == ["000.png", "001.png", "002.png", "corrupt.png"]
    assert rows[-1]["error"].startswith("cannot read as an image")
    assert all(len(x["predictions"]) == 2 and x["predictions"][0]["class"] in predictor.classes for x in rows[:3])


def test_predict_batches_aspect_ratios_apart_and_refuses_huge_resizes(trained, tmp_path):
    from featx.train.data import build_pipeline
    from featx.train.predict import Predictor

    wd, _ = trained
    predictor = Predictor(next(wd.glob("best_accuracy_top1_epoch_*.pth")))
    # a pipeline without a crop (as the digits configs): each image keeps its aspect ratio
    predictor.transform = build_pipeline([dict(type="Resize", size=24, antialias=True), dict(type="ToImage"),
                                          dict(type="ToDtype", dtype="float32", scale=True),
                                          dict(type="Normalize", mean=[0.5] * 3, std=[0.5] * 3)])
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(30, 30), (30, 60), (30, 30), (60, 30)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    Image.new("RGB", (6000, 1)).save(tmp_path / "thin.png")
    batched = predictor.predict(paths + [tmp_path / "thin.png"], topk=3, batch_size=8)
    alone = [predictor.predict([p], topk=3, batch_size=1)[0] for p in paths]
    for b, a in zip(batched, alone):
        assert b.error is None and [t[1] for t in b.top] == [t[1] for t in a.top]
        assert max(abs(x[2] - y[2]) for x, y in zip(b.top, a.top)) < 1e-5
    assert "would be resized to 24x144000" in batched[-1].error and not batched[-1].top


def test_finetuned_classifier_exports_to_onnx_with_parity(trained, tmp_path):
    import onnx

    from featx.deploy.metadata import read_metadata
    from featx.deploy.parity import parity

    wd, _ = trained
    best = next(wd.glob("best_accuracy_top1_epoch_*.pth"))
    out = tmp_path / "clf.onnx"
    r = run_cli("export", str(best), "-o", str(out))  # the default (dynamo) exporter: once failed on forward's arg name
    assert r.returncode == 0, r.stderr
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["logits"]
    meta = read_metadata(out)
    assert meta["input"]["mean"] == [0.5, 0.5, 0.5] and meta["levels"][0]["channels"] == 3
    assert meta["model_config"]["weights"] == str(best.resolve())
    report = parity(out, sizes=[(32, 32), (45, 61)], repeats=0, log=lambda m: None)
    assert report.passed and max(x.rel for x in report.results) < 1e-4


# -- distributed -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run(tiny_root, tmp_path):
    cfg = write_tiny_config(tmp_path / "tiny.py", tiny_root, epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "featx", "train", cfg, "--launcher", "pytorch", "--work-dir", str(tmp_path / "wd")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    log = p.stdout + p.stderr
    run_log = next((tmp_path / "wd").glob("*/*.log")).read_text()
    assert "Distributed launcher: pytorch" in run_log and "Distributed training: True" in run_log
    m = json.loads((tmp_path / "wd" / "metrics.json").read_text())
    assert m["final"]["count"] == 9  # the sharded val results were gathered from both ranks
    assert (tmp_path / "wd" / "epoch_2.pth").is_file()
    # sharded: each rank ran half the 21 training images per epoch -> 2 iterations of batch 6 (mmengine's periodic
    # lines are in the work dir's log; the console has featx's progress: 2 iterations per epoch)
    assert "Epoch(train) [1][2/2]" in run_log
    assert re.search(r"epoch 1/2 .*2/2", log) and "Epoch(train)" not in log


@pytest.mark.slow
def test_digits_config_reaches_its_accuracy(tmp_path):
    """The shipped config on scikit-learn's real digits: >= 98.5% val top-1 (README states the time)."""
    data = tmp_path / "digits"
    assert run_cli("make-digits", str(data)).returncode == 0
    r = run_cli("train", str(REPO / "configs" / "finetune" / "resnet18_digits.py"), "--data-root", str(data),
                "--work-dir", str(tmp_path / "wd"))
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((tmp_path / "wd" / "metrics.json").read_text())["final"]
    assert final["count"] == 359 and final["epoch"] == 12
    assert final["top1"] >= 98.5, final
    print(r.stdout.strip().splitlines()[-4])  # "val top-1 ... (epoch 12, 359 images, N s)"


def test_console_script_train_output_predicts_in_a_subprocess(trained, tiny_root):
    """The installed `featx` command, end to end on the trained checkpoint: --json parses and names the classes."""
    wd, _ = trained
    best = next(wd.glob("best_accuracy_top1_epoch_*.pth"))
    exe = Path(sys.executable).with_name("featx")
    p = subprocess.run([str(exe), "predict", str(best), str(tiny_root / "val" / "blue"), "--json", "--topk", "3"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert len(rows) == 3 and all(r["error"] is None for r in rows)
    assert all(sorted(x["class"] for x in r["predictions"]) == ["blue", "green", "red"] for r in rows)
    table = subprocess.run([str(exe), "predict", str(best), str(tiny_root / "val" / "blue" / "000.png")],
                           capture_output=True, text=True, timeout=300)
    assert table.returncode == 0 and "000.png" in table.stdout and "prob" in table.stdout.splitlines()[0]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tiny_root, tmp_path):
    """A real kill (SIGKILL, no cleanup) while training; --resume continues after the last checkpoint."""
    import signal
    import time

    cfg = write_tiny_config(tmp_path / "tiny.py", tiny_root, epochs=40)
    wd = tmp_path / "wd"
    exe = Path(sys.executable).with_name("featx")
    p = subprocess.Popen([str(exe), "train", cfg, "--work-dir", str(wd)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.time() + 300
        while not (wd / "epoch_2.pth").exists():  # written atomically: it exists only when complete
            assert p.poll() is None and time.time() < deadline, "training ended before its second checkpoint"
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    last = find_resume_checkpoint(wd)
    done = int(last.stem.split("_")[1])
    assert 2 <= done < 40
    read_training_checkpoint(last)  # loads: not truncated
    counter = _CountIters()
    r = train(cfg, work_dir=str(wd), resume="auto", cfg_options={"train_cfg.max_epochs": done + 1},
              extra_hooks=[counter])
    assert {e for e, _ in counter.iters} == {done}  # exactly one more epoch, the next one
    assert Path(r["last_checkpoint"]).name == f"epoch_{done + 1}.pth"


@pytest.mark.slow
def test_shipped_pretrained_config_runs(tiny_root, tmp_path):
    """configs/finetune/resnet50_imagefolder.py as shipped (frozen stages, norm_eval, paramwise backbone LR,
    AdamW, warm-up + cosine), one epoch; weights=None only because nothing can be downloaded here."""
    r = run_cli("train", str(REPO / "configs" / "finetune" / "resnet50_imagefolder.py"), "--data-root", str(tiny_root),
                "--work-dir", str(tmp_path / "wd"), "--cfg-options", "model.backbone.weights=None",
                "train_cfg.max_epochs=1", "param_scheduler.0.end=0.5", "param_scheduler.1.begin=0.5",
                "param_scheduler.1.end=1", "param_scheduler.1.T_max=0.5", "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
                "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False",
                "train_dataloader.batch_size=8")
    assert r.returncode == 0, r.stderr[-3000:]
    # mmengine's warning per frozen parameter (33 for frozen_stages=1) stays in the log file
    assert "requires_grad=False" not in r.stdout + r.stderr and len((r.stdout + r.stderr).splitlines()) < 30
    ckpt = read_training_checkpoint(tmp_path / "wd" / "epoch_1.pth")
    lrs = sorted({round(g["initial_lr"], 15) for g in ckpt["optimizer"]["param_groups"]})
    assert len(lrs) == 2 and abs(lrs[0] / lrs[1] - 0.1) < 1e-9  # backbone at 0.1x the head
    # the optimizer holds exactly the trainable parameters: all but the stem and layer1 (frozen_stages=1), + the head
    from featx.models import create_model

    names = [n for n, _ in create_model("ResNet50").named_parameters()]
    trainable = [n for n in names if not n.startswith(("conv1.", "bn1.", "layer1."))]
    assert len(ckpt["optimizer"]["param_groups"]) == len(trainable) + 2 == len(ckpt["optimizer"]["state"])
    assert json.loads((tmp_path / "wd" / "metrics.json").read_text())["final"]["count"] == 9


@pytest.mark.slow
def test_int8_report_on_the_trained_classifier(trained, tiny_root, tmp_path):
    wd, _ = trained
    best = next(wd.glob("best_accuracy_top1_epoch_*.pth"))
    r = run_cli("int8-report", "--classifier", str(best), "--data", str(tiny_root), "--calib-count", "9",
                "--json", str(tmp_path / "int8.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "int8.json").read_text())["rows"]
    assert [row["runtime"] for row in rows] == ["pytorch fp32", "onnxruntime int8", "openvino int8"]
    epoch = int(best.stem.rsplit("_", 1)[1])
    history = {e["epoch"]: e for e in json.loads((wd / "history.json").read_text())}
    # fp32 is the checkpoint's own validation top-1: the same readable images, the same preprocessing
    assert rows[0]["metric"] == pytest.approx(history[epoch]["accuracy_top1"], abs=1e-6)
    assert all(row["cosine"]["logits"] > 0.98 for row in rows[1:])
    assert "val top-1 (%)" in r.stdout
    from featx.deploy.quantize import overflow_fix_for_this_cpu
    report = json.loads((tmp_path / "int8.json").read_text())
    assert report["overflow_fix"] == overflow_fix_for_this_cpu() and f"int8 overflow fix: {report['overflow_fix']}" in r.stdout
    # the files an AVX2-only CPU should get (7-bit weights in both runtimes), judged here
    r = run_cli("int8-report", "--classifier", str(best), "--data", str(tiny_root), "--calib-count", "9",
                "--overflow-fix", "enable", "--json", str(tmp_path / "int8_7bit.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    seven = json.loads((tmp_path / "int8_7bit.json").read_text())
    assert seven["overflow_fix"] == "enable" and "int8 overflow fix: enable" in r.stdout
    # both quantizers say so: ONNX Runtime's line and NNCF's
    assert "7-bit weights, overflow fix enable: as asked" in r.stderr
    assert any(line.startswith("NNCF:") and "(overflow fix enable: as asked)" in line for line in r.stderr.splitlines())
    assert seven["rows"][0] == rows[0] and all(row["cosine"]["logits"] > 0.98 for row in seven["rows"][1:])


_PLANTED = "import os\nos.system('touch {marker}')\n"


def _planted_checkpoint(trained, tmp_path) -> tuple[Path, Path]:
    """A real checkpoint of `featx train` whose config text begins with a call into os (it writes a marker file
    if anything runs it)."""
    import torch

    from featx.checkpoints import load_checkpoint_file

    wd, _ = trained
    ckpt = load_checkpoint_file(next(wd.glob("best_*.pth")))
    marker = tmp_path / "ran"
    ckpt["meta"]["cfg"] = _PLANTED.format(marker=marker) + ckpt["meta"]["cfg"]
    path = tmp_path / "planted.pth"
    torch.save(ckpt, path)
    return path, marker


def test_a_checkpoints_config_is_read_as_data_never_run(trained, tiny_root, tmp_path):
    from featx.config_text import parse_config_text
    from featx.errors import UnsafeConfigError
    from featx.models import target_config
    from featx.train.predict import Predictor

    # the config featx train writes is plain data, and reads back as the model it trained
    wd, _ = trained
    best = next(wd.glob("best_*.pth"))
    cfg = target_config(str(best))
    assert cfg["type"] in ("ImageClassifier", "featx.ImageClassifier") and cfg["weights"] == str(best.resolve())
    planted, marker = _planted_checkpoint(trained, tmp_path)
    with pytest.raises(UnsafeConfigError, match="line 1: 'import os' is not a `name = value` entry"):
        target_config(str(planted))
    with pytest.raises(UnsafeConfigError, match="meta.cfg"):
        Predictor(planted)
    image = next((tiny_root / "val" / "red").glob("*.png"))
    for args in (("predict", str(planted), str(image)), ("export", str(planted), "-o", str(tmp_path / "p.onnx")),
                 ("int8-report", "--classifier", str(planted), "--data", str(tiny_root))):
        r = run_cli(*args)
        assert r.returncode == 1 and "UnsafeConfigError" in r.stderr and "nothing" in r.stderr, (args, r.stderr)
    assert not marker.exists() and not (tmp_path / "p.onnx").exists()
    # values that are not plain data are refused too, naming the line
    for text, words in (("model = dict(type=__import__('os').getcwd())", "line 1: \"__import__('os').getcwd()\""),
                        ("a = 1\nb = open('x')", "line 2"), ("c = [i for i in range(3)]", "line 1"),
                        ("d = dict(**e)", "line 1")):
        with pytest.raises(UnsafeConfigError, match=re.escape(words)):
            parse_config_text(text)
    assert parse_config_text("m = dict(a=(1, -2.5), b=[None, True], c={'k': 'v'})\nn = -3") == {
        "m": {"a": (1, -2.5), "b": [None, True], "c": {"k": "v"}}, "n": -3}


def test_the_digits_recipe_trains_on_photos_of_other_shapes(tmp_path):
    """Its validation pipeline crops to a square after resizing: batches of non-square photos stack (they did not:
    'stack expects each tensor to be equal size')."""
    rng = np.random.default_rng(0)
    for c, color in enumerate(([200, 30, 30], [30, 200, 30], [30, 30, 200])):
        folder = tmp_path / "photos" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(8):
            h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
            pixels = np.clip(np.array(color) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    r = train(str(REPO / "configs" / "finetune" / "resnet18_digits.py"), work_dir=str(tmp_path / "wd"),
              data_root=str(tmp_path / "photos"), cfg_options={"train_cfg.max_epochs": 2})
    assert r["metrics"]["final"]["count"] == 6 and Path(r["best_checkpoint"]).name == "best.pth"
