"""mmengine and timm registries: every build path from the Core issue."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from mmengine.registry import MODELS as ROOT
from mmengine.registry import DefaultScope, Registry
from torch import nn

import featx
from featx import FPN, BackboneFPN, ResNet
from featx.models import CATALOG, create_model

# What mmdet's registry is: a child of mmengine's root with its own scope. It also has its own
# FPN and ResNet, which must never be picked up by featx.
FAKEDET = Registry("model", parent=ROOT, scope="fakedet")


@FAKEDET.register_module(name="FPN")
class HijackFPN(nn.Module):
    def __init__(self, *a, **k):
        raise AssertionError("featx built another package's FPN from a bare name")


@FAKEDET.register_module(name="ResNet")
class HijackResNet(nn.Module):
    def __init__(self, *a, **k):
        raise AssertionError("featx built another package's ResNet from a bare name")


SMALL = dict(type="featx.ResNet18FPN", neck=dict(out_channels=16))


@pytest.mark.parametrize("registry", [ROOT, FAKEDET, featx.MODELS], ids=["root", "sibling", "featx"])
@pytest.mark.parametrize("default_scope", [None, "fakedet", "mmdet", "featx"])
def test_build_composite(registry, default_scope):
    cfgs = [SMALL, dict(type="featx.ResNet", depth=18), dict(type="featx.FPN", in_channels=[8, 16], out_channels=8, num_outs=3)]
    expected = [(BackboneFPN, "ResNet18FPN"), (ResNet, "ResNet"), (FPN, "FPN")]
    with DefaultScope.overwrite_default_scope(default_scope):  # None: no default scope
        if default_scope is not None:
            assert DefaultScope.get_current_instance().scope_name == default_scope
        built = [registry.build(dict(c)) for c in cfgs]
    assert [(type(b), b.name) for b in built] == expected


def test_bare_names_inside_featx_are_not_hijacked():
    cfg = dict(type="featx.BackboneFPN", backbone=dict(type="ResNet", depth=18),
               neck=dict(type="FPN", out_channels=8, num_outs=5))
    with DefaultScope.overwrite_default_scope("fakedet"):
        m = FAKEDET.build(cfg)
    assert isinstance(m.backbone, ResNet) and isinstance(m.neck, FPN)
    with torch.no_grad():
        assert len(m.eval()(torch.rand(1, 3, 64, 64))) == 5


def test_every_catalog_model_builds_from_a_downstream_config():
    """dict(type="featx.<name>") in another library's scope builds the catalogue model: the same pyramid as
    create_model's (built on the meta device: no weights are computed)."""
    with torch.device("meta"), DefaultScope.overwrite_default_scope("fakedet"):
        for name in CATALOG:
            built, direct = FAKEDET.build(dict(type=f"featx.{name}")), create_model(name)
            assert type(built) is type(direct) and built.feature_info == direct.feature_info, name


def test_auto_import_in_fresh_interpreter():
    code = textwrap.dedent("""
        import sys
        from mmengine.registry import MODELS, Registry
        assert "featx" not in sys.modules
        m = MODELS.build(dict(type="featx.ResNet50FPN"))
        print(type(m).__module__, type(m).__name__, m.out_channels, m.strides)
        sibling = Registry("model", parent=MODELS, scope="otherdet")
        print(type(sibling.build(dict(type="featx.FPN", in_channels=[4, 8], out_channels=4, num_outs=2))).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["featx.models.composite BackboneFPN 256 [4, 8, 16, 32, 64]", "FPN"]


def test_fine_tuning_pieces_resolve_from_mmengines_root_registries_in_a_fresh_interpreter():
    """A downstream config names them with the featx. prefix; nothing needs importing first."""
    code = textwrap.dedent("""
        import sys
        from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
        assert "featx" not in sys.modules
        print(DATASETS.get("featx.ImageFolderDataset").__name__, METRICS.get("featx.ClassificationMetric").__name__,
              HOOKS.get("featx.ProgressHook").__name__, HOOKS.get("featx.TrainingReportHook").__name__,
              MODELS.get("featx.ImageClassifier").__name__, MODELS.get("featx.VGG16BNFPN").__name__,
              MODELS.get("featx.TimmBackbone").__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ImageFolderDataset", "ClassificationMetric", "ProgressHook", "TrainingReportHook",
                                  "ImageClassifier", "VGG16BNFPN", "TimmBackbone"]


def test_timm_registry_zoo():
    m = timm.create_model("featx_mobilenet_v3_small", frozen_stages=1, features_only=True)
    # timm's mobilenetv3_small_100 levels: the stem's stride-2 map, then C2..C5
    assert m.feature_info.reduction() == [2, 4, 8, 16, 32] and m.feature_info.channels() == [16, 16, 24, 48, 576]
    assert timm.create_model("featx_seresnet50").backbone.arch == "seresnet50"


def test_timm_registry():
    """Every catalogue backbone is a timm model; composites are not (their output is a pyramid)."""
    names = timm.list_models("featx_*")
    assert sorted(names) == sorted(e.timm_name for e in CATALOG.values() if e.kind == "backbone")
    assert {"featx_resnet50", "featx_resnext101_64x4d", "featx_vgg16_bn", "featx_seresnet50"} <= set(names)
    assert not {"featx_resnet50_fpn", "featx_resnet50_retinafpn"} & set(names)
    m = timm.create_model("featx_resnet18", frozen_stages=1, num_classes=7)
    assert m.num_classes == 7 and m.backbone.arch == "resnet18"
    assert not m.backbone.layer1[0].conv1.weight.requires_grad and m.backbone.layer2[0].conv1.weight.requires_grad
    b = timm.create_model("featx_resnext50_32x4d", features_only=True, out_indices=(4,))  # C5: timm's index 4
    assert b.feature_info.channels() == [2048] and b.feature_info.reduction() == [32]


def test_featx_list_gives_a_timm_name_only_where_timm_knows_it(tmp_path, monkeypatch):
    import timm

    from featx.stats import model_table

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    _, _, stats = model_table("ResNet18*")
    assert {st.kind for st in stats} == {"backbone", "composite"}
    for st in stats:
        assert (timm.is_model(st.timm_name) if st.kind == "backbone" else st.timm_name is None), st
