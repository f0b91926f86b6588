"""The backbone zoo: VGG, AlexNet, GoogLeNet, Inception-v3, DenseNet, MobileNet, SE/SK/ResNeSt, TimmBackbone."""
from __future__ import annotations

import math
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from helpers import place_in_hub_cache, rel_err
from torch.nn.modules.batchnorm import _BatchNorm

from featx import TimmBackbone
from featx.check import check_weights
from featx.models import CATALOG, create_model
from featx.checkpoints import hub_checkpoint_path
from featx.errors import CheckpointMismatchError, WeightsUnavailableError
from featx.registry import MODELS

# the backbones check-weights compares alone with their source library's model (ResNets are checked with their
# pyramid in test_weights; LeNet-5 has no reference library and no pyramid: tests/test_lenet.py covers it)
ZOO = [n for n, e in CATALOG.items()
       if e.kind == "backbone" and e.family.source != "featx" and not e.family.base.has_torchvision_fpn]
# one variant per family for the slower checks (ONNX, freezing)
PER_FAMILY = ["VGG11BN", "AlexNet", "GoogLeNet", "InceptionV3", "DenseNet121", "MobileNetV3Large", "SEResNet50",
              "SKResNet18", "ResNeSt50d"]
INEXACT = {"AlexNet", "InceptionV3"}  # unpadded convs/pools: strides are nominal


def sizes_for(name: str) -> list[tuple[int, int]]:
    return [(96, 96), (107, 131)] if name == "InceptionV3" else [(64, 64), (67, 93)]


@lru_cache(maxsize=None)
def composite(name: str):
    torch.manual_seed(0)
    return create_model(f"{name}FPN").eval()


def test_the_catalogue_has_every_variant_of_the_issue():
    assert set(ZOO) >= set([
        "VGG11", "VGG11BN", "VGG13", "VGG13BN", "VGG16", "VGG16BN", "VGG19", "VGG19BN", "AlexNet", "GoogLeNet",
        "InceptionV3", "DenseNet121", "DenseNet161", "DenseNet169", "DenseNet201", "MobileNetV2", "MobileNetV3Large",
        "MobileNetV3Small", "SEResNet50", "SEResNet101", "SEResNeXt50_32x4d", "SKResNet18", "SKResNet34",
        "SKResNeXt50_32x4d", "ResNeSt50d", "ResNeSt101e"])
    for name in ZOO:
        assert MODELS.get(f"featx.{name}FPN") is not None and MODELS.get(f"featx.{name}") is not None


