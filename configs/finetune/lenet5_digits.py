# LeNet-5 (featx.LeNet5, classic: tanh + average pooling) trained from scratch on scikit-learn's handwritten
# digits, on one channel at 32x32 as in the paper: the 8x8 scans upscaled to 28x28 and padded by 2, then
# F6 (84, tanh) and the output layer as the classifier head.
#   featx make-digits data/digits && featx train configs/finetune/lenet5_digits.py
_base_ = ["./_base_/runtime.py"]

data_root = "data/digits"
mean, std = [0.5], [0.5]
tail = [dict(type="Grayscale", num_output_channels=1), dict(type="ToImage"),
        dict(type="ToDtype", dtype="float32", scale=True), dict(type="Normalize", mean=mean, std=std)]
# 28x28 digits padded by 2 to 32x32 (the paper's layout); a small random shift for training, no flips
train_pipeline = [dict(type="Resize", size=28, antialias=True), dict(type="Pad", padding=2),
                  dict(type="RandomAffine", degrees=0, translate=(0.06, 0.06))] + tail
val_pipeline = [dict(type="Resize", size=28, antialias=True), dict(type="Pad", padding=2)] + tail

loader = dict(num_workers=0, collate_fn=dict(type="default_collate"))
dataset = dict(type="featx.ImageFolderDataset", data_root=data_root)
train_dataloader = dict(batch_size=32, sampler=dict(type="DefaultSampler", shuffle=True), **loader,
                        dataset=dict(**dataset, split="train", pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, sampler=dict(type="DefaultSampler", shuffle=False), **loader,
                      dataset=dict(**dataset, split="val", pipeline=val_pipeline))

model = dict(
    type="featx.ImageClassifier",
    backbone=dict(type="featx.LeNet5", style="classic", in_channels=1, out_indices=(2,)),  # C5: 120 x 1 x 1
    num_classes=None,  # from the data
    hidden_channels=84, hidden_act="Tanh",  # F6
    mean=mean, std=std,
)

max_epochs = 30
optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type="CosineAnnealingLR", T_max=max_epochs - 1, eta_min=1e-4, by_epoch=True, begin=1, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
