# ResNet-50 + FPN (P2-P6, 256 channels): the Faster R-CNN pyramid.
model = dict(
    type="featx.ResNet50FPN",
    frozen_stages=1,
    norm_eval=True,
    neck=dict(out_channels=256, num_outs=5),
)
