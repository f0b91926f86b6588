"""mmengine hooks for fine-tuning: a live progress bar, the end-of-run report, and per-epoch seeds.

- ``ProgressHook``: a progress bar per training epoch (iterations, smoothed loss, learning rate,
  elapsed time and ETA) and one line per validation, on the main process: the console of ``featx train``
  (mmengine's own log goes to the work dir's log file, and to the console with ``--verbose``).
- ``TrainingReportHook``: keeps the per-epoch history (train loss, learning rate, validation
  metrics) in ``history.json`` (so it survives a resume) and writes ``curves.png``,
  ``confusion_matrix.png`` and ``metrics.json`` (per-class accuracy, confusion matrix) at the end.
- ``ScheduleLengthHook``: on resume, the schedule's length (``begin``, ``end``, ``T_max``) comes from the
  config, its position from the checkpoint, so a run resumed with another ``max_epochs`` anneals at its end.
- ``EpochSeedHook``: seeds python, numpy and torch at the start of each training epoch from the run's seed,
  the epoch and the rank, so an epoch's augmentations and dropout do not depend on what ran before it (a
  resumed run equals an uninterrupted one).

The console's per-epoch loss and ``history.json``'s ``train_loss`` are the same figure: the mean of the
epoch's iteration losses (``EpochLoss``).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from mmengine.dist import get_rank, is_main_process
from mmengine.hooks import Hook
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from featx.io import atomic_path, write_json
from featx.registry import HOOKS

__all__ = ["EpochLoss", "EpochSeedHook", "ScheduleLengthHook", "ProgressHook", "TrainingReportHook", "epoch_seed", "plot_confusion_matrix",
           "plot_curves"]


def _current_lr(runner) -> Optional[float]:
    """The learning rate mmengine's RuntimeInfoHook logged for this iteration (None before any)."""
    hub = runner.message_hub
    return hub.get_scalar("train/lr").current() if "train/lr" in hub.log_scalars else None


class EpochLoss:
    """The mean of an epoch's iteration losses, as the console and ``history.json`` both report it."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, outputs: Optional[dict]) -> None:
        if outputs and "loss" in outputs:
            self.total += float(outputs["loss"].detach())
            self.count += 1

    @property
    def mean(self) -> Optional[float]:
        return self.total / self.count if self.count else None


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed for (run seed, 0-based epoch, rank), distinct for each triple."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, rank]).generate_state(1)[0])


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Seeds ``random``, numpy and torch before each training epoch from ``epoch_seed(runner.seed, epoch, rank)``.

    mmengine's ``DefaultSampler`` already orders each epoch by (seed, epoch); this makes the rest of the
    epoch's randomness (random crops and flips in the main process or in non-persistent loader workers, which
    torch seeds from the main process; dropout) a function of the epoch too, so resuming from a checkpoint
    repeats the uninterrupted run. Persistent workers keep the state they started with.
    """

    priority = "VERY_HIGH"

    def before_train_epoch(self, runner) -> None:
        seed = epoch_seed(int(runner.seed), int(runner.epoch), get_rank())
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


_LENGTH_KEYS = ("begin", "end", "T_max")


@HOOKS.register_module()
class ScheduleLengthHook(Hook):
    """Before mmengine loads the schedulers' states on resume, replace their lengths by the configured ones."""

    priority = "VERY_HIGH"

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved, built = checkpoint.get("param_schedulers"), runner.param_schedulers
        if not isinstance(saved, list) or not isinstance(built, list):
            return  # not resuming, or per-optimizer schedulers (a dict), left as mmengine resumes them
        changed = []
        for state, scheduler in zip(saved, built):
            for key in _LENGTH_KEYS:
                if key in state and hasattr(scheduler, key) and state[key] != getattr(scheduler, key):
                    changed.append(f"{type(scheduler).__name__}.{key} {state[key]} -> {getattr(scheduler, key)}")
                    state[key] = getattr(scheduler, key)
        if changed:
            runner.logger.warning("resuming with another schedule length than the checkpoint's: "
                                  + ", ".join(changed) + " (iterations); the learning rate continues from "
                                  "the checkpoint's value along the new length")


