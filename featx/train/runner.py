"""``featx train``: check the data, complete the config, and run mmengine's Runner.

Everything mmengine owns stays mmengine's (loops, hooks, optimizer wrappers, schedulers,
checkpointing, logging, launchers); this module only prepares the config:

- the dataset is scanned and validated before the Runner exists (bad data is a ``DataError``
  here, never a crash mid-epoch), and ``model.num_classes`` is filled from its classes;
- ``train_cfg.max_epochs`` changed from the file's value (and no ``param_scheduler`` given) moves the end of
  the epoch-based schedule to the new count (``rescale_schedule``);
- ``--resume`` without a path finds the last checkpoint of the work dir; the checkpoint's seed becomes the
  run's, and ``EpochSeedHook`` seeds each epoch from (seed, epoch, rank), so a resumed run draws the same
  batches and augmentations as an uninterrupted one;
- a backbone that freezes layers or normalization statistics with no weights to load warns
  (``UntrainedFrozenWarning``);
- ``--amp`` switches to mmengine's ``AmpOptimWrapper`` (CUDA only);
- ``--launcher pytorch`` on a machine without CUDA initializes gloo and DDP without device ids.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from featx.config_text import read_config_file
from featx.errors import DataError, TrainError, UntrainedFrozenWarning
from featx.shipped import config_path
from featx.train.checkpoint import ATOMIC_BACKEND, find_resume_checkpoint, read_training_checkpoint
from featx.train.data import resolve_splits
from featx.train.hooks import EpochSeedHook, ScheduleLengthHook

__all__ = ["TrainError", "load_config", "prepare_config", "rescale_schedule", "train", "untrained_frozen_layers"]


def load_config(config: Union[str, Path, Config], cfg_options: Optional[dict] = None) -> Config:
    if isinstance(config, Config):
        cfg = config.copy()
    else:
        cfg = read_config_file(config_path(str(config)))
    file_epochs = cfg.get("train_cfg", {}).get("max_epochs")
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    for key in ("model", "train_dataloader", "train_cfg", "optim_wrapper"):
        if key not in cfg:
            raise TrainError(f"the config defines no `{key}`; see configs/finetune/ for complete examples")
    for key in ("max_epochs", "max_iters"):
        value = cfg.train_cfg.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise TrainError(f"train_cfg.{key} must be a positive int, got {value!r}: nothing would be trained")
    new_epochs = cfg.train_cfg.get("max_epochs")
    schedule_given = any(str(k).split(".")[0] == "param_scheduler" for k in (cfg_options or {}))
    if file_epochs is not None and new_epochs is not None and new_epochs != file_epochs and not schedule_given:
        rescale_schedule(cfg, file_epochs, new_epochs)
    return cfg


def rescale_schedule(cfg: Config, old_epochs: int, new_epochs: int) -> None:
    """Fit ``cfg.param_scheduler`` (in place), written for ``old_epochs``, to ``new_epochs``.

    Epoch-based phases that end before ``old_epochs`` (warm-up) keep their epochs; the phases that run to the
    end (``end >= old_epochs``, or no ``end``) move their ``end`` and ``T_max`` by ``new_epochs - old_epochs``,
    so a cosine schedule anneals at the last epoch asked. A run no longer than a warm-up is a ``TrainError``
    whose message gives the ``--cfg-options`` that set the schedule's epochs too.
    """
    phases = cfg.get("param_scheduler")
    if not phases:
        return
    listed = phases if isinstance(phases, list) else [phases]
    by_epoch = [(i, p) for i, p in enumerate(listed) if isinstance(p, dict) and p.get("by_epoch", True)]
    to_end = [(i, p) for i, p in by_epoch if p.get("end") is None or p["end"] >= old_epochs]
    early = [(i, p) for i, p in by_epoch if (i, p) not in to_end]
    too_long = [(i, p) for i, p in early if p["end"] >= new_epochs] + \
               [(i, p) for i, p in to_end if p.get("begin", 0) >= new_epochs]
    if too_long:
        i, p = too_long[0]
        half = new_epochs / 2
        fix = [f"train_cfg.max_epochs={new_epochs}"]
        for j, q in by_epoch:
            if (j, q) in early:  # warm-up: the first half of the run
                fix.append(f"param_scheduler.{j}.end={half}")
            else:  # the rest: the second half
                fix += [f"param_scheduler.{j}.begin={half}", f"param_scheduler.{j}.end={new_epochs}"]
                fix += [f"param_scheduler.{j}.T_max={new_epochs - half}"] if "T_max" in q else []
        raise TrainError(
            f"train_cfg.max_epochs={new_epochs} is not longer than the schedule's param_scheduler[{i}] "
            f"({p.get('type', 'scheduler')}, epochs {p.get('begin', 0)}-{p.get('end')} of the config's {old_epochs}); "
            f"ask for more epochs, or set the schedule's epochs too (fractions need convert_to_iter_based=True), "
            f"e.g. --cfg-options {' '.join(fix)}")
    delta = new_epochs - old_epochs
    for _, phase in to_end:
        if phase.get("end") is not None:
            phase["end"] = phase["end"] + delta
        if "T_max" in phase:
            phase["T_max"] = phase["T_max"] + delta
    cfg.param_scheduler = phases


def untrained_frozen_layers(cfg: Config) -> Optional[str]:
    """What a config freezes without weights to freeze (``None`` when it loads weights or freezes nothing).

    Frozen stages keep their random init, and ``norm_eval`` keeps every BatchNorm at its initial statistics
    (mean 0, variance 1) while the activations they see are far from that: the run trains to chance.
    """
    backbone = cfg.get("model", {}).get("backbone")
    if not isinstance(backbone, dict) or cfg.get("load_from"):
        return None
    frozen = backbone.get("frozen_stages", -1)
    norm_eval = bool(backbone.get("norm_eval", False))
    loads = backbone.get("weights") or backbone.get("pretrained") or (backbone.get("init_cfg") or {}).get("checkpoint")
    if loads or (not norm_eval and (not isinstance(frozen, int) or frozen < 0)):
        return None
    what = []
    if isinstance(frozen, int) and frozen >= 0:
        stages = "" if frozen == 0 else " and stage 1" if frozen == 1 else f" and stages 1-{frozen}"
        what.append(f"frozen_stages={frozen} keeps the stem{stages}"
                    + " at their random init")
    if norm_eval:
        what.append("norm_eval=True keeps every BatchNorm at its initial statistics")
    return ("model.backbone loads no weights, but " + "; ".join(what) + ": such a run trains to chance. Load "
            "weights (model.backbone.weights=DEFAULT or a file), or train it all: --cfg-options "
            "model.backbone.frozen_stages=-1 model.backbone.norm_eval=False")


def _dataset_cfgs(cfg: Config) -> list[dict]:
    return [cfg[k]["dataset"] for k in ("train_dataloader", "val_dataloader") if cfg.get(k) and "dataset" in cfg[k]]


def prepare_config(cfg: Config, work_dir: Optional[str] = None, resume: Optional[str] = None, amp: bool = False,
                   launcher: str = "none", data_root: Optional[str] = None, config_name: str = "run") -> Config:
    """Return the config mmengine's Runner will run (see the module docstring). Raises
    ``DataError``/``TrainError``/``FileNotFoundError`` for anything that would fail later."""
    cfg = cfg.copy()
    cfg.setdefault("default_scope", "mmengine")
    cfg.work_dir = str(work_dir or cfg.get("work_dir") or Path("work_dirs") / config_name)
    cfg.launcher = launcher
    if data_root is not None:
        for ds in _dataset_cfgs(cfg):
            ds["data_root"] = data_root

    # the data: scanned and validated now, before anything is built
    train_ds = cfg.train_dataloader.dataset
    if "data_root" not in train_ds:
        raise TrainError("train_dataloader.dataset has no data_root")
    info = resolve_splits(train_ds["data_root"], train_ds.get("val_ratio", 0.2), train_ds.get("seed", 0),
                          verify=train_ds.get("verify", "decode"))
    num_classes = len(info["classes"])
    for ds in _dataset_cfgs(cfg)[1:]:
        if ds.get("data_root") != train_ds["data_root"]:
            other = resolve_splits(ds["data_root"], ds.get("val_ratio", 0.2), ds.get("seed", 0),
                                   verify=ds.get("verify", "decode"))
            if other["classes"] != info["classes"]:
                raise DataError(f"the validation data at {ds['data_root']} has classes {other['classes'][:8]}, "
                                f"the training data {info['classes'][:8]}")
    if cfg.model.get("num_classes") is None:
        cfg.model.num_classes = num_classes
    elif int(cfg.model.num_classes) != num_classes:
        raise DataError(f"model.num_classes is {cfg.model.num_classes} but {train_ds['data_root']} has "
                        f"{num_classes} classes ({', '.join(info['classes'][:10])}); set num_classes=None to "
                        "take it from the data")

    # resuming
    if resume is not None:
        if resume == "auto":
            found = find_resume_checkpoint(cfg.work_dir)
            if found is None:
                raise TrainError(f"--resume: no checkpoint in {cfg.work_dir} to resume from "
                                 "(pass a checkpoint path, or the --work-dir of the run to continue)")
            resume = str(found)
        elif not Path(resume).is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
        checkpoint = read_training_checkpoint(resume)  # refused now, with featx's message, if unsafe or broken
        seed = checkpoint.get("meta", {}).get("seed")
        if isinstance(seed, int):  # the sampler takes its seed when the Runner is built, before resuming
            cfg.setdefault("randomness", {})["seed"] = seed
        cfg.resume = True
        cfg.load_from = resume

    untrained = untrained_frozen_layers(cfg)
    if untrained:
        warnings.warn(untrained, UntrainedFrozenWarning, stacklevel=2)

    # mixed precision
    if amp:
        if not torch.cuda.is_available():
            raise TrainError("--amp needs a CUDA GPU (mmengine's AmpOptimWrapper runs on GPU/NPU/MLU only); "
                             "drop --amp to train in fp32 on the CPU")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")

    # atomic checkpoints (a kill never leaves a truncated epoch_N.pth)
    hooks = cfg.setdefault("default_hooks", {})
    ckpt = hooks.get("checkpoint")
    if ckpt is not None and ckpt.get("backend_args") is None:
        ckpt["backend_args"] = {"backend": ATOMIC_BACKEND}

    # distributed
    if not torch.cuda.is_available():  # the shipped runtime says nccl, which a CPU-only machine cannot use
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    if launcher not in ("none", "pytorch"):
        raise TrainError(f"--launcher must be 'none' or 'pytorch', got {launcher!r}")
    if launcher == "pytorch":
        missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR") if k not in os.environ]
        if missing:
            raise TrainError(f"--launcher pytorch expects to be started by torchrun (missing {', '.join(missing)}): "
                             "torchrun --nproc_per_node=2 -m featx train CONFIG --launcher pytorch")
        env = cfg.setdefault("env_cfg", {})
        dist_cfg = env.setdefault("dist_cfg", {})
        if torch.cuda.is_available():
            dist_cfg.setdefault("backend", "nccl")
        else:
            dist_cfg["backend"] = "gloo"
            # mmengine's DDP wrapper passes device_ids=[LOCAL_RANK], which DDP rejects for CPU modules
            wrapper = cfg.get("model_wrapper_cfg") or {"type": "MMDistributedDataParallel", "broadcast_buffers": False}
            wrapper["device_ids"] = None
            cfg.model_wrapper_cfg = wrapper
    return cfg


class _ConsoleQuietRunner(Runner):
    """mmengine's Runner whose console shows warnings and errors only (unless ``verbose``): its environment
    dump, whole config, hook table and periodic lines still go to the work dir's log file, in full. featx's own
    progress bar and per-epoch lines (``ProgressHook``) and the command's summary are the console."""

    verbose = False

    def build_logger(self, *args: Any, **kwargs: Any):
        logger = super().build_logger(*args, **kwargs)
        if not self.verbose:
            for handler in logger.handlers:
                if type(handler) is logging.StreamHandler:  # the console; FileHandler is a subclass, kept
                    handler.setLevel(max(handler.level, logging.WARNING))
                    handler.addFilter(_hide_internal_deprecations)
        return logger


