# mmdet's own Faster R-CNN R-50-FPN 1x COCO config with the featx ResNet-50 + FPN composite as its backbone:
# featx.ResNet50FPN returns P2-P6 (strides 4-64, 256 channels), exactly what mmdet's RPN (anchor strides 4-64)
# and RoI extractor (strides 4-32) ask for, so the separate neck goes.
# Use (featx and mmdet installed): python mmdet/tools/train.py configs/detection/faster-rcnn_featx-r50-fpn.py
_base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
custom_imports = dict(imports=["featx"], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type="featx.ResNet50FPN", frozen_stages=1, norm_eval=True, weights="DEFAULT"),
    neck=None,
)