@pytest.mark.parametrize("name", ZOO)
def test_shapes_strides_and_fpn(name):
    model = composite(name)
    backbone = model.backbone
    assert [f.name for f in backbone.feature_info] == ["C2", "C3", "C4", "C5"]
    assert backbone.strides == [4, 8, 16, 32]
    for h, w in sizes_for(name):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            feats = backbone(x)
            pyramid = model(x)
        assert [f.shape[1] for f in feats] == backbone.channels
        sides = [tuple(f.shape[-2:]) for f in feats]
        assert all(a[0] >= b[0] and a[1] >= b[1] for a, b in zip(sides, sides[1:]))  # coarser each level
        if name not in INEXACT:  # every map is H/stride, rounded down or up
            for (fh, fw), s in zip(sides, backbone.strides):
                assert fh in (h // s, math.ceil(h / s)) and fw in (w // s, math.ceil(w / s)), (name, sides)
        assert len(pyramid) == 5 and all(p.shape[1] == 256 for p in pyramid)
        assert tuple(pyramid[0].shape[-2:]) == sides[0]  # P2 at C2's size, whatever its stride


def test_inexact_families_report_their_documented_sizes():
    with torch.no_grad():
        alex = [tuple(f.shape[-2:]) for f in composite("AlexNet").backbone(torch.randn(1, 3, 224, 224))]
        incep = [tuple(f.shape[-2:]) for f in composite("InceptionV3").backbone(torch.randn(1, 3, 299, 299))]
    assert alex == [(55, 55), (27, 27), (13, 13), (6, 6)]
    assert incep == [(71, 71), (35, 35), (17, 17), (8, 8)]
    with pytest.raises(ValueError, match="at least 75x75"):
        composite("InceptionV3").backbone(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("name", ZOO)
def test_equivalent_to_the_reference_library(name):
    """torchvision create_feature_extractor / timm features_only, same random checkpoint, fp32, 1e-5."""
    report = check_weights(name, sizes=sizes_for(name), batch=1)
    assert report.error is None, report.error
    assert report.passed and len(report.levels) == 8, report.to_dict()
    assert max(r.max_rel for r in report.levels) <= 1e-5
    dropped = report.load["dropped"]
    assert dropped and all(k.split(".")[0] in ("fc", "classifier", "aux1", "aux2", "AuxLogits") for k in dropped)


def test_transform_input_follows_torchvision():
    from torchvision.models import googlenet

    assert create_model("GoogLeNet").transform_input is False
    ref = googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.pth"
        torch.save(ref.state_dict(), path)
        model = create_model("GoogLeNet", weights=str(path)).eval()  # weights given -> transform_input
    assert model.transform_input is True
    from torchvision.models.feature_extraction import create_feature_extractor

    getter = create_feature_extractor(ref, {"inception5b": "c5"})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(model(x)[-1], getter(x)["c5"]) < 1e-5
    with pytest.raises(ValueError, match="GoogLeNet/Inception-v3 only"):
        create_model("VGG11", transform_input=True)


@pytest.mark.parametrize("name", PER_FAMILY)
def test_frozen_stages_and_norm_eval(name):
    model = create_model(name, frozen_stages=2, norm_eval=True)
    frozen = {id(p) for m in model.frozen_modules() for p in m.parameters()}
    stem_and_two = {id(p) for m in model.stem_modules() for p in m.parameters()}
    stem_and_two |= {id(p) for i in (0, 1) for p in model.stage_module(i).parameters()}
    assert frozen == stem_and_two and frozen
    model.train()
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in frozen)
    later = {id(p) for i in (2, 3) for p in model.stage_module(i).parameters()}
    assert later and not later & frozen
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            assert not m.training  # norm_eval: running statistics even in train()
    # a training step leaves the frozen part unchanged
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    size = 96 if name == "InceptionV3" else 64
    sum(f.mean() for f in model(torch.randn(2, 3, size, size))).backward()
    opt.step()
    stem_names = set(model.stem_names) | set(model.stage_names[0]) | set(model.stage_names[1])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and not any(k.startswith(tuple(n + "." for n in stem_names)) for k in changed)


@pytest.mark.parametrize("name", PER_FAMILY)
def test_bad_input_errors(name):
    model = composite(name).backbone
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.randn(1, 4, 96, 96))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(3, 96, 96))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 96, 96, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out_indices"):
        create_model(name, out_indices=(0, 4))


@pytest.mark.slow
@pytest.mark.parametrize("name", PER_FAMILY)
def test_onnx_export_and_ort_parity(name, tmp_path):
    from featx.deploy.onnx_export import ExportSettings, export_onnx
    from featx.deploy.parity import parity

    out = tmp_path / f"{name}.onnx"
    export_onnx(name, out, ExportSettings(exporter="torchscript"), log=lambda m: None)
    report = parity(out, sizes=sizes_for(name), batches=(1,), repeats=0, log=lambda m: None)
    assert report.passed, report.to_dict()
    assert [r.output for r in report.results[:4]] == ["c2", "c3", "c4", "c5"]
    assert max(r.rel for r in report.results) < 5e-4


def test_out_indices_select_levels():
    model = create_model("MobileNetV2", out_indices=(1, 3)).eval()
    assert [f.name for f in model.feature_info] == ["C3", "C5"] and model.channels == [32, 1280]
    with torch.no_grad():
        assert [tuple(f.shape) for f in model(torch.randn(1, 3, 64, 64))] == [(1, 32, 8, 8), (1, 1280, 2, 2)]


