"""Test scaffolding: relative error, head dropping, in-process CLI runs, checks spread over processes."""
from __future__ import annotations

import torch

from featx.check import randomize_norm_stats  # noqa: F401  (re-exported for the tests)


def place_in_hub_cache(state: dict, url: str, monkeypatch) -> "Path":
    """Save ``state`` where torch.hub caches ``url`` (torchvision's own file name) and, for this test
    only, accept it as the published file: its content cannot match the SHA-256 prefix the name
    carries, which featx checks on every load (tested on its own in test_weights)."""
    from pathlib import Path  # noqa: F401

    import featx.checkpoints as ckpt

    path = ckpt.hub_checkpoint_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    prefix = ckpt._HASH_IN_NAME.search(path.name).group(1)
    monkeypatch.setitem(ckpt._VERIFIED, ckpt._verification_key(path), prefix)
    return path


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max|out - ref| / max|ref| (the design's equivalence measure)."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def drop_head(state: dict, prefixes: tuple[str, ...] = ("fc.",)) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args: str) -> CliResult:
    """Run ``featx <args>`` in this process (what the console script and tools/*.py call)."""
    import contextlib
    import io

    from featx.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse usage errors and --help
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                err.write(e.code + "\n")
    return CliResult(code, out.getvalue(), err.getvalue())


# -- checks spread over processes ------------------------------------------------------------------
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def _outcome_of(check, item) -> "str | None":
    import traceback

    try:
        check(item)
    except BaseException:  # noqa: BLE001  (the failure is reported by the test of this item)
        return traceback.format_exc()
    return None


def failures_in_processes(check, items: list, processes: "int | None" = None) -> dict:
    """``check(item)`` for every item, in spawned interpreters with one torch thread each (one per CPU, two at
    most); returns {item: the traceback of its failure, or None}.

    For checks that are Python-bound (Dynamo tracing, torch.export, model building): two at once take about half
    the time of one after the other, where torch's threads would not. ``check`` must be a module-level function
    (the workers import it by name)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    processes = processes or max(1, min(2, os.cpu_count() or 1))
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_torch_thread) as pool:
        futures = {item: pool.submit(_outcome_of, check, item) for item in items}
        return {item: f.result() for item, f in futures.items()}


def selected_params(request, test_name: str, param: str) -> list:
    """The values of ``param`` of this module's ``test_name`` that this pytest session runs (after -k and node
    ids), in their order: what a module fixture computes for them all at once."""
    module = request.module.__name__
    return [item.callspec.params[param] for item in request.session.items
            if getattr(item, "originalname", None) == test_name and item.module.__name__ == module]


def failures_of_selected(request, check, test_name: str, param: str = "name") -> dict:
    """:func:`failures_in_processes` of ``check`` over the values of ``param`` this session runs ``test_name`` with:
    a module fixture's body, the test then asserting its own value's entry is None."""
    return failures_in_processes(check, selected_params(request, test_name, param))


# -- fine-tuning fixtures --------------------------------------------------------------------------
COLORS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


def write_color_imagefolder(root, per_class: dict[str, int], size: int = 16, seed: int = 0) -> list:
    """``root/<color>/<i>.png``: noisy solid-color RGB squares, an easy 3-class problem. Returns paths."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for name, count in per_class.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.clip(np.array(COLORS[name]) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{i:03d}.png"
            Image.fromarray(pixels, "RGB").save(path)
            paths.append(path)
    return paths


def write_tiny_config(path, data_root, epochs: int = 2, batch_size: int = 6, size: int = 32, lr: float = 0.05,
                      random_aug: bool = True) -> str:
    """A complete fine-tuning config for a tiny run (ResNet-18 at ``size``), built on the shipped runtime."""
    import pathlib

    runtime = pathlib.Path(__file__).resolve().parents[1] / "configs" / "finetune" / "_base_" / "runtime.py"
    aug = 'dict(type="RandomCrop", size=size, padding=2), ' if random_aug else ""
    path.write_text(f'''
_base_ = ["{runtime}"]
size = {size}
tail = [dict(type="ToImage"), dict(type="ToDtype", dtype="float32", scale=True),
        dict(type="Normalize", mean=[0.5] * 3, std=[0.5] * 3)]
loader = dict(num_workers=0, collate_fn=dict(type="default_collate"))
train_dataloader = dict(batch_size={batch_size}, sampler=dict(type="DefaultSampler", shuffle=True), **loader,
    dataset=dict(type="featx.ImageFolderDataset", data_root="{data_root}", split="train",
                 pipeline=[dict(type="Resize", size=size, antialias=True), {aug}*tail]))
val_dataloader = dict(batch_size=4, sampler=dict(type="DefaultSampler", shuffle=False), **loader,
    dataset=dict(type="featx.ImageFolderDataset", data_root="{data_root}", split="val",
                 pipeline=[dict(type="Resize", size=size, antialias=True), *tail]))
model = dict(type="featx.ImageClassifier", backbone=dict(type="featx.ResNet", arch="resnet18", out_indices=(3,)),
             num_classes=None, mean=[0.5] * 3, std=[0.5] * 3)
optim_wrapper = dict(optimizer=dict(type="SGD", lr={lr}, momentum=0.9),
                     paramwise_cfg=dict(custom_keys={{"backbone": dict(lr_mult=0.5)}}))
param_scheduler = [dict(type="LinearLR", start_factor=0.2, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type="CosineAnnealingLR", T_max={epochs}, by_epoch=True, begin=1, end={epochs + 1},
                        convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs={epochs}, val_interval=1)
default_hooks = dict(logger=dict(type="LoggerHook", interval=1))
''')
    return str(path)