def _hide_internal_deprecations(record: logging.LogRecord) -> bool:
    """mmengine's deprecation notes about the file backend featx's atomic checkpoints use (featx's choice), and
    its warning per frozen parameter that the optimizer skips (33 lines for ``frozen_stages=1`` of a ResNet-50,
    which the config asked for): nothing a user can act on; they stay in the log file."""
    text = record.getMessage()
    return not ('"FileClient" will be deprecated' in text or '"HardDiskBackend" is the alias' in text
                or "is skipped since its requires_grad=False" in text)


def log_file_of(runner: Runner) -> Optional[Path]:
    """The file mmengine's Runner writes its full log to (``<work_dir>/<timestamp>/<timestamp>.log``)."""
    for handler in runner.logger.handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def _publish_best(best: Path) -> Path:
    """``best.pth`` beside mmengine's ``best_<metric>_epoch_<N>.pth``: the same file (a hard link, or a copy where
    links are not possible), under a name that does not change with the epoch; written atomically."""
    stable = best.with_name("best.pth")
    tmp = stable.with_name(f".best.pth.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(best, tmp)
    except OSError:
        shutil.copyfile(best, tmp)
    os.replace(tmp, stable)
    return stable


def _init_cpu_process_group(cfg: Config) -> None:
    """mmengine's launcher calls ``torch.cuda.set_device`` first, which fails without a GPU; on a
    CPU-only machine featx initializes the gloo process group itself (mmengine then skips it)."""
    if cfg.launcher == "pytorch" and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")


def train(config: Union[str, Path, Config], work_dir: Optional[str] = None, resume: Optional[str] = None,
          amp: bool = False, cfg_options: Optional[dict] = None, launcher: str = "none",
          data_root: Optional[str] = None, extra_hooks: Optional[list] = None, verbose: bool = False) -> dict[str, Any]:
    """Fine-tune as the config says; returns ``{"work_dir", "best_checkpoint", "last_checkpoint", "metrics",
    "log_file"}`` (``best_checkpoint``: ``<work_dir>/best.pth``, the best epoch's checkpoint under a fixed name) (``metrics`` from ``metrics.json``, main process only). mmengine's log goes to the console
    only with ``verbose`` (always to ``log_file``)."""
    name = Path(str(config)).stem if not isinstance(config, Config) else "run"
    cfg = prepare_config(load_config(config, cfg_options), work_dir, resume, amp, launcher, data_root, name)
    _init_cpu_process_group(cfg)
    runner_class = type("FeatxRunner", (_ConsoleQuietRunner,), {"verbose": verbose})
    runner = runner_class.from_cfg(cfg)
    runner.register_hook(EpochSeedHook())
    runner.register_hook(ScheduleLengthHook())
    for hook in extra_hooks or []:
        runner.register_hook(hook)
    runner.train()
    out: dict[str, Any] = {"work_dir": cfg.work_dir, "last_checkpoint": str(find_resume_checkpoint(cfg.work_dir)),
                           "log_file": str(log_file_of(runner) or "")}
    ckpt_hook = next((h for h in runner.hooks if type(h).__name__ == "CheckpointHook"), None)
    best = getattr(ckpt_hook, "best_ckpt_path", None) if ckpt_hook else None
    out["best_checkpoint"] = str(best) if best else None
    if best and is_main_process():
        out["best_checkpoint"] = str(_publish_best(Path(best)))
    metrics_path = Path(cfg.work_dir) / "metrics.json"
    out["metrics"] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    return out
