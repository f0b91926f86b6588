"""featx inside real detectors: torchvision's five detector classes and mmdet-format configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torchvision.models.detection import FCOS, FasterRCNN, KeypointRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.retinanet import _default_anchorgen

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
