"""ResNet-family extractors: shapes, torchvision/timm equivalence, options, freezing, bad input."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from featx import ResNet
from featx.backbones.resnet import RESNET_ARCHS, Bottleneck
from helpers import drop_head, randomize_norm_stats, rel_err

LAYERS = {"layer1": "C2", "layer2": "C3", "layer3": "C4", "layer4": "C5"}
SIZES = [(64, 64), (67, 93)]  # one square, one odd


def _reference(arch: str, **kwargs) -> nn.Module:
    tv = getattr(torchvision.models, arch)(weights=None, **kwargs)
    return randomize_norm_stats(tv).eval()


def _assert_equivalent(ours: nn.Module, ref_getter: nn.Module, sizes=SIZES, key_order=tuple(LAYERS)) -> None:
    for h, w in sizes:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            out = ours(x)
            ref = ref_getter(x)
        ref = list(ref.values()) if isinstance(ref, dict) else list(ref)
        assert len(out) == len(ref) == len(key_order)
        for level, (o, r) in enumerate(zip(out, ref)):
            err = rel_err(o, r)
            assert err <= 1e-5, f"level {level} at {h}x{w}: relative error {err:.2e}"


def test_resnet50_shape_table():
    m = ResNet(depth=50).eval()
    with torch.no_grad():
        outs = m(torch.rand(1, 3, 800, 1216))
    assert [tuple(o.shape[1:]) for o in outs] == [(256, 200, 304), (512, 100, 152), (1024, 50, 76), (2048, 25, 38)]
    assert [(f.name, f.channels, f.stride) for f in m.feature_info] == [
        ("C2", 256, 4), ("C3", 512, 8), ("C4", 1024, 16), ("C5", 2048, 32)]
    assert m.channels == [256, 512, 1024, 2048] and m.strides == [4, 8, 16, 32]


@pytest.mark.parametrize("arch", sorted(RESNET_ARCHS))
def test_equivalent_to_torchvision(arch):
    ref = _reference(arch)
    ours = ResNet(arch=arch).eval()
    missing, unexpected = ours.load_state_dict(drop_head(ref.state_dict()), strict=True)
    assert not missing and not unexpected
    # key lists are the same, not merely loadable
    assert sorted(ours.state_dict()) == sorted(drop_head(ref.state_dict()))
    _assert_equivalent(ours, IntermediateLayerGetter(ref, LAYERS))
    assert ours.feature_info[-1].channels == ref.fc.in_features


@pytest.mark.parametrize("output_stride,dilate,strides", [
    (16, [False, False, True], [4, 8, 16, 16]),
    (8, [False, True, True], [4, 8, 8, 8]),
])
def test_output_stride_matches_torchvision_dilation(output_stride, dilate, strides):
    ref = _reference("resnet50", replace_stride_with_dilation=dilate)
    ours = ResNet(depth=50, output_stride=output_stride).eval()
    ours.load_state_dict(drop_head(ref.state_dict()))
    assert ours.strides == strides
    _assert_equivalent(ours, IntermediateLayerGetter(ref, LAYERS), sizes=[(65, 77)])
    with torch.no_grad():
        c5 = ours(torch.rand(1, 3, 128, 128))[-1]
    assert c5.shape[-1] == 128 // output_stride


def test_dilated_basic_block_runs():
    m = ResNet(depth=18, output_stride=8).eval()
    with torch.no_grad():
        outs = m(torch.rand(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]


def test_deep_stem_avg_down_equivalent_to_timm_resnet50d():
    ref = timm.create_model("resnet50d", pretrained=False)
    randomize_norm_stats(ref).eval()
    ours = ResNet(depth=50, deep_stem=True, avg_down=True).eval()
    ours.load_state_dict(drop_head(ref.state_dict()), strict=True)
    feats = timm.create_model("resnet50d", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
    feats.load_state_dict(drop_head(ref.state_dict()), strict=True)
    _assert_equivalent(ours, feats.eval())


def test_caffe_style_moves_stride_to_first_1x1():
    pt = ResNet(depth=50, style="pytorch")
    caffe = ResNet(depth=50, style="caffe")
    for m, s1, s2 in ((pt, (1, 1), (2, 2)), (caffe, (2, 2), (1, 1))):
        block = m.layer2[0]
        assert block.conv1.stride == s1 and block.conv2.stride == s2
    with torch.no_grad():
        outs = caffe.eval()(torch.rand(1, 3, 96, 96))
    assert [o.shape[-1] for o in outs] == [24, 12, 6, 3]
    # same parameter names and shapes: caffe-style weights load into either
    assert {k: v.shape for k, v in pt.state_dict().items()} == {k: v.shape for k, v in caffe.state_dict().items()}


@pytest.mark.parametrize("norm", ["BN", "SyncBN", "GN", "FrozenBN", dict(type="BN", requires_grad=False)])
def test_norm_layer_choice(norm):
    m = ResNet(depth=18, norm_cfg=norm)
    expected = {"BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm, "GN": nn.GroupNorm, "FrozenBN": FrozenBatchNorm2d}
    kind = norm if isinstance(norm, str) else norm["type"]
    assert type(m.bn1) is expected[kind] and type(m.layer3[1].bn2) is expected[kind]
    if kind == "GN":
        assert m.bn1.num_groups == 32
        assert not any("running_mean" in k for k in m.state_dict())
    if isinstance(norm, dict):  # BN affine frozen, statistics still trainable
        assert not m.bn1.weight.requires_grad and m.bn1.training
        assert m.conv1.weight.requires_grad
    if kind != "SyncBN":  # SyncBN needs a process group to run in training mode
        with torch.no_grad():
            outs = m.eval()(torch.rand(1, 3, 64, 64))
        assert [o.shape[1] for o in outs] == [64, 128, 256, 512]


def test_frozen_bn_loads_torchvision_checkpoint_strictly():
    ref = _reference("resnet50")
    ours = ResNet(depth=50, norm_cfg="FrozenBN").eval()
    ours.load_state_dict(drop_head(ref.state_dict()), strict=True)
    _assert_equivalent(ours, IntermediateLayerGetter(ref, LAYERS), sizes=[(61, 64)])


def _requires_grad(module: nn.Module) -> set[bool]:
    return {p.requires_grad for p in module.parameters()}


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2, 4])
def test_frozen_stages(frozen_stages):
    m = ResNet(depth=18, frozen_stages=frozen_stages)
    assert m.train() is m
    stem_frozen = frozen_stages >= 0
    assert _requires_grad(m.conv1) == {not stem_frozen} and _requires_grad(m.bn1) == {not stem_frozen}
    assert m.bn1.training is (not stem_frozen)
    for i in range(1, 5):
        layer = getattr(m, f"layer{i}")
        frozen = i <= frozen_stages
        assert _requires_grad(layer) == {not frozen}, f"layer{i}"
        assert all(bn.training is (not frozen) for bn in layer.modules() if isinstance(bn, _BatchNorm)), f"layer{i}"
    # re-applied after someone unfreezes by hand and calls train() again
    for p in m.parameters():
        p.requires_grad = True
    m.train()
    assert _requires_grad(m.layer1) == {not frozen_stages >= 1}
    # frozen parameters receive no gradient
    m(torch.rand(2, 3, 32, 32, requires_grad=True))[-1].sum().backward()
    assert (m.conv1.weight.grad is None) == stem_frozen


def test_norm_eval_keeps_bn_statistics():
    m = randomize_norm_stats(ResNet(depth=18, norm_eval=True))
    before = m.layer2[0].bn1.running_mean.clone()
    m.train()
    assert all(not bn.training for bn in m.modules() if isinstance(bn, _BatchNorm))
    assert m.conv1.weight.requires_grad  # norm_eval freezes statistics, not parameters
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        train_out = m(x)
        eval_out = m.eval()(x)
    assert torch.equal(m.layer2[0].bn1.running_mean, before)
    assert max(rel_err(a, b) for a, b in zip(train_out, eval_out)) == 0.0
    # without norm_eval, train() puts BN back in training mode and statistics move
    m2 = ResNet(depth=18).train()
    m2(x)
    assert m2.layer2[0].bn1.training and not torch.equal(m2.layer2[0].bn1.running_mean, torch.zeros(128))


def test_zero_init_residual():
    m = ResNet(depth=50, zero_init_residual=True)
    assert all(b.bn3.weight.abs().sum() == 0 for b in m.modules() if isinstance(b, Bottleneck))
    assert ResNet(depth=50).layer1[0].bn3.weight.abs().sum() == 256
    m18 = ResNet(depth=18, zero_init_residual=True)
    assert m18.layer1[0].bn2.weight.abs().sum() == 0


def test_out_indices_subset_and_stops_early():
    m = ResNet(depth=18, out_indices=(1, 2)).eval()
    assert [f.name for f in m.feature_info] == ["C3", "C4"]
    calls = []
    m.layer4.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        outs = m(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 256] and calls == []


@pytest.mark.parametrize("size", [(801, 1333), (33, 47), (32, 32)])
def test_odd_and_tiny_sizes(size):
    m = ResNet(depth=18).eval()
    with torch.no_grad():
        outs = m(torch.rand(1, 3, *size))
    h = size[0]
    for o, s in zip(outs, (4, 8, 16, 32)):
        assert o.shape[-2] == -(-h // s)  # ceil(H / stride)


# -- bad input ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r18():
    return ResNet(depth=18).eval()


@pytest.mark.parametrize("x,exc,words", [
    (torch.rand(1, 1, 32, 32), ValueError, "3 input channels"),
    (torch.rand(3, 32, 32), ValueError, "4-D"),
    (torch.rand(1, 1, 3, 32, 32), ValueError, "4-D"),
    (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), TypeError, "floating-point"),
    ([1, 2, 3], TypeError, "torch.Tensor"),
])
def test_bad_input_tensor(r18, x, exc, words):
    with pytest.raises(exc, match=words):
        r18(x)


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(out_indices=(0, 4)), ValueError, r"0\.\.3"),
    (dict(out_indices=(1, 1)), ValueError, "repeat"),
    (dict(out_indices=(2, 1)), ValueError, "ascending"),
    (dict(out_indices=()), ValueError, "at least one"),
    (dict(out_indices=3), TypeError, "sequence"),
    (dict(out_indices=(0, 1.5)), TypeError, "ints"),
    (dict(frozen_stages=5), ValueError, r"-1\.\.4"),
    (dict(frozen_stages=-2), ValueError, r"-1\.\.4"),
    (dict(depth=42), ValueError, "depth must be one of"),
    (dict(arch="resnet5O"), ValueError, "did you mean resnet50"),
    (dict(style="tf"), ValueError, "style"),
    (dict(output_stride=4), ValueError, "output_stride"),
    (dict(norm_cfg="LN"), ValueError, "unknown norm type"),
])
def test_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        ResNet(**{"depth": 18, **kwargs})
