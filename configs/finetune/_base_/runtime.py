# Runtime shared by the fine-tuning configs: mmengine's hooks, checkpointing and logging.
# "featx." types resolve by prefix; mmengine's own (samplers, optimizers, schedulers) in its root registries
default_scope = "mmengine"

default_hooks = dict(
    runtime_info=dict(type="RuntimeInfoHook"),
    timer=dict(type="IterTimerHook"),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    param_scheduler=dict(type="ParamSchedulerHook"),
    logger=dict(type="LoggerHook", interval=10),
    # the last epoch and the best top-1 are kept; featx train makes the writes atomic
    checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=1, save_last=True,
                    save_best="accuracy/top1", rule="greater"),
)
custom_hooks = [
    dict(type="featx.ProgressHook"),  # a progress bar per epoch: iterations, loss, lr, ETA
    dict(type="featx.TrainingReportHook"),  # history.json, curves.png, confusion_matrix.png, metrics.json
]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
log_processor = dict(by_epoch=True, window_size=10)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
val_evaluator = dict(type="featx.ClassificationMetric")
val_cfg = dict()
