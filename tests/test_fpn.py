"""FPN: mmdet semantics, torchvision equivalence with copied weights, bad arguments."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from featx import FPN
from helpers import rel_err

IN_CHANNELS = [16, 32, 64, 128]


def _inputs(h: int, w: int, channels=IN_CHANNELS, batch=2):
    # C2..C5 sizes as a ResNet gives them: ceil(H / stride)
    return [torch.randn(batch, c, -(-h // s), -(-w // s)) for c, s in zip(channels, (4, 8, 16, 32))]


def _copy_torchvision_fpn(tv: FeaturePyramidNetwork, ours: FPN) -> None:
    """torchvision names -> mmdet names: inner_blocks.i.0 -> lateral_convs.i.conv, layer_blocks.i.0 ->
    fpn_convs.i.conv, extra_blocks.p6/p7 -> the extra fpn_convs."""
    with torch.no_grad():
        n = len(tv.inner_blocks)
        for i in range(n):
            ours.lateral_convs[i].conv.weight.copy_(tv.inner_blocks[i][0].weight)
            ours.lateral_convs[i].conv.bias.copy_(tv.inner_blocks[i][0].bias)
            ours.fpn_convs[i].conv.weight.copy_(tv.layer_blocks[i][0].weight)
            ours.fpn_convs[i].conv.bias.copy_(tv.layer_blocks[i][0].bias)
        if isinstance(tv.extra_blocks, LastLevelP6P7):
            for j, conv in enumerate((tv.extra_blocks.p6, tv.extra_blocks.p7)):
                ours.fpn_convs[n + j].conv.weight.copy_(conv.weight)
                ours.fpn_convs[n + j].conv.bias.copy_(conv.bias)
        for p in ours.parameters():  # every parameter came from torchvision; none left at init
            assert p.abs().sum() > 0


def _randomize_biases(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)


@pytest.mark.parametrize("size", [(64, 64), (67, 93), (801, 1333)])
def test_equals_torchvision_fpn_maxpool(size):
    tv = FeaturePyramidNetwork(IN_CHANNELS, 32, extra_blocks=LastLevelMaxPool()).eval()
    _randomize_biases(tv)
    ours = FPN(IN_CHANNELS, 32, num_outs=5).eval()
    _copy_torchvision_fpn(tv, ours)
    feats = _inputs(*size)
    with torch.no_grad():
        out = ours(feats)
        ref = list(tv({str(i): f for i, f in enumerate(feats)}).values())
    assert len(out) == len(ref) == 5
    for level, (o, r) in enumerate(zip(out, ref)):
        assert rel_err(o, r) <= 1e-5, f"P{level + 2}"


@pytest.mark.parametrize("p6_from,mode", [(128, "on_input"), (32, "on_output")])
@pytest.mark.parametrize("size", [(64, 64), (67, 93)])
def test_equals_torchvision_fpn_p6p7(p6_from, mode, size):
    # torchvision's RetinaNet: FPN on C3..C5 + LastLevelP6P7 (P6 from C5 in v2, from P5 in v1)
    tv = FeaturePyramidNetwork(IN_CHANNELS[1:], 32, extra_blocks=LastLevelP6P7(p6_from, 32)).eval()
    _randomize_biases(tv)
    ours = FPN(IN_CHANNELS, 32, num_outs=5, start_level=1, add_extra_convs=mode, relu_before_extra_convs=True).eval()
    _copy_torchvision_fpn(tv, ours)
    feats = _inputs(*size)
    with torch.no_grad():
        out = ours(feats)
        ref = list(tv({str(i): f for i, f in enumerate(feats[1:])}).values())
    assert [f.name for f in ours.feature_info] == ["P3", "P4", "P5", "P6", "P7"]
    assert ours.strides == [8, 16, 32, 64, 128]
    for level, (o, r) in enumerate(zip(out, ref)):
        assert rel_err(o, r) <= 1e-5, f"P{level + 3}"


def test_relu_before_extra_convs_matters():
    kw = dict(in_channels=IN_CHANNELS, out_channels=8, num_outs=5, start_level=1, add_extra_convs="on_input")
    a, b = FPN(**kw, relu_before_extra_convs=True).eval(), FPN(**kw).eval()
    b.load_state_dict(a.state_dict())
    feats = _inputs(64, 64)
    with torch.no_grad():
        oa, ob = a(feats), b(feats)
    # identical up to P6, different at P7
    assert all(torch.equal(x, y) for x, y in zip(oa[:4], ob[:4])) and not torch.equal(oa[4], ob[4])


@pytest.mark.parametrize("mode,cin", [("on_input", 128), ("on_lateral", 8), ("on_output", 8)])
def test_extra_conv_sources(mode, cin):
    fpn = FPN(IN_CHANNELS, 8, num_outs=6, add_extra_convs=mode)
    assert fpn.fpn_convs[4].conv.in_channels == cin and len(fpn.fpn_convs) == 6
    with torch.no_grad():
        outs = fpn(_inputs(64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1, 1]
    assert [f.name for f in fpn.feature_info] == ["P2", "P3", "P4", "P5", "P6", "P7"]


def test_end_level_is_inclusive():
    fpn = FPN(IN_CHANNELS, 8, num_outs=2, start_level=1, end_level=2)
    assert len(fpn.lateral_convs) == 2
    with torch.no_grad():
        outs = fpn(_inputs(64, 64))
    assert [o.shape[-1] for o in outs] == [8, 4] and fpn.strides == [8, 16]


def test_norm_act_and_no_norm_on_lateral():
    fpn = FPN(IN_CHANNELS, 32, num_outs=4, norm_cfg="GN", act_cfg="ReLU", no_norm_on_lateral=True)
    keys = set(fpn.state_dict())
    assert "fpn_convs.0.gn.weight" in keys and "fpn_convs.0.conv.bias" not in keys
    assert "lateral_convs.0.conv.bias" in keys and not any(k.startswith("lateral_convs.0.gn") for k in keys)
    with torch.no_grad():
        outs = fpn(_inputs(64, 64))
    assert min(o.min().item() for o in outs) >= 0  # ReLU at the end of every conv


def test_mmdet_key_names():
    keys = sorted(FPN([256, 512, 1024, 2048], 256, num_outs=5).state_dict())
    assert keys[:4] == ["fpn_convs.0.conv.bias", "fpn_convs.0.conv.weight", "fpn_convs.1.conv.bias", "fpn_convs.1.conv.weight"]
    assert "lateral_convs.3.conv.weight" in keys and len(keys) == 16


def test_bilinear_upsample_any_size():
    fpn = FPN(IN_CHANNELS, 8, num_outs=4, upsample_cfg=dict(mode="bilinear", align_corners=False)).eval()
    with torch.no_grad():
        outs = fpn(_inputs(33, 47))
    assert [tuple(o.shape[-2:]) for o in outs] == [(9, 12), (5, 6), (3, 3), (2, 2)]


@pytest.mark.parametrize("kwargs,words", [
    (dict(add_extra_convs="on_foo"), "add_extra_convs"),
    (dict(add_extra_convs=1.0), "add_extra_convs"),
    (dict(num_outs=3), "num_outs=3 is too small"),
    (dict(start_level=4), "start_level"),
    (dict(start_level=-1), "start_level"),
    (dict(end_level=2, num_outs=5), "no extra levels"),
    (dict(end_level=7), "end_level"),
    (dict(start_level=2, end_level=1, num_outs=1), "end_level"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        FPN(**{"in_channels": IN_CHANNELS, "out_channels": 8, "num_outs": 5, **kwargs})


def test_bad_inputs():
    fpn = FPN(IN_CHANNELS, 8, num_outs=5)
    with pytest.raises(ValueError, match="expects 4 input levels"):
        fpn(_inputs(64, 64)[:3])
    bad = _inputs(64, 64)
    bad[2] = torch.randn(1, 65, 4, 4)
    with pytest.raises(ValueError, match=r"input 2 must be \(N, 64, H, W\)"):
        fpn(bad)
    with pytest.raises(TypeError, match="in_channels"):
        FPN(256, 8, num_outs=5)
