"""featx's timm models beyond timm's own checks. timm's tests/test_models.py itself runs on every featx timm model
(tests/test_timm_own_suite.py: forward, backward, default cfgs, features, forward_intermediates, FX forward and
backward, TorchScript); here, on one model of each family, what it does not check: gradient checkpointing gives
the same output, a classifier reset to no pooling keeps the cfg's pool size, ``features_only`` with chosen
``out_indices``, tracing and ``torch.export`` of the classifier; and for all of them the levels against timm's own
models and weights, the pretrained cfgs and the optimizer groups."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import featx  # noqa: F401  (registers the featx_* models)
from featx.integrations.timm import TIMM_MODELS

NAMES = sorted(TIMM_MODELS)
# one model of each family
FAMILY_SAMPLE = ["featx_resnet18", "featx_vgg11_bn", "featx_alexnet", "featx_googlenet", "featx_inception_v3",
                 "featx_densenet121", "featx_mobilenet_v2", "featx_mobilenet_v3_small", "featx_seresnet50",
                 "featx_skresnet18", "featx_resnest50d", "featx_lenet5"]
# small inputs keep ~36 models quick on a CPU; no model's convolutions need more (Inception-v3: 75)
FWD, BWD, FEAT = 96, 96, 96


def _size(model, target: int) -> tuple[int, int, int]:
    cfg = model.pretrained_cfg
    low = (cfg.get("min_input_size") or (3, 0, 0))[-1]
    side = max(target, low)
    return (cfg["input_size"][0], side, side)


def _reductions(name: str) -> list[int]:
    """The levels' strides: the stem's (2; VGG 1, 2), then C2..C5 = 4, 8, 16, 32 (LeNet-5: 2, 4, 4)."""
    backbone = TIMM_MODELS[name].construct()
    return [f.stride for f in backbone.stem_infos + backbone.stage_infos]


def test_every_catalogue_backbone_is_registered():
    assert NAMES == sorted(timm.list_models("featx_*"))
    assert len(NAMES) == 37 and "featx_lenet5" in NAMES and "featx_resnet50" in NAMES and "featx_vgg16_bn" in NAMES and "featx_resnest50d" in NAMES


@pytest.mark.parametrize("name", FAMILY_SAMPLE)
def test_classifier_and_default_cfg(name):
    """timm's test_model_forward + test_model_default_cfgs, with gradient checkpointing and classifier resets."""
    model = timm.create_model(name, pretrained=False).eval()
    cfg = model.default_cfg
    classes = 10 if name == "featx_lenet5" else 1000  # LeNet-5 is a digits classifier
    assert model.num_classes == cfg["num_classes"] == classes and model.num_features > 0 and model.head_hidden_size > 0
    x = torch.randn(1, *_size(model, FWD))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, classes) and not torch.isnan(out).any()
        model.set_grad_checkpointing()
        assert torch.allclose(model(x), out, rtol=1e-4, atol=1e-5)
        # forward_features (unpooled) at the default input size matches the cfg's pool size
        full = torch.randn(1, *cfg["input_size"])
        feats = model.forward_features(full)
        assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"]) and feats.shape[1] == model.num_features
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x))
        info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
        assert [t.shape[1] for t in inter] == info.channels() and info.reduction() == _reductions(name)
        for r, t in zip(info.reduction(), inter):
            assert t.shape[-1] <= math.ceil(x.shape[-1] / r) + 1
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(full).shape == (1, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert tuple(model(full).shape[-2:]) == tuple(cfg["pool_size"])
    bare = timm.create_model(name, pretrained=False, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert bare(full).dim() == 4
    keys = model.state_dict().keys()
    assert cfg["classifier"] == "fc" and "fc.weight" in timm.create_model(name, pretrained=False).state_dict()
    assert cfg["first_conv"] + ".weight" in keys


@pytest.mark.parametrize("name", FAMILY_SAMPLE)
def test_trace_and_export(name):
    """The classifier through torch.jit.trace and torch.export (timm's own suite covers backward and FX)."""
    model = timm.create_model(name, pretrained=False, num_classes=42).eval()
    x = torch.randn(2, *_size(model, BWD))
    with torch.no_grad():
        want = model(x)
        traced = torch.jit.trace(model, x, check_trace=False)
        assert torch.allclose(traced(x), want, atol=1e-5, rtol=1e-4)
        exported = torch.export.export(model, (x,))
        assert torch.allclose(exported.module()(x), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", FAMILY_SAMPLE)
def test_features_only(name):
    """timm's test_model_forward_features (+ the getter net's out_indices and output_stride)."""
    model = timm.create_model(name, pretrained=False, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert reductions == _reductions(name) and len(channels) >= 3
    size = _size(model, FEAT)
    with torch.no_grad():
        outs = model(torch.randn(1, *size))
    assert isinstance(outs, list) and len(outs) == len(channels)
    for c, r, o in zip(channels, reductions, outs):
        assert o.shape[1] == c and o.shape[-1] <= math.ceil(size[-1] / r) + 1 and not torch.isnan(o).any()
    two = timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, -1)).eval()
    assert two.feature_info.reduction() == [reductions[1], reductions[-1]]
    assert two.feature_info.channels() == [channels[1], channels[-1]]
    with torch.no_grad():
        assert [o.shape[1] for o in two(torch.randn(1, *size))] == [channels[1], channels[-1]]


@pytest.mark.parametrize("name", ["featx_resnet50", "featx_seresnet50"])
def test_output_stride(name):
    model = timm.create_model(name, pretrained=False, features_only=True, output_stride=16).eval()
    assert model.feature_info.reduction() == [2, 4, 8, 16, 16]
    with torch.no_grad():
        assert [o.shape[-1] for o in model(torch.randn(1, 3, 64, 64))] == [32, 16, 8, 4, 4]
    with pytest.raises(ValueError, match="no output_stride option"):
        timm.create_model("featx_vgg11", output_stride=16)


def test_in_chans_and_pruned_feature_net():
    model = timm.create_model("featx_mobilenet_v2", pretrained=False, in_chans=1, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)
    feats = timm.create_model("featx_resnet18", features_only=True, out_indices=(1, 2))  # C2, C3
    # stages past the last requested level are dropped from the feature net, not only skipped
    assert not any(k.startswith("model.layer3.") or k.startswith("model.layer4.")
                   for k in feats.state_dict())


def test_pretrained_cfg_names_torchvisions_weights():
    cfg = timm.models.get_pretrained_cfg("featx_resnet50")
    assert cfg.tag == "tv2_in1k" and cfg.url.endswith("resnet50-11ad3fa6.pth") and cfg.custom_load
    assert cfg.crop_pct == pytest.approx(224 / 232, abs=1e-4) and cfg.mean == (0.485, 0.456, 0.406)
    assert timm.list_pretrained("featx_resnet50.*") == ["featx_resnet50.tv2_in1k", "featx_resnet50.tv_in1k"]
    assert timm.models.get_pretrained_cfg("featx_inception_v3").input_size == (3, 299, 299)
    assert timm.models.get_pretrained_cfg("featx_seresnet50").hf_hub_id.startswith("timm/seresnet50.")


def test_plain_torchvision_feature_extraction_traces_featx_models():
    """torchvision users call create_feature_extractor without timm's tracer settings."""
    model = featx.create_model("ResNet18FPN").eval()
    nodes = get_graph_node_names(model)[1]
    assert "backbone.layer3" in " ".join(nodes)
    fx = create_feature_extractor(model, return_nodes={"backbone.layer2.1.relu_1": "c3", nodes[-1]: "out"})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = fx(x)
        assert got["c3"].shape == (1, 128, 8, 12)
        with pytest.raises(ValueError, match="3 input channels"):  # the input check survives tracing
            fx(torch.randn(1, 4, 64, 96))


def test_pretrained_cfg_overlay_file_goes_through_featxs_loader(tmp_path):
    import torchvision

    source = torchvision.models.resnet18()
    path = tmp_path / "mine.pth"
    torch.save(source.state_dict(), path)
    m = timm.create_model("featx_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert m.load_report.loaded == len(source.state_dict()) and m.load_report.source == str(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), source.eval()(x), atol=1e-5, rtol=1e-4)  # the classifier too
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(featx.errors.CheckpointMismatchError):
        timm.create_model("featx_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "bad.pth")))


# -- featx's timm models list the levels timm's own model of the family lists ----------------------------
# featx timm name -> timm's own model of that family (timm's MobileNets have their own names)
TIMM_EQUALS = {n: n.removeprefix("featx_") for n in NAMES if timm.is_model(n.removeprefix("featx_"))}
TIMM_EQUALS.update(featx_mobilenet_v2="mobilenetv2_100", featx_mobilenet_v3_large="mobilenetv3_large_100",
                   featx_mobilenet_v3_small="mobilenetv3_small_100")
# the same modules and parameter names as timm's: the maps can be compared with timm's weights loaded
SAME_WEIGHTS = [n for n in TIMM_EQUALS if not n.startswith("featx_mobilenet")]


def test_the_families_timm_has():
    assert sorted(set(NAMES) - set(TIMM_EQUALS)) == ["featx_alexnet", "featx_googlenet", "featx_lenet5"]
    assert len(TIMM_EQUALS) == 34


def test_c2_to_c5_are_timms_indices_1_to_4():
    """timm code selects C2..C5 of a ResNet with out_indices=(1, 2, 3, 4): featx_resnet50's are featx's own."""
    feats = timm.create_model("featx_resnet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    own = featx.create_model("ResNet50").eval()
    own.load_state_dict({k.removeprefix("model."): v for k, v in feats.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        got, want = feats(x), own(x)
    assert feats.feature_info.reduction() == [4, 8, 16, 32] and len(got) == len(want) == 4
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    # every level, featx's default out_indices as timm's: the stem's stride-2 map first
    full = timm.create_model("featx_resnet50", features_only=True).eval()
    assert full.feature_info.out_indices == (0, 1, 2, 3, 4) and full.feature_info.module_name()[0] == "relu"


@pytest.mark.parametrize("name", sorted(TIMM_EQUALS))
def test_levels_are_timms(name):
    """Reductions, default out_indices and channels as timm's own model of the family (timm's MobileNetV2 ends
    its C5 at the last block, 320 channels; featx's, as torchvision's features, at the 1x1 conv, 1280)."""
    ours = timm.create_model(name, features_only=True)
    theirs = timm.create_model(TIMM_EQUALS[name], features_only=True)
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    assert ours.feature_info.out_indices == theirs.feature_info.out_indices
    channels = theirs.feature_info.channels()
    if name == "featx_mobilenet_v2":
        channels[-1] = 1280
    assert ours.feature_info.channels() == channels


@pytest.mark.parametrize("name", SAME_WEIGHTS)
def test_levels_equal_timms_with_timms_weights(name):
    """timm's own model of the family, random weights and BN statistics, loaded into featx's: every level equal."""
    theirs = timm.create_model(TIMM_EQUALS[name], features_only=True)
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    theirs.eval()
    ours = timm.create_model(name, features_only=True).eval()
    state = theirs.state_dict()
    mine = {k: k.removeprefix("model.") for k in ours.state_dict()}
    # timm's feature nets flatten nested names ("stages_0"); featx keeps the checkpoint's
    state = {k.replace("_", "."): v for k, v in state.items()}
    ours.load_state_dict({k: state[v.replace("_", ".")] for k, v in mine.items()}, strict=True)
    side = 96 if "inception" not in name else 128
    x = torch.randn(1, 3, side, side + 32)
    with torch.no_grad():
        got, want = ours(x), theirs(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and (g - w).abs().max() <= 1e-4 * w.abs().max()


# timm's classification model of the family whose whole state dict is featx's, key for key
TIMM_STATE_EQUALS = sorted(n for n in SAME_WEIGHTS if not n.startswith(("featx_densenet", "featx_vgg")))


@pytest.mark.parametrize("name", TIMM_STATE_EQUALS)
def test_timms_state_dict_loads_as_it_is(name):
    """A state dict of timm's model (random weights and BN statistics) loads into featx_<arch> with plain
    load_state_dict, and the two classify alike."""
    theirs = timm.create_model(TIMM_EQUALS[name])
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    theirs.eval()
    ours = timm.create_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-4


def test_the_families_whose_keys_differ_from_timms_are_converted():
    """DenseNet's classifier is featx's fc; VGG's features are timm's, its conv head is not loaded
    (map_source_state reports it); the documented exceptions, nothing else."""
    dense = timm.create_model("densenet121")
    ours = timm.create_model("featx_densenet121")
    assert set(ours.state_dict()) ^ set(dense.state_dict()) == {"fc.weight", "fc.bias", "classifier.weight",
                                                                "classifier.bias"}
    ours.load_state_dict(ours.map_source_state(dense.state_dict(), "timm densenet121"), strict=True)
    assert torch.equal(ours.fc.weight, dense.classifier.weight)
    vgg, ours = timm.create_model("vgg11_bn"), timm.create_model("featx_vgg11_bn")
    assert {k for k in vgg.state_dict() if k not in ours.state_dict()} == {
        f"{m}.{p}" for m in ("pre_logits.fc1", "pre_logits.fc2", "head.fc") for p in ("weight", "bias")}


def test_torchvision_feature_extraction_takes_timms_node_names():
    """create_feature_extractor(m, {"layer2": ...}) works on featx_resnet50 as on timm's resnet50."""
    nodes = {"layer2": "c3", "layer4": "c5"}
    x = torch.randn(1, 3, 128, 96)
    theirs = timm.create_model("resnet50").eval()
    ours = timm.create_model("featx_resnet50").eval()
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        got = create_feature_extractor(ours, nodes)(x)
        want = create_feature_extractor(theirs, nodes)(x)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    names = get_graph_node_names(ours)[1]
    assert {"conv1", "bn1", "layer2.3.relu_2", "layer4.2.relu_2", "fc"} <= set(names)
    assert not any("backbone" in n for n in names)


def test_group_matcher_groups_for_timms_optimizer_factory():
    """timm reads a matcher's captured regex groups as block numbers: the stem and stage patterns capture none."""
    from timm.models._manipulate import group_parameters

    model = timm.create_model("featx_resnet18")
    groups = group_parameters(model, model.group_matcher(coarse=False))
    names = [n for n, _ in model.named_parameters()]
    assert sorted(n for g in groups.values() for n in g) == sorted(names)
    assert len(groups) == 6  # stem, layer1..4, the classifier
    assert groups[0] == ["conv1.weight", "bn1.weight", "bn1.bias"]


@pytest.mark.parametrize("name", ["featx_resnet18", "featx_googlenet", "featx_seresnet50"])
def test_torchscript_runs_the_same_modules(name):
    """torch.jit.script compiles the model's own modules regrouped in order (parameters shared, not copied)."""
    model = timm.create_model(name, drop_rate=0.1).eval()
    model.backbone.weights_loaded()  # GoogLeNet: the input transform of pretrained weights is part of the script
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
    first = next(model.backbone.parameters())
    assert any(p.data_ptr() == first.data_ptr() for p in scripted.parameters())
    assert sum(p.numel() for p in scripted.parameters()) == sum(p.numel() for p in model.parameters())
