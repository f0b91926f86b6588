"""What CPU this is: model name, the ISA features that change which kernels win, and a key for caches.

CPUs differ in what makes a kernel fast (AVX2 only; AVX-512 with VNNI and AMX), so every benchmark figure
and every automatic choice (Winograd or direct, ONNX Runtime or OpenVINO) is tied to the CPU it was
measured on.
"""
from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = ["CpuInfo", "cpu_info", "ISA_FLAGS"]

# the flags that decide fp32 / int8 kernel choices, in /proc/cpuinfo's spelling
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU at hand. ``flags`` are the ``ISA_FLAGS`` it has; ``cores`` the CPUs this process may use."""

    model: str
    arch: str
    cores: int
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (AVX512-VNNI or AVX-VNNI): what makes int8 convolutions fast."""
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags

    @property
    def amx(self) -> bool:
        return "amx_int8" in self.flags or "amx_tile" in self.flags

    @property
    def isa(self) -> str:
        """One line for reports: ``"AVX2 FMA (no AVX-512, no VNNI, no AMX)"``."""
        have = [f.upper().replace("_", "-") for f in self.flags]
        lacks = [name for name, present in (("AVX-512", "avx512f" in self.flags), ("VNNI", self.vnni), ("AMX", self.amx))
                 if not present]
        return " ".join(have) + (f" (no {', no '.join(lacks)})" if lacks else "")

    @property
    def key(self) -> str:
        """A short stable id of model + ISA, for caches of measured choices."""
        return hashlib.sha256(f"{self.model}|{self.arch}|{','.join(self.flags)}".encode()).hexdigest()[:12]

    def describe(self) -> str:
        return f"{self.model} ({self.arch}, {self.cores} CPUs; {self.isa})"

    def to_dict(self) -> dict:
        return asdict(self) | {"vnni": self.vnni, "amx": self.amx, "isa": self.isa, "key": self.key}


def _proc_cpuinfo() -> dict[str, str]:
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                fields.setdefault(k, v)  # the first processor's
    return fields


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (Linux: /proc/cpuinfo; elsewhere what ``platform`` says)."""
    fields = _proc_cpuinfo()
    model = fields.get("model name") or platform.processor() or "unknown CPU"
    flags = set(fields.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(model, platform.machine(), cores, tuple(f for f in ISA_FLAGS if f in flags))
