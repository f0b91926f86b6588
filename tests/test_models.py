"""Composites (backbone + FPN) and the catalogue."""
from __future__ import annotations

import re

import pytest
import torch

import featx
from featx import BackboneFPN, FPN, ResNet, create_model, list_models
from featx.models import CATALOG


@pytest.fixture(scope="module")
def r50fpn():
    return create_model("ResNet50FPN").eval()


def test_resnet50fpn_shape_table(r50fpn):
    with torch.no_grad():
        outs = r50fpn(torch.rand(1, 3, 800, 1216))
    assert [tuple(o.shape) for o in outs] == [
        (1, 256, 200, 304), (1, 256, 100, 152), (1, 256, 50, 76), (1, 256, 25, 38), (1, 256, 13, 19)]
    assert r50fpn.out_channels == 256 and r50fpn.strides == [4, 8, 16, 32, 64]
    assert [f.name for f in r50fpn.feature_info] == ["P2", "P3", "P4", "P5", "P6"]


def test_retina_style_shape_table():
    m = create_model("ResNet50RetinaFPN").eval()
    with torch.no_grad():
        outs = m(torch.rand(1, 3, 800, 1216))
    assert [tuple(o.shape[-2:]) for o in outs] == [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    assert m.strides == [8, 16, 32, 64, 128]
    # the generic spelling from the issue gives the same pyramid
    g = BackboneFPN(dict(type="ResNet", depth=50),
                    dict(type="FPN", out_channels=256, start_level=1, add_extra_convs="on_input", num_outs=5)).eval()
    g.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert g(torch.rand(1, 3, 64, 64))[-1].shape == (1, 256, 1, 1)


@pytest.mark.parametrize("size", [(801, 1333), (33, 47), (32, 32)])
def test_any_input_size(size):
    m = create_model("ResNet18FPN").eval()
    with torch.no_grad():
        outs = m(torch.rand(1, 3, *size))
    expected_h = [-(-size[0] // s) for s in (4, 8, 16, 32)]
    expected_h.append(-(-expected_h[-1] // 2))
    assert [o.shape[-2] for o in outs] == expected_h


def test_backbone_options_pass_through():
    m = create_model("ResNet50FPN", frozen_stages=2, norm_eval=True, norm_cfg="FrozenBN", out_indices=(1, 2, 3))
    assert isinstance(m.backbone, ResNet) and m.backbone.frozen_stages == 2 and m.backbone.norm_eval
    assert not any(p.requires_grad for p in m.backbone.layer2.parameters())
    assert all(p.requires_grad for p in m.backbone.layer3.parameters())
    # the neck followed out_indices: three inputs, P3..P7 by max-pool
    assert m.neck.in_channels == [512, 1024, 2048] and m.strides == [8, 16, 32, 64, 128]
    assert m.train() is m


def test_neck_override():
    m = create_model("ResNet18FPN", neck=dict(out_channels=64, num_outs=4))
    assert m.out_channels == 64 and len(m.feature_info) == 4
    with pytest.raises(TypeError, match="fixes the architecture"):
        create_model("ResNet18FPN", depth=50)


def test_catalog_names_and_lookup():
    names = list_models()
    # every torchvision classification architecture of the covered families is a featx backbone with its pyramid
    import torchvision

    covered = re.compile(r"(resnet\d+|resnext.*|wide_resnet.*|vgg.*|alexnet|googlenet|inception_v3|densenet.*|"
                         r"mobilenet_v[23].*)$")
    archs = [a for a in torchvision.models.list_models(module=torchvision.models) if covered.match(a)]
    assert len(archs) == 28
    by_arch = {e.arch: n for n, e in CATALOG.items() if e.kind == "backbone"}
    assert all(a in by_arch and by_arch[a] + "FPN" in names for a in archs), sorted(set(archs) - set(by_arch))
    # 10 ResNets x (backbone, FPN, RetinaFPN) + 26 zoo backbones x (backbone, FPN) + LeNet5 (no pyramid)
    assert len(names) == 30 + 52 + 1
    families = {e.family.name for e in CATALOG.values()}
    assert families == {"resnet", "vgg", "alexnet", "googlenet", "inception", "densenet", "mobilenet", "timm", "lenet"}
    for arch in ("ResNet18", "ResNet152", "ResNeXt50_32x4d", "ResNeXt101_64x4d", "WideResNet101_2"):
        assert {arch, arch + "FPN", arch + "RetinaFPN"} <= set(names)
    assert list_models("*RetinaFPN") == sorted(n for n in names if n.endswith("RetinaFPN"))
    for spelling in ("ResNet50FPN", "featx.ResNet50FPN", "featx_resnet50_fpn", "resnet50_fpn"):
        assert create_model(spelling, neck=dict(out_channels=8)).name == "ResNet50FPN"


def test_unknown_model_lists_close_matches():
    with pytest.raises(KeyError, match=r"unknown featx model 'ResNet51FPN' \(did you mean ResNet50FPN"):
        create_model("ResNet51FPN")
    with pytest.raises(KeyError, match="unknown featx model 'ResNot'"):
        BackboneFPN(dict(type="ResNot", depth=50), dict(type="FPN", out_channels=8, num_outs=4))


def test_backbone_without_feature_info_rejected():
    with pytest.raises(TypeError, match="not a featx backbone"):
        BackboneFPN(torch.nn.Conv2d(3, 3, 1), dict(type=FPN, out_channels=8, num_outs=4))


def test_bad_input_reaches_user_as_clear_error(r50fpn):
    with pytest.raises(ValueError, match="3 input channels"):
        r50fpn(torch.rand(1, 4, 64, 64))
    with pytest.raises(TypeError, match="floating-point"):
        r50fpn(torch.zeros(1, 3, 64, 64, dtype=torch.int64))


def test_package_exports():
    """Each public name of the package is the object of the module that defines it, and dir() lists it."""
    import importlib

    assert featx.__version__
    for name in featx.__all__[1:]:
        owner = importlib.import_module(featx._PUBLIC[name])
        assert getattr(featx, name) is getattr(owner, name), name
    assert set(featx.__all__) <= set(dir(featx))


def test_each_family_states_its_first_conv_and_source_classifier():
    """The facts timm's pretrained cfgs need live on the backbone class: ``first_conv`` is the first convolution the
    backbone runs, ``source_classifier`` the source model's one Linear on pooled C5 (or None where it has more)."""
    import torchvision
    from torch import nn

    from featx.models.catalog import FAMILIES

    for family in FAMILIES:
        for arch, title in family.titles.items():
            with torch.device("meta"):  # structure only
                backbone = create_model(title)
            convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
            if family.source != "timm":
                assert backbone.first_conv == convs[0], (title, convs[0])
            head = family.base.source_classifier_of(arch)
            if family.source != "torchvision":
                continue
            with torch.device("meta"):
                reference = torchvision.models.get_model(arch, weights=None, **(
                    {"init_weights": True} if arch in ("googlenet", "inception_v3") else {}))
            linear = dict(reference.named_modules()).get(head) if head else None
            if head is None:  # the source's classifier is more than one Linear on the pooled C5 map
                assert not (isinstance(reference.get_submodule("classifier"), nn.Linear)), title
            else:
                assert isinstance(linear, nn.Linear) and linear.in_features == backbone.channels[-1], (title, head)


def test_each_family_states_the_side_of_its_coarsest_map():
    """``coarsest_side`` (timm's ``pool_size`` of the pretrained cfgs) is C5's side as the backbone computes it, for
    every architecture of every family at the crop sizes of the weights and at odd sizes."""
    from featx.features import input_channels
    from featx.models.catalog import FAMILIES

    for family in FAMILIES:
        for arch, title in family.titles.items():
            with torch.device("meta"):
                backbone = create_model(title).eval()
                for side in sorted({max(backbone.min_input_size, 64) + 7, 224, 299}):
                    c5 = backbone(torch.empty(1, input_channels(backbone), side, side))[-1]
                    assert family.base.coarsest_side(side) == c5.shape[-1], (title, side, c5.shape)


def test_a_family_takes_output_stride_where_it_says_so():
    """``takes_output_stride`` (read by featx's timm models) is true where every architecture of the family builds
    with ``output_stride=16`` and gives C5 at stride 16; elsewhere the family refuses the argument."""
    from featx.models.catalog import FAMILIES

    for family in FAMILIES:
        for title in family.titles.values():
            with torch.device("meta"):
                if family.base.takes_output_stride:
                    c5 = create_model(title, output_stride=16).eval()(torch.empty(1, 3, 64, 64))[-1]
                    assert c5.shape[-1] == 4, (title, c5.shape)
                else:
                    with pytest.raises((TypeError, ValueError)):
                        create_model(title, output_stride=16)


def test_size_divisibility_is_the_coarsest_output_stride():
    assert create_model("ResNet18").size_divisibility == 32
    assert create_model("ResNet18FPN").size_divisibility == 64  # P6
    assert create_model("ResNet18", out_indices=(0, 1)).size_divisibility == 8
