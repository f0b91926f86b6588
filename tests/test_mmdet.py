"""featx inside a real mmdet 3.3.0 (with mmcv 2.1.0's compiled ops): mmdet's own configs train, evaluate
with mmdet's CocoMetric and infer through mmdet's inference API; mmdet's ResNet + FPN and featx's agree."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import mmdet
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import featx
from featx.detection.shapes import CATEGORIES, make_shapes_dataset, point_mmdet_config_at_shapes
from helpers import randomize_norm_stats, rel_err

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "detection"
register_all_modules(init_default_scope=False)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, num_train=8, num_val=4, size=128, seed=3)
    return root


def _tiny_run(cfg: Config, data: Path, work_dir: Path, iters: int = 4) -> Config:
    """mmdet's config, as is, pointed at the shapes set: 3 classes, 128-px images, a few iterations on the CPU."""
    point_mmdet_config_at_shapes(cfg, data, batch_size=2, workers=0)
    cfg.model.backbone.weights = None  # no downloads here; weights loading has its own tests
    # a few iterations from scratch score below mmdet's 0.05 threshold: keep every box so the metric has input
    test_cfg = cfg.model.test_cfg
    (test_cfg.rcnn if "rcnn" in test_cfg else test_cfg).score_thr = 0.0
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=iters)]
    cfg.optim_wrapper.optimizer.lr = 0.002
    cfg.optim_wrapper.clip_grad = dict(max_norm=10)  # random init: keep the first steps from diverging
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=iters)
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor = dict(type="LogProcessor", window_size=1, by_epoch=False)
    cfg.work_dir = str(work_dir)
    cfg.visualizer.vis_backends = [dict(type="LocalVisBackend")]
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("config", ["faster-rcnn_featx-r50-fpn.py", "faster-rcnn_featx-r50_featx-fpn.py",
                                    "retinanet_featx-r50-fpn.py"])
def test_mmdet_trains_evaluates_and_infers_with_featx(config, shapes, tmp_path):
    cfg = Config.fromfile(str(CONFIGS / config))
    assert cfg.custom_imports.imports == ["featx"]
    # the config is mmdet's own, only the backbone (and neck) replaced by featx
    assert cfg.model.type in ("FasterRCNN", "RetinaNet") and cfg.model.backbone.type.startswith("featx.")
    cfg = _tiny_run(cfg, shapes, tmp_path / "work")
    runner = Runner.from_cfg(cfg)
    assert type(runner.model.backbone).__module__.startswith("featx.")
    runner.train()
    metrics = runner.val()  # mmdet's CocoMetric on the 4 val images
    assert {"coco/bbox_mAP", "coco/bbox_mAP_50"} <= set(metrics) and 0.0 <= metrics["coco/bbox_mAP_50"] <= 1.0
    ckpt = tmp_path / "work" / "iter_4.pth"
    assert ckpt.is_file()
    dumped = tmp_path / "run_config.py"
    cfg.dump(str(dumped))
    image = shapes / "val" / "val_00000.png"
    # mmdet's inference API in a fresh interpreter: torch >= 2.6 loads with weights_only=True, and the config's
    # custom_imports (import featx) is what makes mmengine's checkpoint types loadable -- nothing unsafe
    code = textwrap.dedent(f"""
        import sys, torch
        assert "featx" not in sys.modules
        from mmdet.apis import inference_detector, init_detector
        model = init_detector({str(dumped)!r}, {str(ckpt)!r}, device="cpu")
        assert "featx" in sys.modules
        result = inference_detector(model, {str(image)!r})
        pred = result.pred_instances
        print(json.dumps(dict(backbone=type(model.backbone).__name__, boxes=list(pred.bboxes.shape),
                              labels=pred.labels.tolist(), scores=pred.scores.tolist())))
    """)
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backbone"] in ("BackboneFPN", "ResNet")
    n = result["boxes"][0]
    assert result["boxes"] == [n, 4] and len(result["labels"]) == len(result["scores"]) == n
    assert all(0 <= label < len(CATEGORIES) for label in result["labels"])
    assert all(0.0 <= s <= 1.0 for s in result["scores"])


