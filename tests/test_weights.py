"""Weights: torchvision names through the hub cache (offline), files, wrappers, detection
checkpoints, strictness, unsafe and broken files, and tools/check_weights.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torchvision.models import ResNet50_Weights
from torchvision.models._utils import IntermediateLayerGetter

import featx
from featx import ResNet
from featx.checkpoints import hub_checkpoint_path, read_checkpoint
from featx.errors import CheckpointMismatchError, UnsafeCheckpointError, WeightsError, WeightsUnavailableError
from featx.models import detection_composite
from helpers import place_in_hub_cache, randomize_norm_stats, rel_err

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def _compare_backbone(ours, ref, size=(67, 93)):
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = ours.eval()(x)
        expected = list(IntermediateLayerGetter(ref.eval(), LAYERS)(x).values())
    return max(rel_err(o, r) for o, r in zip(out, expected))


@pytest.fixture(scope="module")
def resnet50_state():
    return randomize_norm_stats(torchvision.models.resnet50(), seed=3).state_dict()


def test_torchvision_enum_names_load_offline_from_hub_cache(torch_home, resnet50_state, monkeypatch):
    v1 = place_in_hub_cache(resnet50_state, ResNet50_Weights.IMAGENET1K_V1.url, monkeypatch)
    assert v1 == torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"  # torchvision's own file name
    ours = featx.create_model("ResNet", depth=50, weights="IMAGENET1K_V1")
    assert ours.load_report.loaded == len(resnet50_state) - 2 == 318 and ours.load_report.dropped == ["fc.bias", "fc.weight"]
    ref = torchvision.models.resnet50(weights="IMAGENET1K_V1")  # torchvision's own loader, same cache
    assert _compare_backbone(ours, ref) <= 1e-5
    # DEFAULT is IMAGENET1K_V2, another file name
    place_in_hub_cache(resnet50_state, ResNet50_Weights.IMAGENET1K_V2.url, monkeypatch)
    assert (torch_home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth").is_file()
    for weights in ("DEFAULT", ResNet50_Weights.IMAGENET1K_V2, "ResNet50_Weights.IMAGENET1K_V2"):
        m = featx.create_model("ResNet", depth=50, weights=weights)
        assert "IMAGENET1K_V2" in m.load_report.source
        assert _compare_backbone(m, ref) <= 1e-5


def test_composite_and_timm_pretrained_fill_the_backbone(torch_home, resnet50_state, monkeypatch):
    place_in_hub_cache(resnet50_state, ResNet50_Weights.IMAGENET1K_V2.url, monkeypatch)
    m = featx.create_model("ResNet50FPN", weights="DEFAULT")
    assert m.load_report.not_in_checkpoint == ["neck"] and "backbone.fc.weight" in m.load_report.dropped
    assert torch.equal(m.backbone.layer3[2].conv2.weight, resnet50_state["layer3.2.conv2.weight"])
    # timm's own pretrained path (pretrained_cfg -> hub cache -> featx's loader), classifier included
    t = timm.create_model("featx_resnet50", pretrained=True, frozen_stages=1)
    assert t.pretrained_cfg["tag"] == "tv2_in1k" and t.load_report.loaded == len(resnet50_state)
    assert torch.equal(t.backbone.bn1.running_var, resnet50_state["bn1.running_var"])
    assert torch.equal(t.fc.weight, resnet50_state["fc.weight"])
    assert not t.backbone.layer1[0].conv1.weight.requires_grad


def test_unknown_enum_name_lists_valid_ones():
    with pytest.raises(WeightsError, match="valid: DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        featx.create_model("ResNet", depth=50, weights="IMAGENET1K_V3")
    with pytest.raises(WeightsError, match="unknown torchvision weights"):
        featx.create_model("ResNet", depth=50, weights="ResNet50_Weights.NOPE")


def test_not_cached_and_no_network_names_the_cache_path(torch_home):
    with pytest.raises(WeightsUnavailableError) as e:
        featx.create_model("ResNet", depth=18, weights="IMAGENET1K_V1")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(torch_home / "hub" / "checkpoints") in msg
    assert "copy it there" in msg
    with pytest.raises(WeightsUnavailableError, match="model.pth is not cached"):
        featx.create_model("ResNet", depth=18, weights="http://127.0.0.1:9/model.pth")  # closed port: no network
    assert not list((torch_home / "hub" / "checkpoints").glob("*"))  # nothing half-written


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "ddp", "safetensors"])
def test_file_formats_and_wrappers(tmp_path, wrap):
    ref = randomize_norm_stats(torchvision.models.resnet18(), seed=1)
    sd = ref.state_dict()
    path = tmp_path / ("w.safetensors" if wrap == "safetensors" else "w.pth")
    if wrap == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd},
               "ddp": {f"module.{k}": v for k, v in sd.items()}}[wrap]
        torch.save(obj, path)
    m = featx.create_model("ResNet", depth=18, weights=str(path))
    assert m.load_report.loaded == len(sd) - 2
    assert _compare_backbone(m, ref) <= 1e-5


def test_mmdet_style_prefixes(tmp_path):
    comp = featx.create_model("ResNet18FPN")
    randomize_norm_stats(comp, seed=2)
    sd = {**comp.state_dict(), "bbox_head.fc_cls.weight": torch.zeros(3, 3), "rpn_head.rpn_conv.weight": torch.zeros(1)}
    torch.save({"state_dict": sd, "meta": {"epoch": 12}}, tmp_path / "det.pth")
    # the whole composite from an mmdet-layout detector checkpoint
    m = featx.create_model("ResNet18FPN", weights=str(tmp_path / "det.pth"))
    assert sorted(m.load_report.dropped) == ["bbox_head.fc_cls.weight", "rpn_head.rpn_conv.weight"]
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), comp.state_dict().values()))
    # a bare backbone takes backbone.* and reports the rest as dropped
    b = featx.create_model("ResNet", depth=18, weights=str(tmp_path / "det.pth"))
    assert b.load_report.key_map == "mmdet backbone.* -> backbone"
    assert any(k.startswith("neck.") for k in b.load_report.dropped)
    assert torch.equal(b.layer4[1].bn2.running_mean, comp.backbone.layer4[1].bn2.running_mean)


def test_wrong_architecture_lists_mismatches(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        featx.create_model("ResNet", depth=50, weights=str(tmp_path / "r18.pth"))
    msg = str(e.value)
    assert "23 shape mismatches (layer1.0.conv1.weight: checkpoint [64, 64, 3, 3] vs model [64, 64, 1, 1]" in msg
    assert "keys missing from the checkpoint" in msg and "layer1.0.conv3.weight" in msg


def test_missing_and_unexpected_keys_are_errors(tmp_path):
    sd = torchvision.models.resnet18().state_dict()
    missing = dict(sd)
    del missing["layer2.1.bn1.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointMismatchError, match=r"1 keys missing.*layer2\.1\.bn1\.weight"):
        featx.create_model("ResNet", depth=18, weights=str(tmp_path / "missing.pth"))
    torch.save({**sd, "layer5.0.conv1.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected keys.*layer5\.0\.conv1\.weight"):
        featx.create_model("ResNet", depth=18, weights=str(tmp_path / "extra.pth"))


def test_truncated_and_corrupt_files(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01not safetensors")
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        read_checkpoint(tmp_path / "truncated.pth")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_checkpoint(tmp_path / "garbage.safetensors")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pth")
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_checkpoint(tmp_path / "nostate.pth")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "evil": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="refused to load .*arbitrary unpickling"):
        featx.create_model("ResNet", depth=18, weights=str(tmp_path / "evil.pth"))
    assert not marker.exists()


DETECTORS = ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn",
             "retinanet_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn"]


@pytest.mark.parametrize("detector", DETECTORS)
def test_torchvision_detection_checkpoints(tmp_path, detector):
    det = torchvision.models.get_model(detector, weights=None, weights_backbone=None)
    randomize_norm_stats(det, seed=4)
    with torch.no_grad():
        for name, p in det.backbone.fpn.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    torch.save(det.state_dict(), tmp_path / "det.pth")
    m = detection_composite(detector, weights=str(tmp_path / "det.pth")).eval()
    assert m.load_report.key_map == "torchvision detection -> featx"
    assert m.load_report.dropped and all(k.startswith(("rpn.", "roi_heads.", "head.")) for k in m.load_report.dropped)
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        out = m(x)
        ref = det.eval().backbone(x)
    assert [f.name for f in m.feature_info] == (["P3", "P4", "P5", "P6", "P7"] if "retina" in detector
                                                 else ["P2", "P3", "P4", "P5", "P6"])
    assert len(out) == len(ref) == 5
    for level, (o, r) in enumerate(zip(out, ref.values())):
        assert rel_err(o, r) <= 1e-5, f"{detector} level {level}"


def test_detection_enum_loads_from_hub_cache(torch_home, monkeypatch):
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights as W

    det = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    randomize_norm_stats(det, seed=5)
    path = place_in_hub_cache(det.state_dict(), W.COCO_V1.url, monkeypatch)
    assert path.name == "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
    m = detection_composite("fasterrcnn_resnet50_fpn", weights="COCO_V1").eval()
    # torchvision's own detector on the same cached file (its builder sets FrozenBatchNorm eps 0 for COCO_V1)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="COCO_V1").eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert max(rel_err(o, r) for o, r in zip(m(x), tv.backbone(x).values())) <= 1e-5
    # the qualified enum name works on the composite directly
    q = featx.create_model("ResNet50FPN", weights="FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    # every tensor of each model came from the file (FrozenBN in the preset has no step counters)
    assert q.load_report.loaded == len(q.state_dict()) == 334 and m.load_report.loaded == len(m.state_dict()) == 281
    with pytest.raises(WeightsError, match="valid: DEFAULT, COCO_V1"):
        detection_composite("fasterrcnn_resnet50_fpn", weights="COCO_V9")
    with pytest.raises(WeightsError, match="did you mean fasterrcnn_resnet50_fpn"):
        detection_composite("fasterrcnn_resnet50fpn")


def test_detection_checkpoint_into_wrong_pyramid_is_a_clear_error(tmp_path):
    det = torchvision.models.get_model("retinanet_resnet50_fpn_v2", weights=None, weights_backbone=None)
    torch.save(det.state_dict(), tmp_path / "retina.pth")
    with pytest.raises(CheckpointMismatchError, match="neck.lateral_convs.0.conv.weight: checkpoint .256, 512, 1, 1. vs model .256, 256, 1, 1."):
        featx.create_model("ResNet50FPN", weights=str(tmp_path / "retina.pth"))


# -- tools/check_weights.py ------------------------------------------------------------------
def _tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "check_weights.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_check_weights_tool_passes_and_fails_on_perturbed_tensor(tmp_path):
    ref = randomize_norm_stats(torchvision.models.resnet18(), seed=6)
    torch.save(ref.state_dict(), tmp_path / "good.pth")
    bad = ref.state_dict()
    bad["layer3.0.conv1.weight"] = bad["layer3.0.conv1.weight"] * 1.01
    torch.save(bad, tmp_path / "perturbed.pth")

    ok = _tool("ResNet18", "--weights", str(tmp_path / "good.pth"), "--sizes", "64x64", "61x83",
               "--json", str(tmp_path / "good.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[PASS]" in ok.stdout and "318 tensors loaded" not in ok.stdout and "120 tensors loaded" in ok.stdout
    report = json.loads((tmp_path / "good.json").read_text())
    assert report["passed"] and len(report["reports"][0]["levels"]) == 8

    fail = _tool("ResNet18", "--weights", str(tmp_path / "perturbed.pth"), "--reference-weights",
                 str(tmp_path / "good.pth"), "--sizes", "64x64", "--json", str(tmp_path / "bad.json"))
    assert fail.returncode == 1
    assert "failing levels: C4, C5" in fail.stdout
    levels = json.loads((tmp_path / "bad.json").read_text())["reports"][0]["levels"]
    assert [lv["passed"] for lv in levels] == [True, True, False, False]


def test_check_weights_all_random_offline(tmp_path):
    from helpers import run_cli

    r = run_cli("check-weights", "--all", "--pattern", "resnet18*", "--sizes", "64x64", "--json", str(tmp_path / "all.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 0 failed" in r.stdout
    data = json.loads((tmp_path / "all.json").read_text())
    assert [x["model"] for x in data["reports"]] == ["ResNet18", "ResNet18FPN", "ResNet18RetinaFPN"]


def test_check_weights_bad_usage():
    from helpers import run_cli

    r = run_cli("check-weights", "ResNet51FPN", "--sizes", "64x64")
    assert r.returncode == 1 and "did you mean ResNet50FPN" in r.stdout
    r = run_cli("check-weights")
    assert r.returncode != 0 and "give a MODEL or --all" in r.stderr
