# ResNet-50 + FPN on C3-C5 with P6 (from C5) and P7: the RetinaNet / FCOS pyramid.
model = dict(
    type="featx.BackboneFPN",
    backbone=dict(type="featx.ResNet", depth=50, frozen_stages=1, norm_eval=True),
    neck=dict(type="featx.FPN", out_channels=256, num_outs=5, start_level=1,
              add_extra_convs="on_input", relu_before_extra_convs=True),
)