def test_mmengine_checkpoints_need_the_allow_list(shapes, tmp_path):
    """An mmengine training checkpoint holds HistoryBuffer/numpy objects: weights_only=True refuses them unless
    featx (imported) allow-listed exactly those types; nothing else gets through."""
    code = textwrap.dedent("""
        import pickle, sys, torch, numpy as np
        from mmengine.logging import HistoryBuffer, MessageHub
        hub = MessageHub("t"); hub.update_scalar("train/loss", np.float64(0.5))
        path = sys.argv[1]
        torch.save({"state_dict": {"w": torch.ones(1)}, "message_hub": hub.state_dict()}, path)
        try:
            torch.load(path, weights_only=True)
            print("loaded without featx")
        except pickle.UnpicklingError:
            print("refused without featx")
        import featx
        ckpt = torch.load(path, weights_only=True)
        print("loaded with featx", float(ckpt["message_hub"]["log_scalars"]["train/loss"].current()))
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.pth")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["refused without featx", "loaded with featx 0.5"]


def test_mmdet_resnet_fpn_and_featx_give_the_same_maps(tmp_path):
    """mmdet's own ResNet-50 + FPN and featx's, loaded with the same (mmdet-format) checkpoint."""
    with DefaultScope.overwrite_default_scope("mmdet"):
        backbone = MMDET_MODELS.build(dict(type="ResNet", depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
                                           frozen_stages=1, norm_cfg=dict(type="BN", requires_grad=True),
                                           norm_eval=True, style="pytorch"))
        neck = MMDET_MODELS.build(dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5))
    randomize_norm_stats(backbone, seed=11)
    with torch.no_grad():
        for p in neck.parameters():  # mmdet's FPN biases start at zero; make a swapped bias visible
            p.add_(torch.randn_like(p) * 0.05)
    state = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
             **{f"neck.{k}": v for k, v in neck.state_dict().items()}}
    torch.save({"meta": {"mmdet_version": mmdet.__version__}, "state_dict": state}, tmp_path / "mmdet_r50_fpn.pth")
    ours = featx.create_model("ResNet50FPN", weights=str(tmp_path / "mmdet_r50_fpn.pth")).eval()
    assert ours.load_report.loaded == len(state) and ours.load_report.key_map == "identity"
    backbone.eval(), neck.eval()
    for size in ((128, 160), (97, 131)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ref = neck(backbone(x))
            out = ours(x)
        assert len(out) == len(ref) == 5
        for o, r in zip(out, ref):
            assert o.shape == r.shape and rel_err(o, r) <= 1e-5


@pytest.mark.slow
def test_the_accuracy_tool_trains_both_backbones_and_writes_its_result(tmp_path):
    """tools/mmdet_shapes_accuracy.py end to end on a tiny budget: both runs, the report, the result files."""
    sys.path.insert(0, str(REPO / "tools"))
    import mmdet_shapes_accuracy as tool

    assert tool.main(["--out", str(tmp_path / "w"), "--iters", "2", "--train", "8", "--val", "4", "--workers", "0",
                      "--results", str(tmp_path / "results")]) == 0
    report = json.loads((tmp_path / "w" / "results.json").read_text())
    assert [r["backbone_class"] for r in report["results"]] == ["featx.backbones.resnet.ResNet",
                                                                 "mmdet.models.backbones.resnet.ResNet"]
    assert all(r["iters"] == 2 and 0.0 <= r["mAP_50"] <= 1.0 for r in report["results"])
    files = sorted(p.suffix for p in (tmp_path / "results").iterdir())
    assert files == [".json", ".md"] and report["machine"]["threads"] >= 1 and report["versions"]["mmdet"] == mmdet.__version__


# -- mmdet's own configs, with the type changed and nothing else -------------------------------------------------
MMDET_CONFIGS = Path(mmdet.__file__).parent / ".mim" / "configs"


def _swapped(backbone: dict) -> dict:
    return {**backbone, "type": f"featx.{backbone['type']}"}


@pytest.mark.parametrize("config", [
    "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",  # num_stages=4, init_cfg torchvision://resnet50
    "faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco.py",  # ResNeXt: groups, base_width, open-mmlab:// weights
    "faster_rcnn/faster-rcnn_r50-caffe-c4_ms-1x_coco.py",  # C4: num_stages=3, strides, dilations, caffe style
    "faster_rcnn/faster-rcnn_r50-caffe-dc5_1x_coco.py",  # DC5: the last stage dilated, every block of it
    "centernet/centernet_r18_8xb16-crop512-140e_coco.py",  # init_cfg and norm_eval left to mmdet's defaults
    "gn/mask-rcnn_r50_fpn_gn-all_2x_coco.py",  # GroupNorm: mmdet's gn1/gn2/gn3 names, mapped by featx's loader
    "gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco.py",  # conv_cfg ConvWS: mmcv's weight-standardized convolutions
    "dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py",  # dcn in stages 2-4: mmcv's deformable convolutions
    "solov2/solov2-light_r50-dcn_fpn_ms-3x_coco.py",  # DCNv2 (modulated), norm_eval left to mmdet
    "gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py",  # plugins: ContextBlock after conv3 in stages 2-4
    "empirical_attention/faster-rcnn_r50-attn1111-dcn_fpn_1x_coco.py",  # GeneralizedAttention after conv2, with DCN
])
def test_mmdets_own_config_builds_featx_by_changing_the_type_alone(config, tmp_path):
    """mmdet's config as shipped, ``type='ResNet'`` -> ``'featx.ResNet'`` (``'ResNeXt'`` -> ``'featx.ResNeXt'``):
    the same modules (mmdet's random weights, BN statistics included, load strictly), the same maps, the same
    mmdet defaults (norm_eval, zero_init_residual) and the same frozen stages."""
    cfg = Config.fromfile(str(MMDET_CONFIGS / config))
    theirs_cfg = cfg.model.backbone.to_dict()
    with DefaultScope.overwrite_default_scope("mmdet"):
        theirs = MMDET_MODELS.build(theirs_cfg)
        ours = MMDET_MODELS.build(_swapped(theirs_cfg))
    randomize_norm_stats(theirs, seed=5)
    with torch.no_grad():
        for p in theirs.parameters():  # GroupNorm's affine and DCN's offsets start at constants: make them count
            p.add_(torch.randn_like(p) * 0.01)
    torch.save(theirs.state_dict(), tmp_path / "mmdet_backbone.pth")
    report = featx.models.load_weights(ours, str(tmp_path / "mmdet_backbone.pth"))  # featx's strict loader
    assert report.loaded == len(theirs.state_dict()) and not report.dropped
    assert report.key_map == ("mmdet GroupNorm gnN -> bnN" if "gn-" in config else "identity")
    assert ours.norm_eval == theirs.norm_eval
    as_featx = lambda name: re.sub(r"(^|\.)gn(\d)\.", r"\1bn\2.", name)  # noqa: E731 (the loader's key map)
    assert [n for n, p in ours.named_parameters() if not p.requires_grad] == \
        [as_featx(n) for n, p in theirs.named_parameters() if not p.requires_grad]  # frozen_stages, frozen norms
    ours.train(), theirs.train()  # norm_eval keeps BN statistics in eval mode on both sides
    assert [m.training for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)] == \
        [m.training for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        ref, out = theirs(x), ours(x)
    assert len(out) == len(ref) and all(o.shape == r.shape and rel_err(o, r) <= 1e-6 for o, r in zip(out, ref))
    # weights an mmdet init_cfg names load when the runner calls init_weights(), as in mmdet; a model-zoo name featx
    # cannot resolve is said there, with the way out
    source = (theirs_cfg.get("init_cfg") or {}).get("checkpoint", "")
    if source.startswith("open-mmlab://"):
        with pytest.raises(ValueError, match="download the checkpoint"):
            ours.init_weights()


def test_a_swapped_mmdet_detector_builds_and_extracts_its_features():
    cfg = Config.fromfile(str(MMDET_CONFIGS / "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"))
    cfg.model.backbone = _swapped(cfg.model.backbone.to_dict())
    with DefaultScope.overwrite_default_scope("mmdet"):
        detector = MMDET_MODELS.build(cfg.model).eval()
    with torch.no_grad():
        feats = detector.extract_feat(torch.randn(1, 3, 256, 256))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 64, 64), (1, 256, 32, 32), (1, 256, 16, 16), (1, 256, 8, 8),
                                               (1, 256, 4, 4)]


@pytest.mark.parametrize("extra, words", [
    (dict(depth=18, plugins=[dict(cfg=dict(type="ContextBlock", ratio=1. / 16), stages=(False, True, True, True),
                                  position="after_conv3")]), "Bottleneck blocks only"),  # mmdet: "Not implemented yet"
    (dict(plugins=[dict(cfg=dict(type="ContextBlock", ratio=1. / 16), stages=(False, True, True),
                        position="after_conv3")]), "one entry per stage"),
    (dict(base_channels=32), "base_channels=32"),
    (dict(depth=18, dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
          stage_with_dcn=(False, True, True, True)), "Bottleneck blocks only"),  # mmdet: "Not implemented yet"
    (dict(dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=True), stage_with_dcn=(False, True, True, True)),
     "fallback_on_stride=True"),
])
def test_what_featx_does_not_build_is_refused_never_dropped(extra, words):
    base = dict(type="featx.ResNet", depth=50, num_stages=4, out_indices=(0, 1, 2, 3))
    with pytest.raises(ValueError, match=words):
        featx.MODELS.build({**base, **extra})


def test_featxs_own_vocabulary_keeps_featxs_defaults():
    plain = featx.MODELS.build(dict(type="featx.ResNet", depth=18))
    mmdet_style = featx.MODELS.build(dict(type="featx.ResNet", depth=18, num_stages=4))
    assert plain.norm_eval is False and mmdet_style.norm_eval is True
    assert float(plain.layer1[0].bn2.weight.detach().abs().sum()) > 0
    assert float(mmdet_style.layer1[0].bn2.weight.detach().abs().sum()) == 0


@pytest.mark.parametrize("name", ["ResNet50", "ResNet50FPN"])
def test_featx_infos_mmdet_snippet_builds_below_an_mmdet_config(name, tmp_path):
    """``featx info``'s snippet pasted under mmdet's Faster R-CNN config builds the detector (the parent's depth,
    num_stages and init_cfg do not leak into the featx model)."""
    from featx.models import get_entry
    from featx.stats import mmdet_config

    child = tmp_path / "child.py"
    child.write_text('_base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"\n' + mmdet_config(get_entry(name)) + "\n")
    cfg = Config.fromfile(str(child))
    assert "depth" not in cfg.model.backbone and cfg.custom_imports.imports == ["featx"]
    with DefaultScope.overwrite_default_scope("mmdet"):
        detector = MMDET_MODELS.build(cfg.model).eval()
    with torch.no_grad():
        feats = detector.extract_feat(torch.randn(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2] and all(f.shape[1] == 256 for f in feats)


@pytest.mark.parametrize("norm", ["BN", "GN"])
def test_mmdets_resnetv1d_swaps_in_and_its_deep_stem_checkpoint_loads(norm, tmp_path):
    """mmdet's ResNetV1d (deep stem ``stem.0..7``, average-pool downsampling) as ``featx.ResNetV1d``: its checkpoint
    loads through featx's loader (``stem.*`` -> ``conv1.*``/``bn1``; GN's ``gnN`` -> ``bnN``) and the maps are equal."""
    norm_cfg = dict(type="BN", requires_grad=True) if norm == "BN" else dict(type="GN", num_groups=32, requires_grad=True)
    cfg = dict(type="ResNetV1d", depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1, norm_cfg=norm_cfg,
               norm_eval=True, style="pytorch")
    with DefaultScope.overwrite_default_scope("mmdet"):
        theirs = MMDET_MODELS.build(cfg)
        ours = MMDET_MODELS.build({**cfg, "type": "featx.ResNetV1d"})
    randomize_norm_stats(theirs, seed=3)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    torch.save(theirs.state_dict(), tmp_path / "v1d.pth")
    report = featx.models.load_weights(ours, str(tmp_path / "v1d.pth"))
    assert report.loaded == len(theirs.state_dict()) and report.key_map.startswith("mmdet deep stem")
    theirs.eval(), ours.eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        assert all(rel_err(o, r) <= 1e-6 for o, r in zip(ours(x), theirs(x)))


def test_mmdets_gn_ws_fpn_swaps_in_as_featx_fpn(tmp_path):
    """mmdet's FPN of its GN+WS configs (conv_cfg ConvWS, norm_cfg GN) as featx.FPN: the same weights, the same maps."""
    cfg = Config.fromfile(str(MMDET_CONFIGS / "gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco.py"))
    neck = cfg.model.neck.to_dict()
    assert neck["conv_cfg"] == dict(type="ConvWS") and neck["norm_cfg"]["type"] == "GN"
    with DefaultScope.overwrite_default_scope("mmdet"):
        theirs = MMDET_MODELS.build(neck)
        ours = MMDET_MODELS.build({**neck, "type": "featx.FPN"})
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats = [torch.randn(1, c, 40 // 2 ** i, 48 // 2 ** i) for i, c in enumerate(neck["in_channels"])]
    with torch.no_grad():
        assert all(rel_err(o, r) <= 1e-5 for o, r in zip(ours(feats), theirs(feats)))


def test_a_backbone_with_plugins_is_never_scripted_without_them():
    cfg = dict(type="featx.ResNet", depth=50, num_stages=4, plugins=[
        dict(cfg=dict(type="ContextBlock", ratio=1. / 16), stages=(False, True, True, True), position="after_conv3")])
    model = featx.MODELS.build(cfg).eval()
    assert hasattr(model.layer2[0], "context_block") and not hasattr(model.layer1[0], "context_block")
    with pytest.raises(TypeError, match="context_block.*cannot be compiled by TorchScript"):
        torch.jit.script(model.layer2)
    torch.jit.script(model.layer1)  # blocks without plugins script as before


@pytest.mark.parametrize("kwargs, mmdet_type", [
    (dict(depth=51), KeyError),  # mmdet: KeyError("invalid depth 51 for resnet")
    (dict(depth=50, num_stages=5), AssertionError),  # mmdet: assert 1 <= num_stages <= 4
    (dict(depth=50, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1), out_indices=(0, 1, 2, 3)), AssertionError),
    (dict(depth=50, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1, 1)), AssertionError),
    (dict(depth=50, style="tensorflow"), AssertionError),
    (dict(depth=18, dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
          stage_with_dcn=(False, True, True, True)), AssertionError),  # mmdet: BasicBlock "Not implemented yet"
    (dict(depth=50, init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet50"),
          pretrained="torchvision://resnet50"), AssertionError),
])
def test_featx_refuses_what_mmdets_resnet_refuses_with_mmdets_exception_type(kwargs, mmdet_type):
    """Code written against mmdet's ResNet (``except AssertionError``/``KeyError``) catches featx's refusal too,
    and featx's message says what to change; mmdet refuses the same arguments."""
    with DefaultScope.overwrite_default_scope("mmdet"):
        with pytest.raises(mmdet_type):
            MMDET_MODELS.build(dict(type="ResNet", **kwargs))
        with pytest.raises(mmdet_type) as refused:
            MMDET_MODELS.build(dict(type="featx.ResNet", **kwargs))
    assert isinstance(refused.value, featx.errors.FeatxError) and isinstance(refused.value, ValueError)
