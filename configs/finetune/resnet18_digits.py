# A featx ResNet-18 trained from scratch on scikit-learn's handwritten digits (1,797 real 8x8 scans).
#   featx make-digits data/digits
#   featx train configs/finetune/resnet18_digits.py
# Target: >= 98.5% val top-1 on 2 CPU cores (measured accuracy and time: docs/training.md).
_base_ = ["./_base_/runtime.py"]

data_root = "data/digits"
size = 32  # the 8x8 scans upscaled 4x: C5 is 1x1
mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
tail = [dict(type="ToImage"), dict(type="ToDtype", dtype="float32", scale=True),
        dict(type="Normalize", mean=mean, std=std)]
# no flips: a mirrored digit is another glyph
train_pipeline = [dict(type="Resize", size=size, antialias=True), dict(type="RandomCrop", size=size, padding=4)] + tail
# the crop is a no-op on the square digits; on other images it gives the square batches the loader stacks
val_pipeline = [dict(type="Resize", size=size, antialias=True), dict(type="CenterCrop", size=size)] + tail

# what the train and val loaders share
loader = dict(num_workers=0, collate_fn=dict(type="default_collate"))
dataset = dict(type="featx.ImageFolderDataset", data_root=data_root)
train_dataloader = dict(batch_size=64, sampler=dict(type="DefaultSampler", shuffle=True), **loader,
                        dataset=dict(**dataset, split="train", pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, sampler=dict(type="DefaultSampler", shuffle=False), **loader,
                      dataset=dict(**dataset, split="val", pipeline=val_pipeline))

model = dict(
    type="featx.ImageClassifier",
    backbone=dict(type="featx.ResNet", arch="resnet18", out_indices=(3,)),
    num_classes=None,  # from the data
    dropout=0.0, label_smoothing=0.1, mean=mean, std=std,
)

max_epochs = 12
optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type="CosineAnnealingLR", T_max=max_epochs - 1, eta_min=1e-4, by_epoch=True, begin=1, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