# -- TimmBackbone: any timm model -----------------------------------------------------------------
@pytest.mark.parametrize("model_name,chain", [("convnext_atto", True), ("efficientnet_b0", False)])
def test_timm_backbone_any_model(model_name, chain, tmp_path):
    """C2..C5 by stride whatever timm's indexing, timm keys (flattened names mapped), freezing."""
    import timm

    full = timm.create_model(model_name).eval()
    path = tmp_path / "full.pth"
    torch.save(full.state_dict(), path)
    model = create_model("TimmBackbone", model_name=model_name, weights=str(path), frozen_stages=1).eval()
    assert model.chain is chain and model.strides == [4, 8, 16, 32]
    assert model.load_report.dropped  # the classifier side of the checkpoint, reported
    ref = timm.create_model(model_name, features_only=True, out_indices=model.timm_feature_indices)
    full_keys = list(full.state_dict())
    ref.load_state_dict({k: full.state_dict()[full_keys[i]] for i, k in enumerate(ref.state_dict())}, strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for o, r in zip(model(x), ref.eval()(x)):
            assert o.shape == r.shape and rel_err(o, r) <= 1e-5
    trainable = [p.requires_grad for p in model.parameters()]
    assert not all(trainable) and any(trainable)


def test_timm_backbone_errors():
    with pytest.raises(ValueError, match="unknown timm model 'resnet5O'"):
        TimmBackbone("resnet5O")
    with pytest.raises(ValueError, match="featx needs \\[4, 8, 16, 32\\] in that order"):
        TimmBackbone("vit_tiny_patch16_224")
    with pytest.raises(TypeError, match="sets features_only itself"):
        TimmBackbone("resnet18", features_only=True)
    with pytest.raises(WeightsUnavailableError, match="timm has no pretrained weights 'seresnet101'"):
        create_model("SEResNet101", weights="DEFAULT")


def test_timm_pretrained_loads_through_timms_hub_cache(tmp_path, monkeypatch):
    """weights="DEFAULT" goes through timm.create_model(pretrained=True): a Hugging Face cache entry
    in timm's exact layout and file name is what it reads offline."""
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    hub_id = timm.models.get_pretrained_cfg("skresnet18").hf_hub_id  # "timm/skresnet18.ra_in1k"
    torch.manual_seed(3)
    source = timm.create_model("skresnet18").eval()
    revision = "1" * 40
    repo = tmp_path / ("models--" + hub_id.replace("/", "--"))
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              str(repo / "snapshots" / revision / "model.safetensors"))
    model = create_model("SKResNet18FPN", weights="DEFAULT")
    assert "timm skresnet18" in model.load_report.source and model.load_report.not_in_checkpoint == ["neck"]
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items() if k in own)
    with pytest.raises(WeightsUnavailableError, match="could not load pretrained skresnet34"):
        create_model("SKResNet34", weights="DEFAULT")


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    from torchvision.models import vgg13

    path = tmp_path / "vgg13.pth"
    torch.save(vgg13(weights=None).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="does not fit VGG"):
        create_model("VGG11", weights=str(path))


def test_torchvision_weights_by_name_through_the_hub_cache(tmp_path, monkeypatch):
    """weights="DEFAULT" resolves torchvision's enum and reads $TORCH_HOME/hub/checkpoints/<its file name>."""
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small


    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    url = MobileNet_V3_Small_Weights.DEFAULT.url
    torch.manual_seed(5)
    source = mobilenet_v3_small(weights=None)
    path = place_in_hub_cache(source.state_dict(), url, monkeypatch)
    assert path.name == Path(url).name and path == hub_checkpoint_path(url) and str(tmp_path) in str(path)
    model = create_model("MobileNetV3SmallFPN", weights="DEFAULT")
    assert "MobileNet_V3_Small_Weights.IMAGENET1K_V1" in model.load_report.source
    assert model.load_report.not_in_checkpoint == ["neck"]
    assert sorted({k.split(".")[1] for k in model.load_report.dropped}) == ["classifier"]
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items() if k in own)


def test_timm_weights_offline_fail_at_once_without_hub_retries(tmp_path, monkeypatch):
    """Not in the Hugging Face cache and the hub unreachable: featx's error comes before huggingface_hub's minute
    of retries (~20 lines), by featx's API and by timm's entry point alike."""
    import socket

    import huggingface_hub
    import huggingface_hub.constants as hf
    import timm

    import featx.integrations.timm  # noqa: F401  (registers featx_*)

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)

    def no_route(address, timeout=None, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def must_not_download(*args, **kwargs):
        raise AssertionError("huggingface_hub was asked to download")

    monkeypatch.setattr(socket, "create_connection", no_route)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_download)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", must_not_download, raising=False)
    with pytest.raises(WeightsUnavailableError, match=r"not in the Hugging Face cache .*huggingface.co:443 cannot be "
                                                      r"reached \(gaierror"):
        create_model("SEResNet50", weights="DEFAULT")
    with pytest.raises(WeightsUnavailableError, match=r"featx_seresnet50: its pretrained weights are not in "
                                                      r"hf-hub:timm/seresnet50.*cannot be reached"):
        timm.create_model("featx_seresnet50", pretrained=True)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE is set"):
        create_model("SEResNet50", weights="DEFAULT")
