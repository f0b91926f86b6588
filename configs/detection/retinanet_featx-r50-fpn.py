# mmdet's own RetinaNet R-50-FPN 1x COCO config on featx.ResNet50RetinaFPN: P3-P7 (strides 8-128, 256 channels),
# P6 by a stride-2 conv on C5 and P7 on ReLU(P6) (torchvision's LastLevelP6P7; mmdet's base neck applies no ReLU
# before P7: set neck=dict(relu_before_extra_convs=False) on the composite for that).
_base_ = "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"
custom_imports = dict(imports=["featx"], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type="featx.ResNet50RetinaFPN", frozen_stages=1, norm_eval=True, weights="DEFAULT"),
    neck=None,
)
