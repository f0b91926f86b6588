"""The demo and the preprocessing it uses."""
from __future__ import annotations

import pytest
import torch

from featx import demo
from featx.images import detection_batch, load_image, sample_image_path


def test_sample_photo_preprocessed_like_torchvision_detection():
    img = load_image(sample_image_path())
    assert img.shape == (3, 600, 512) and 0 <= img.min() and img.max() <= 1
    batch = detection_batch([img])
    # shorter side 512 -> 800 (x1.5625), 600 -> 937.5, padded up to a multiple of 32
    assert batch.shape == (1, 3, 960, 800)
    # normalized with ImageNet mean/std: dark pixels go well below 0 (raw images are >= 0)
    content = batch[0, :, :937]
    assert content.min() < -1.5 and content.max() > 1.5
    assert batch[0, :, 940:, :].abs().max() == 0  # padding rows are zero


def test_demo_prints_pyramid_table(capsys, tmp_path):
    assert demo.run_demo("ResNet18FPN", export=False, export_dir=str(tmp_path), log=lambda m: None) == 0
    assert (tmp_path / "ResNet18FPN_features.png").is_file()
    out = capsys.readouterr().out
    assert "input 1x3x960x800" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("P")]
    assert rows == [["P2", "4", "256", "1x256x240x200"], ["P3", "8", "256", "1x256x120x100"],
                    ["P4", "16", "256", "1x256x60x50"], ["P5", "32", "256", "1x256x30x25"],
                    ["P6", "64", "256", "1x256x15x13"]]
    assert "forward:" in out


def test_bad_image(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(bad)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
