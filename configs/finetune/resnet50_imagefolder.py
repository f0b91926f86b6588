# Fine-tune an ImageNet-pretrained featx ResNet-50 on your own ImageFolder:
#   featx train configs/finetune/resnet50_imagefolder.py --data-root /path/to/images
# The root holds train/<class>/ and val/<class>/ folders, or just <class>/ folders (split 80/20, seed 0).
# Pretrained weights come from torchvision (downloaded once into $TORCH_HOME/hub/checkpoints).
_base_ = ["./_base_/runtime.py"]

data_root = "data/imagefolder"
size = 224
mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # what the torchvision weights expect
tail = [dict(type="ToImage"), dict(type="ToDtype", dtype="float32", scale=True),
        dict(type="Normalize", mean=mean, std=std)]
train_pipeline = [dict(type="RandomResizedCrop", size=size, antialias=True), dict(type="RandomHorizontalFlip")] + tail
val_pipeline = [dict(type="Resize", size=256, antialias=True), dict(type="CenterCrop", size=size)] + tail

# what the train and val loaders share
loader = dict(num_workers=2, persistent_workers=True, collate_fn=dict(type="default_collate"))
dataset = dict(type="featx.ImageFolderDataset", data_root=data_root, val_ratio=0.2, seed=0)
train_dataloader = dict(batch_size=32, sampler=dict(type="DefaultSampler", shuffle=True), **loader,
                        dataset=dict(**dataset, split="train", pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, sampler=dict(type="DefaultSampler", shuffle=False), **loader,
                      dataset=dict(**dataset, split="val", pipeline=val_pipeline))

model = dict(
    type="featx.ImageClassifier",
    # stem + layer1 frozen, BatchNorm statistics frozen: the usual small-data fine-tuning recipe
    backbone=dict(type="featx.ResNet", arch="resnet50", out_indices=(3,), weights="DEFAULT",
                  frozen_stages=1, norm_eval=True),
    num_classes=None,
    dropout=0.2, label_smoothing=0.1, mean=mean, std=std,
)

max_epochs = 20
optim_wrapper = dict(
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
    # the pretrained backbone learns 10x slower than the new head
    paramwise_cfg=dict(custom_keys={"backbone": dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
    dict(type="CosineAnnealingLR", T_max=max_epochs - 2, eta_min=1e-6, by_epoch=True, begin=2, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
