"""featx inside real detectors: torchvision's five detector classes and mmdet-format configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torchvision.models.detection import FCOS, FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.retinanet import _default_anchorgen
from torchvision.ops import FrozenBatchNorm2d

import featx
from featx.integrations.torchvision import anchor_generator, as_detection_backbone, detector_kwargs

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detection"

# fewer sampled RoIs than torchvision's 512 keep the R-CNN heads quick on a CPU
RCNN = {"box_batch_size_per_image": 32, "rpn_post_nms_top_n_train": 200, "box_detections_per_img": 10}
SPECS = {
    "faster_rcnn": (FasterRCNN, "ResNet18FPN", RCNN),
    "mask_rcnn": (MaskRCNN, "ResNet18FPN", RCNN),
    "keypoint_rcnn": (KeypointRCNN, "ResNet18FPN", {"num_keypoints": 3, **RCNN}),
    "retinanet": (RetinaNet, "ResNet18RetinaFPN", {}),
    "fcos": (FCOS, "ResNet18RetinaFPN", {}),
}


def _targets(h: int, w: int, kind: str) -> dict:
    boxes = torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 30.0, min(w - 1.0, 150.0), 100.0]])
    t = {"boxes": boxes, "labels": torch.tensor([1, 2])}
    if kind == "mask_rcnn":
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        t["masks"] = masks
    if kind == "keypoint_rcnn":
        t["keypoints"] = torch.tensor([[[20.0, 30.0, 1], [40.0, 50.0, 1], [50.0, 80.0, 1]],
                                       [[80.0, 40.0, 1], [100.0, 60.0, 1], [120.0, 90.0, 1]]])
    return t


@pytest.mark.parametrize("kind", list(SPECS))
def test_train_step_and_inference_in_torchvision_detector(kind):
    cls, name, extra = SPECS[kind]
    body = featx.create_model(name, frozen_stages=1, norm_eval=True)
    det = cls(as_detection_backbone(body), num_classes=3, min_size=128, max_size=192,
              **detector_kwargs(body, kind), **extra)
    det.train()
    images = [torch.rand(3, 128, 160), torch.rand(3, 131, 173)]  # the second one odd-sized
    losses = det(images, [_targets(128, 160, kind), _targets(131, 173, kind)])
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    bb = body.backbone
    # frozen stem and stage 1 get no gradient; the unfrozen stages and the FPN do
    assert bb.conv1.weight.grad is None and bb.layer1[0].conv1.weight.grad is None
    assert bb.layer3[0].conv1.weight.grad is not None and bb.layer3[0].conv1.weight.grad.abs().sum() > 0
    assert body.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert not bb.layer2[0].bn1.training  # norm_eval survives the detector's train()

    det.eval()
    with torch.no_grad():
        out = det([torch.rand(3, 131, 173)])[0]
    n = out["boxes"].shape[0]
    assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,) and out["labels"].shape == (n,)
    if n:
        assert out["boxes"][:, 2].max() <= 173 and out["boxes"][:, 3].max() <= 131  # original image scale
    if kind == "mask_rcnn":
        assert out["masks"].shape == (n, 1, 131, 173)
    if kind == "keypoint_rcnn":
        assert out["keypoints"].shape == (n, 3, 3)


def test_backbone_adapter_contract():
    body = featx.create_model("ResNet18FPN")
    wrapped = as_detection_backbone(body)
    assert wrapped.out_channels == 256 and as_detection_backbone(wrapped) is wrapped
    with torch.no_grad():
        feats = wrapped.eval()(torch.rand(1, 3, 64, 96))
    # torchvision's BackboneWithFPN keys: levels from backbone stages "0".."3", the max-pooled P6 "pool"
    assert list(feats) == ["0", "1", "2", "3", "pool"] and feats["pool"].shape == (1, 256, 1, 2)
    retina = as_detection_backbone(featx.create_model("ResNet18RetinaFPN"))
    assert retina.names == ["0", "1", "2", "p6", "p7"]  # LastLevelP6P7's names for conv-made levels
    with pytest.raises(ValueError, match="one channel count on every level"):
        as_detection_backbone(featx.create_model("ResNet18"))


def test_anchor_settings_equal_torchvision_defaults():
    fpn = featx.create_model("ResNet18FPN")
    assert anchor_generator(fpn, "faster_rcnn").sizes == ((32,), (64,), (128,), (256,), (512,))
    retina = featx.create_model("ResNet18RetinaFPN")
    assert anchor_generator(retina, "retinanet").sizes == _default_anchorgen().sizes
    assert anchor_generator(retina, "fcos").sizes == ((8,), (16,), (32,), (64,), (128,))
    kw = detector_kwargs(fpn, "mask_rcnn")
    assert kw["box_roi_pool"].featmap_names == ["0", "1", "2", "3"] and "mask_roi_pool" in kw
    with pytest.raises(ValueError, match="detector must be one of"):
        detector_kwargs(fpn, "yolo")


# -- mmdet's own configs with featx backbones, built by mmdet's registry ---------------------------
def _pyramid_expected_by_heads(model_cfg) -> tuple[int, list[int]]:
    if "rpn_head" in model_cfg:
        return model_cfg.rpn_head.in_channels, list(model_cfg.rpn_head.anchor_generator.strides)
    return model_cfg.bbox_head.in_channels, list(model_cfg.bbox_head.anchor_generator.strides)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.py")), ids=lambda p: p.name)
def test_detection_configs_build_and_fit_their_heads(path):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ["featx"] and cfg.default_scope == "mmdet"
    model_cfg = cfg.model
    model_cfg.backbone.weights = None  # no network here; weights loading has its own tests
    with DefaultScope.overwrite_default_scope("mmdet"):
        detector = MMDET_MODELS.build(model_cfg)  # mmdet's own detector class around the featx modules
    backbone, neck = detector.backbone, (detector.neck if detector.with_neck else None)
    assert type(backbone).__module__.startswith("featx.") and (neck is None or type(neck).__module__.startswith("featx."))
    with torch.no_grad():
        feats = detector.eval().extract_feat(torch.rand(1, 3, 96, 128))
    infos = neck.feature_info if neck is not None else backbone.feature_info
    channels, strides = _pyramid_expected_by_heads(model_cfg)
    assert [f.stride for f in infos] == strides and len(feats) == len(strides)
    assert all(f.shape[1] == channels for f in feats)
    for f, s in zip(feats, strides):
        assert f.shape[-1] == -(-128 // s)  # each level really is at its stride
    roi = model_cfg.get("roi_head")
    if roi is not None:
        assert list(roi.bbox_roi_extractor.featmap_strides) == strides[:4]
        assert roi.bbox_roi_extractor.out_channels == channels
        if "mask_roi_extractor" in roi:
            assert list(roi.mask_roi_extractor.featmap_strides) == strides[:4]


# -- torchvision's defaults, as every torchvision tutorial builds a detector ------------------------
@pytest.mark.parametrize("kind", list(SPECS))
def test_torchvision_detectors_work_with_only_num_classes(kind):
    """``FasterRCNN(backbone, num_classes)``, where resnet_fpn_backbone goes: torchvision's default anchors and
    RoI poolers (levels "0".."3", "pool") fit a featx FPN composite (and RetinaNet/FCOS a RetinaFPN one)."""
    cls, name, extra = SPECS[kind]
    backbone = as_detection_backbone(featx.create_model(name))
    det = cls(backbone, num_classes=3, min_size=128, max_size=192, **{k: v for k, v in extra.items()
                                                                    if k == "num_keypoints"})
    det.train()
    losses = det([torch.rand(3, 128, 160)], [_targets(128, 160, kind)])
    assert losses and all(torch.isfinite(v) for v in losses.values())
    det.eval()
    with torch.no_grad():
        out = det([torch.rand(3, 131, 173)])[0]
    assert out["boxes"].shape[1:] == (4,)


@pytest.mark.parametrize("detector", ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn",
                                      "retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_featx_composite_replaces_a_torchvision_detectors_backbone_and_trains(detector):
    import torchvision

    from featx.models import DETECTION_PRESETS

    det = torchvision.models.get_model(detector, weights=None, weights_backbone=None, num_classes=3,
                                       min_size=128, max_size=160)
    preset = dict(DETECTION_PRESETS[detector])
    det.backbone = as_detection_backbone(featx.create_model(preset.pop("model"), **preset))
    det.train()
    kind = {"fasterrcnn": "faster_rcnn", "maskrcnn": "mask_rcnn", "keypointrcnn": "keypoint_rcnn"}.get(
        detector.split("_")[0], detector.split("_")[0])
    target = _targets(128, 160, kind)
    if kind == "keypoint_rcnn":  # torchvision's keypoint R-CNN predicts 17 keypoints
        target["keypoints"] = torch.cat([target["keypoints"]] * 6, dim=1)[:, :17]
    losses = det([torch.rand(3, 128, 160)], [target])
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert det.backbone.body.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_same_detections_as_torchvision_from_the_same_detection_checkpoint(tmp_path, monkeypatch):
    """torchvision's Faster R-CNN on COCO_V1 against the same detector whose backbone is the featx composite
    loaded (by featx's loader) from that checkpoint: the same boxes, scores and labels, in float64."""
    import torchvision
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights as W

    from featx.models import detection_composite
    from helpers import place_in_hub_cache, randomize_norm_stats

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    source = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    randomize_norm_stats(source, seed=21)
    place_in_hub_cache(source.state_dict(), W.COCO_V1.url, monkeypatch)

    small = dict(box_score_thresh=0.0, min_size=256, max_size=320)  # every box kept; small images for the CPU
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="COCO_V1", **small)
    ours = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="COCO_V1", **small)
    ours.backbone = as_detection_backbone(detection_composite("fasterrcnn_resnet50_fpn", weights="COCO_V1"))
    assert ours.backbone.body.load_report.key_map == "torchvision detection -> featx"
    # these legacy weights run with FrozenBatchNorm eps 0, as torchvision's builder sets it (a 1.5e-4 difference else)
    assert {m.eps for m in ours.backbone.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 240, 320, generator=g, dtype=torch.float64), torch.rand(3, 257, 199, generator=g,
                                                                                  dtype=torch.float64)]
    with torch.no_grad():
        ref = reference.double().eval()(images)
        out = ours.double().eval()(images)
    for o, r in zip(out, ref):
        assert len(r["boxes"]) > 50  # a real comparison: torchvision keeps up to 100 boxes per image
        assert torch.equal(o["labels"], r["labels"])
        assert torch.allclose(o["boxes"], r["boxes"], rtol=0, atol=1e-8)
        assert torch.allclose(o["scores"], r["scores"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("model,kwargs,words", [
    ("ResNet18RetinaFPN", {}, "box_roi_pool pools levels ['0', '1', '2', '3'], but the featx pyramid has no '3'"),
    ("ResNet18FPN", {"neck": {"num_outs": 4}}, "anchor generator has 5 sizes"),
])
def test_a_pyramid_that_does_not_fit_the_detector_fails_early_and_clearly(model, kwargs, words):
    from featx.errors import DetectorMismatchError

    det = FasterRCNN(as_detection_backbone(featx.create_model(model, **kwargs)), num_classes=3, min_size=128,
                     max_size=160).eval()
    with pytest.raises(DetectorMismatchError) as e, torch.no_grad():
        det([torch.rand(3, 128, 160)])
    assert words in str(e.value) and "detector_kwargs" in str(e.value)
    # built with detector_kwargs, the same pyramid fits
    backbone = det.backbone
    fitted = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=160,
                        **detector_kwargs(backbone, "faster_rcnn")).eval()
    with torch.no_grad():
        assert fitted([torch.rand(3, 128, 160)])[0]["boxes"].shape[1:] == (4,)
