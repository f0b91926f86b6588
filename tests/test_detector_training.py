"""The shapes dataset (valid COCO, exact boxes) and a short detector training run."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from pycocotools.coco import COCO

from featx.detection.shapes import CATEGORIES, make_shapes_dataset, render_image
from helpers import run_cli


def test_shapes_boxes_are_exact():
    rng = random.Random(3)
    checked = 0
    for _ in range(20):
        img, objects = render_image(rng, size=128)
        pixels = np.array(img)
        for o in objects:
            x, y, w, h = o["bbox"]
            mask = o["mask"]
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            # the object was drawn exactly where its mask is, in its colour
            assert (pixels[mask] == np.array(o["colour"], dtype=np.uint8)).all()
            # the box is tight: every edge of it touches the object, nothing of it lies outside
            assert mask[y, x:x + w].any() and mask[y + h - 1, x:x + w].any()
            assert mask[y:y + h, x].any() and mask[y:y + h, x + w - 1].any()
            assert mask.sum() == mask[y:y + h, x:x + w].sum() == o["area"]
            checked += 1
    assert checked > 40


def test_shapes_dataset_is_valid_coco(tmp_path):
    paths = make_shapes_dataset(tmp_path, num_train=12, num_val=4, seed=1)
    coco = COCO(str(paths["train"]))
    assert len(coco.getImgIds()) == 12 and [c["name"] for c in coco.loadCats(coco.getCatIds())] == \
        [c["name"] for c in CATEGORIES]
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and all(a["iscrowd"] == 0 and a["area"] > 0 for a in anns)
    for img in coco.loadImgs(coco.getImgIds()):
        assert (tmp_path / "train" / img["file_name"]).is_file()
    for a in anns:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 1 and h >= 1
    data = json.loads(paths["val"].read_text())
    assert len(data["images"]) == 4


@pytest.mark.slow
def test_short_detector_training_halves_the_loss(tmp_path):
    r = run_cli("train-detector", str(tmp_path / "shapes"), "--make-shapes", "--num-train", "16", "--num-val", "8",
                "--iters", "80", "--warmup", "10", "--batch", "4", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    first, last = metrics["loss_first10"], metrics["loss_last10"]
    assert metrics["iters"] == 80
    start, end = sum(first[:3]) / 3, sum(last) / len(last)  # the first iterations vs the last ten
    assert end <= 0.5 * start, (first, last)
    assert (tmp_path / "out" / "detector.pth").is_file()
    assert "val COCO bbox: mAP@0.5" in r.stdout
    # int8 on these trained weights: the pyramid quantized by ONNX Runtime and by NNCF, inside the detector
    report = tmp_path / "int8.json"
    r = run_cli("int8-report", "--detector", str(tmp_path / "out" / "detector.pth"), "--data", str(tmp_path / "shapes"),
                "--calib-count", "8", "--json", str(report))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(report.read_text())["rows"]
    assert [row["runtime"] for row in rows] == ["pytorch fp32", "onnxruntime int8", "openvino int8"]
    assert rows[0]["metric"] == metrics["metrics"]["mAP50"]  # the same detector, evaluated the same way
    for row in rows[1:]:
        assert set(row["cosine"]) == {"P2", "P3", "P4", "P5", "P6"} and min(row["cosine"].values()) > 0.95
        assert 0.0 <= row["metric"] <= 1.0


def test_the_schedule_fits_the_time_limit_by_measured_speed():
    from featx.detection.train import fitted_schedule

    assert fitted_schedule(500, done=15, elapsed_s=10.0, limit_s=120.0, rate=0.5) == 67  # 15 + 0.5 * 110 * 0.95
    assert fitted_schedule(500, done=15, elapsed_s=1.0, limit_s=600.0, rate=2.0) == 500  # fits: unchanged
    assert fitted_schedule(500, done=15, elapsed_s=100.0, limit_s=10.0, rate=1.0) == 16  # at least one more


def test_a_run_cut_by_minutes_says_so(tmp_path):
    r = run_cli("train-detector", str(tmp_path / "shapes"), "--make-shapes", "--num-train", "8", "--num-val", "4",
                "--iters", "500", "--warmup", "10", "--batch", "2", "--minutes", "0.03", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["cut"] and metrics["iters"] < metrics["schedule_iters"] == metrics["iters_requested"] == 500
    assert "stopped by the time limit (0.03 min)" in r.stdout
    assert f"after {metrics['iters']} of 500 iterations" in r.stdout and "partly trained detector" in r.stdout


def test_a_fitted_schedule_says_so(tmp_path):
    """The schedule is fitted from the pace of iterations 5-15, so the time limit must leave room for 15 of them on
    a loaded 2-CPU machine (0.2 min: about five times what they take on an idle one)."""
    r = run_cli("train-detector", str(tmp_path / "shapes"), "--make-shapes", "--num-train", "8", "--num-val", "4",
                "--iters", "5000", "--warmup", "10", "--batch", "2", "--minutes", "0.2", "--fit-schedule",
                "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 15 < metrics["schedule_iters"] < 5000 and "the schedule is shortened to" in r.stdout
    assert metrics["cut"] == (metrics["iters"] < metrics["schedule_iters"])


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_detector_trains_on_cuda(tmp_path):
    r = run_cli("train-detector", str(tmp_path / "shapes"), "--make-shapes", "--num-train", "8", "--num-val", "4",
                "--iters", "10", "--warmup", "2", "--batch", "2", "--device", "cuda", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["iters"] == 10