@HOOKS.register_module()
class ProgressHook(Hook):
    """A rich progress bar for each training epoch (main process only)."""

    priority = "LOW"

    def __init__(self) -> None:
        self._progress = None
        self._task = None
        self._loss = EpochLoss()

    def before_train_epoch(self, runner) -> None:
        self._loss = EpochLoss()
        if not is_main_process():
            return
        self._progress = Progress(
            TextColumn(f"epoch {runner.epoch + 1}/{runner.max_epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("mean loss {task.fields[loss]}  lr {task.fields[lr]}"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self._progress.start()
        self._task = self._progress.add_task("train", total=len(runner.train_dataloader), loss="-", lr="-")

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Optional[dict] = None) -> None:
        self._loss.add(outputs)
        if self._progress is None:
            return
        lr = _current_lr(runner)
        mean = self._loss.mean
        self._progress.update(self._task, advance=1, loss=f"{mean:.4f}" if mean is not None else "-",
                              lr=f"{lr:.2e}" if lr is not None else "-")

    def after_train_epoch(self, runner) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        if not is_main_process() or not metrics:
            return
        names = {"top1": "top-1", "top5": "top-5", "mean_class": "mean per-class"}
        shown = [f"{names.get(k.split('/')[-1].replace('accuracy_', ''), k)} {float(v):.2f}%" for k, v in metrics.items()
                 if isinstance(v, (int, float, np.floating)) and "accuracy" in k]
        loss = f"train loss {self._loss.mean:.4f}  " if self._loss.mean is not None else ""
        # soft_wrap: one line per epoch also when the console is a file or a pipe (rich wraps those at 80)
        Console(stderr=True).print(f"epoch {runner.epoch}/{runner.max_epochs}  {loss}val " + "  ".join(shown),
                                   highlight=False, soft_wrap=True)

    def after_run(self, runner) -> None:
        self.after_train_epoch(runner)


@HOOKS.register_module()
class TrainingReportHook(Hook):
    """Per-epoch history and the end-of-run pictures (see the module docstring)."""

    priority = "BELOW_NORMAL"

    def __init__(self) -> None:
        self.history: list[dict] = []
        self._loss = EpochLoss()
        self._last_eval: Optional[dict] = None

    # -- collecting ---------------------------------------------------------------------------
    def before_train_epoch(self, runner) -> None:
        self._loss = EpochLoss()

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Optional[dict] = None) -> None:
        self._loss.add(outputs)

    def after_train_epoch(self, runner) -> None:
        lr = _current_lr(runner)
        # mmengine counts the epoch as finished only after these hooks: +1 for a 1-based epoch
        self._record(runner.epoch + 1, train_loss=self._loss.mean, lr=lr)

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        if metrics:  # here runner.epoch already counts the finished epoch (1-based)
            self._record(runner.epoch, **{k.replace("/", "_"): float(v) for k, v in metrics.items()
                                          if isinstance(v, (int, float, np.floating))})
        for metric in getattr(runner.val_evaluator, "metrics", []):
            if getattr(metric, "last", None) is not None:
                self._last_eval = metric.last
        if is_main_process():
            write_json(Path(runner.work_dir) / "history.json", self.history)

    def _record(self, epoch: int, **values: Any) -> None:
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history.append({"epoch": epoch})
        self.history[-1].update({k: v for k, v in values.items() if v is not None})

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # on resume, continue the history up to the checkpoint's epoch
        path = Path(runner.work_dir) / "history.json"
        resumed_epoch = int(checkpoint.get("meta", {}).get("epoch", 0))
        if path.is_file():
            try:
                rows = json.loads(path.read_text())
            except json.JSONDecodeError:
                rows = []
            self.history = [r for r in rows if isinstance(r, dict) and r.get("epoch", 0) <= resumed_epoch]

    # -- reporting ----------------------------------------------------------------------------
    def after_run(self, runner) -> None:
        if not is_main_process() or not self.history:
            return
        work_dir = Path(runner.work_dir)
        write_json(work_dir / "history.json", self.history)
        plot_curves(self.history, work_dir / "curves.png")
        report: dict[str, Any] = {"history": self.history}
        if self._last_eval is not None:
            ev = self._last_eval
            classes = ev["classes"]
            report["final"] = {
                "epoch": self.history[-1]["epoch"], "count": ev["count"], "top1": ev["top1"],
                "top5": ev.get("top5"), "mean_class": ev["mean_class"],
                "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, ev["per_class"])},
                "confusion": ev["confusion"].tolist(), "classes": classes,
            }
            plot_confusion_matrix(ev["confusion"], classes, work_dir / "confusion_matrix.png",
                                  title=f"validation, epoch {self.history[-1]['epoch']}: top-1 {ev['top1']:.2f}%")
            worst = sorted(((a, c) for c, a in zip(classes, ev["per_class"]) if not np.isnan(a)))[:5]
            runner.logger.info("per-class accuracy (worst first): "
                               + ", ".join(f"{c} {a:.1f}%" for a, c in worst))
        write_json(work_dir / "metrics.json", report)
        runner.logger.info(f"wrote {work_dir / 'curves.png'}, {work_dir / 'confusion_matrix.png'}, "
                           f"{work_dir / 'metrics.json'}")


def _figure():
    import matplotlib  # headless: the Agg backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path) -> None:
    """Train loss and validation accuracy per epoch, one PNG (written atomically)."""
    plt = _figure()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    rows = [r for r in history if "train_loss" in r]
    ax_loss.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    for key, label in (("accuracy_top1", "top-1"), ("accuracy_top5", "top-5"), ("accuracy_mean_class", "mean per-class")):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            ax_acc.plot(*zip(*pts), marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
    ax_acc.legend(loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_confusion_matrix(confusion: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """Row-normalized confusion matrix with counts (rows: true class, columns: predicted)."""
    plt = _figure()
    k = len(classes)
    size = min(max(4.0, 0.45 * k + 2), 24.0)
    fig, ax = plt.subplots(figsize=(size, size))
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
