"""LeNet-5: the classic small-image extractor (S2, S4, C5), its variants, checks, export and fine-tuning."""
from __future__ import annotations

import pytest
import torch
from mmengine.registry import MODELS as ROOT
from torch import nn

import featx
from featx.deploy.metadata import read_metadata
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.parity import parity


def test_levels_shapes_and_the_papers_layer_sizes():
    m = featx.create_model("LeNet5").eval()
    assert [(f.name, f.channels, f.stride) for f in m.feature_info] == [("S2", 6, 2), ("S4", 16, 4), ("C5", 120, 4)]
    with torch.no_grad():
        outs = m(torch.rand(2, 1, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 6, 14, 14), (2, 16, 5, 5), (2, 120, 1, 1)]
    # C1 6@5x5 (156 parameters), C3 16@5x5 on all six maps, C5 120@5x5: the paper's C5 has 48,120
    assert m.conv1.weight.shape == (6, 1, 5, 5) and m.conv3.weight.numel() + m.conv3.bias.numel() == 48120
    with torch.no_grad():  # larger inputs keep stride 4 at C5 (a valid 5x5 conv)
        assert [tuple(o.shape[-2:]) for o in m(torch.rand(1, 1, 64, 48))] == [(30, 22), (13, 9), (9, 5)]


def test_classic_and_modern_styles():
    classic, modern = featx.create_model("LeNet5"), featx.create_model("LeNet5", style="modern")
    assert isinstance(classic.act1, nn.Tanh) and isinstance(classic.pool1, nn.AvgPool2d)
    assert isinstance(modern.act1, nn.ReLU) and isinstance(modern.pool1, nn.MaxPool2d)
    with torch.no_grad():  # tanh bounds every map to (-1, 1); ReLU maps are >= 0
        assert all(o.abs().max() < 1 for o in classic.eval()(torch.randn(1, 1, 32, 32) * 10))
        assert all(o.min() >= 0 for o in modern.eval()(torch.randn(1, 1, 32, 32)))
    with pytest.raises(ValueError, match="style must be one of"):
        featx.create_model("LeNet5", style="sigmoid")


def test_rgb_out_indices_freezing_and_errors():
    m = featx.create_model("LeNet5", in_channels=3, out_indices=(1, 2), frozen_stages=1).train()
    assert [f.name for f in m.feature_info] == ["S4", "C5"] and m.channels == [16, 120]
    assert not m.conv1.weight.requires_grad and m.conv2.weight.requires_grad
    with torch.no_grad():
        assert [o.shape[1] for o in m(torch.rand(1, 3, 32, 32))] == [16, 120]
    with pytest.raises(ValueError, match="needs inputs of at least 32x32"):
        m(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match="3 input channels"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        featx.create_model("LeNet5", out_indices=(3,))


def test_registered_in_mmengine_and_timm():
    import timm

    assert type(ROOT.build(dict(type="featx.LeNet5", style="modern"))).__name__ == "LeNet5"
    t = timm.create_model("featx_lenet5", num_classes=10).eval()
    with torch.no_grad():
        assert t(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    f = timm.create_model("featx_lenet5", features_only=True)
    assert f.feature_info.reduction() == [2, 4, 4] and f.feature_info.channels() == [6, 16, 120]
    assert "LeNet5FPN" not in featx.list_models()  # small images, not detection


def test_export_and_parity(tmp_path):
    path = tmp_path / "lenet5.onnx"
    r = export_onnx("LeNet5", path, ExportSettings(), log=lambda m: None)
    assert [o["name"] for o in r.outputs] == ["s2", "s4", "c5"] and r.inputs[0]["shape"][1] == 1
    meta = read_metadata(path)
    assert meta["input"]["channels"] == 1 and meta["input"]["color"] == "gray" and meta["input"]["min_size"] == 32
    p = parity(path, sizes=[(32, 32), (45, 61)], batches=[1, 3], repeats=0, log=lambda m: None)
    assert p.passed and len(p.results) == 9 and max(x.rel for x in p.results) < 1e-5


def test_classifier_head_with_f6():
    from featx.models.classifier import ImageClassifier

    model = ImageClassifier(dict(type="featx.LeNet5", out_indices=(2,)), num_classes=10, hidden_channels=84,
                            hidden_act="Tanh").eval()
    assert model.head.hidden[0].weight.shape == (84, 120) and model.head.fc.weight.shape == (10, 84)
    with torch.no_grad():
        assert model(torch.rand(4, 1, 32, 32)).shape == (4, 10)


@pytest.mark.slow
def test_lenet5_digits_config_trains_to_its_accuracy(tmp_path):
    """configs/finetune/lenet5_digits.py on scikit-learn's real digits, from scratch (README states the run)."""
    import json

    from helpers import run_cli

    data = tmp_path / "digits"
    assert run_cli("make-digits", str(data)).returncode == 0
    r = run_cli("train", "configs/finetune/lenet5_digits.py", "--data-root", str(data), "--work-dir", str(tmp_path / "wd"))
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((tmp_path / "wd" / "metrics.json").read_text())["final"]
    assert final["count"] == 359 and final["epoch"] == 30
    assert final["top1"] >= 97.5, final  # measured 98.61 (354 of 359)
