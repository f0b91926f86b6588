# mmdet's own Mask R-CNN R-50-FPN 1x COCO config on featx.ResNet50FPN (P2-P6), no separate neck.
_base_ = "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"
custom_imports = dict(imports=["featx"], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type="featx.ResNet50FPN", frozen_stages=1, norm_eval=True, weights="DEFAULT"),
    neck=None,
)
