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

__all__ = ["CpuInfo", "cpu_info", "isa_cap", "ISA_FLAGS", "ONEDNN_ISA_CAPS"]

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


_AVX512 = {"avx512f", "avx512bw"}
_AMX = {"amx_tile", "amx_int8", "amx_bf16"}
# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) -> the ISA_FLAGS its kernels may still use; OpenVINO's CPU plugin and
# PyTorch's oneDNN kernels dispatch below the cap, so every choice featx times or makes must see the capped CPU
ONEDNN_ISA_CAPS: dict[str, frozenset[str]] = {
    "SSE41": frozenset(),
    "AVX": frozenset(),
    "AVX2": frozenset({"avx2", "fma"}),
    "AVX2_VNNI": frozenset({"avx2", "fma", "avx_vnni"}),
    "AVX2_VNNI_2": frozenset({"avx2", "fma", "avx_vnni"}),
    "AVX512_CORE": frozenset({"avx2", "fma"} | _AVX512),
    "AVX512_CORE_VNNI": frozenset({"avx2", "fma", "avx512_vnni", "avx_vnni"} | _AVX512),
    "AVX512_CORE_BF16": frozenset({"avx2", "fma", "avx512_vnni", "avx_vnni", "avx512_bf16"} | _AVX512),
    "AVX512_CORE_FP16": frozenset({"avx2", "fma", "avx512_vnni", "avx_vnni", "avx512_bf16"} | _AVX512),
    "AVX10_1_512": frozenset({"avx2", "fma", "avx512_vnni", "avx_vnni", "avx512_bf16"} | _AVX512),
    "AVX512_CORE_AMX": frozenset({"avx2", "fma", "avx512_vnni", "avx_vnni", "avx512_bf16"} | _AVX512 | _AMX),
    "AVX10_1_512_AMX": frozenset({"avx2", "fma", "avx512_vnni", "avx_vnni", "avx512_bf16"} | _AVX512 | _AMX),
    "AVX10_1_512_AMX_FP16": frozenset({"avx2", "fma", "avx512_vnni", "avx_vnni", "avx512_bf16"} | _AVX512 | _AMX),
}


def isa_cap() -> str | None:
    """oneDNN's ISA cap in force (``ONEDNN_MAX_CPU_ISA``, upper case), or None when the kernels may use all of the
    CPU (unset, ``ALL``, or a name featx does not know)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return cap if cap in ONEDNN_ISA_CAPS else None


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (Linux: /proc/cpuinfo; elsewhere what ``platform`` says) as its kernels see it: under
    ``ONEDNN_MAX_CPU_ISA`` the flags above the cap are dropped and the model says so (so cached measurements made
    under a cap are not taken for the whole CPU's)."""
    fields = _proc_cpuinfo()
    model = fields.get("model name") or platform.processor() or "unknown CPU"
    flags = set(fields.get("flags", "").split())
    cap = isa_cap()
    if cap is not None:
        flags &= ONEDNN_ISA_CAPS[cap]
        model = f"{model} (oneDNN capped at {cap})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(model, platform.machine(), cores, tuple(f for f in ISA_FLAGS if f in flags))
