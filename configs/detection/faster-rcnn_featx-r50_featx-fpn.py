# The same Faster R-CNN with the backbone and the neck given separately, mmdet style:
# featx.ResNet (C2-C5) + featx.FPN (P2-P6 by max-pool), both built by their scoped names.
_base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
custom_imports = dict(imports=["featx"], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type="featx.ResNet", depth=50, out_indices=(0, 1, 2, 3), frozen_stages=1,
                  norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch", weights="DEFAULT"),
    neck=dict(_delete_=True, type="featx.FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
)
