"""What an extraction is asked to do (:class:`ExtractSettings`, checked once) and what it reports."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from featx.devices import checked_device
from featx.options import DECODERS, EXTRACT_DEFAULTS, POOLS, PRECISIONS, RUNTIMES, STORE_DTYPES


# what the manifest records (part of the preprocessing, so a resumed run must use the same decoder)
DECODER_NAMES = {"cpu": "torchvision decode_jpeg for JPEG, PIL otherwise",
                 "cuda": "torchvision decode_jpeg on the model's device for JPEG (nvJPEG on CUDA), PIL otherwise"}


@dataclass
class ExtractSettings:
    """How to extract. ``size`` is the shorter side (ignored with ``resize=(H, W)``); ``levels`` None
    means every level; ``maps`` stores cropped maps instead of pooled vectors."""

    # defaults from featx.options.EXTRACT_DEFAULTS, which `featx extract`'s arguments share
    size: int = EXTRACT_DEFAULTS["size"]
    resize: Optional[tuple[int, int]] = None
    levels: Optional[list[str]] = None
    pool: str = EXTRACT_DEFAULTS["pool"]
    gem_p: float = EXTRACT_DEFAULTS["gem_p"]
    maps: bool = False
    dtype: str = EXTRACT_DEFAULTS["dtype"]
    batch_size: int = EXTRACT_DEFAULTS["batch_size"]
    workers: int = EXTRACT_DEFAULTS["workers"]
    runtime: str = EXTRACT_DEFAULTS["runtime"]
    device: str = EXTRACT_DEFAULTS["device"]
    shard_batches: int = EXTRACT_DEFAULTS["shard_batches"]
    precision: str = EXTRACT_DEFAULTS["precision"]  # the model's compute: auto = fp16 on CUDA, fp32 elsewhere
    decode: str = EXTRACT_DEFAULTS["decode"]  # JPEG decoding: auto, cpu (workers) or cuda (where the model runs)

    @property
    def on_cuda(self) -> bool:
        """Whether ``device`` names a CUDA device (``cuda``, ``cuda:N``)."""
        return torch.device(self.device).type == "cuda"

    def input_device(self) -> torch.device:
        """Where the model's input goes: the torch runtime's device (under torchrun, this process's ``LOCAL_RANK``
        GPU when ``device`` names no index), the host for the exported runtimes (they take numpy)."""
        if self.runtime != "torch":
            return torch.device("cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return device

    def resolved_precision(self) -> str:
        """``precision`` with ``auto`` decided: fp16 for the torch runtime on CUDA (tensor cores; the stored
        vectors are fp16 by default anyway), fp32 elsewhere (bf16 on a CPU pays only where the CPU has bf16
        units, AVX512-BF16 or AMX: ask for it, and measure it with featx bench-extract --precision bf16)."""
        if self.precision != "auto":
            return self.precision
        return "fp16" if self.runtime == "torch" and self.on_cuda else "fp32"

    def resolved_decode(self) -> str:
        """``decode`` with ``auto`` decided by a stated rule: ``cuda`` when the model runs on CUDA in PyTorch
        (the GPU decodes a batch of JPEGs faster than a few CPU workers, and the workers then only read and
        hash), ``cpu`` otherwise."""
        if self.decode != "auto":
            return self.decode
        return "cuda" if self.runtime == "torch" and self.on_cuda else "cpu"

    def check(self) -> None:
        if self.resize is None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"size must be a positive int (the shorter side), got {self.size!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if not (isinstance(self.gem_p, (int, float)) and 0 < self.gem_p < math.inf):
            raise ValueError(f"gem_p must be a finite number > 0 (the GeM exponent), got {self.gem_p!r}")
        if self.dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {STORE_DTYPES}, got {self.dtype!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        for name in ("batch_size", "shard_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.runtime == "torch":  # the exported runtimes check their own device (featx.deploy.runtimes)
            checked_device(self.device)
        if self.precision not in ("auto",) + PRECISIONS:
            raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {self.precision!r}")
        precision = self.resolved_precision()
        on_cuda = self.on_cuda
        if precision != "fp32" and self.runtime != "torch":
            raise ValueError(f"--precision {precision} is for --runtime torch; the exported runtimes run fp32 here")
        if precision == "tf32" and not on_cuda:
            raise ValueError("--precision tf32 is a CUDA mode (TF32 tensor cores); on a CPU use fp32 or bf16")
        if self.decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}, got {self.decode!r}")
        if self.decode == "cuda" and not (on_cuda and self.runtime == "torch"):
            raise ValueError("--decode cuda decodes JPEGs where the model runs: it needs --device cuda and --runtime torch")
        if precision == "fp16" and not on_cuda:
            raise ValueError("--precision fp16 is for CUDA; CPUs compute fp16 slowly: use fp32, or bf16 on CPUs "
                             "with AVX512-BF16 or AMX")


@dataclass
class ExtractResult:
    out: str
    images: int
    new: int
    skipped: int
    batches: int
    seconds: float
    images_per_s: float
    loop_seconds: float = 0.0  # reading, running and storing the batches (no model build, listing or merge)
    rank: int = 0
    world_size: int = 1
    merged: bool = False
    summary: dict = field(default_factory=dict)
