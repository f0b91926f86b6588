"""The CPU-dependent accel tests, run again under each lower CPU identity this machine can take on.

Which kernels OpenVINO and oneDNN dispatch (and so which planar hints stick, which Winograd tiles pay) depends on
the ISA. Machines of this kind come as AVX2-only EPYCs, AVX-512 Zen 4s with VNNI and BF16, and AVX-512 Xeons with
AMX; CI runs on whichever it gets. Capping oneDNN's dispatch (``ONEDNN_MAX_CPU_ISA``, which OpenVINO's CPU plugin
honours and :func:`featx.cpu.cpu_info` reports) makes an AVX-512 machine behave as an AVX2 one, so the tests that
would fail only there fail here too. A cap at or above this CPU's own ISA is the main run already: skipped, with
the reason. (A machine cannot be made to claim more than it has: those rules are tested on injected ``cpu_info``.)
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featx.cpu import ONEDNN_ISA_CAPS, cpu_info

HERE = Path(__file__).resolve().parent
# the tests whose expectations depend on the kernels this CPU dispatches
CPU_DEPENDENT = "planar or openvino_reading or hinted or whole_model_check_times"
CHILD = "FEATX_ISA_MATRIX_CHILD"


@pytest.mark.slow
@pytest.mark.parametrize("cap", ["AVX2", "AVX512_CORE_VNNI"])
def test_the_cpu_dependent_accel_tests_pass_under_a_lower_isa(cap, tmp_path):
    if os.environ.get(CHILD):
        pytest.skip("already inside an ISA-capped run")
    native = set(cpu_info().flags)
    capped = native & ONEDNN_ISA_CAPS[cap]
    if capped == native:
        pytest.skip(f"this CPU ({cpu_info().isa}) has nothing above {cap}, so the cap changes nothing: the main run covers it")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=cap, **{CHILD: "1"})
    env["FEATX_CACHE_DIR"] = str(tmp_path / "cache")  # measured choices of the capped CPU stay apart
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "test_winograd.py"),
                          "-k", CPU_DEPENDENT], env=env, capture_output=True, text=True, timeout=1500,
                         cwd=HERE.parents[1])
    tail = run.stdout[-3000:] + run.stderr[-1000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and " failed" not in run.stdout, tail


def test_cpu_info_reports_the_capped_isa(monkeypatch):
    import featx.cpu as cpu

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    cpu.cpu_info.cache_clear()
    try:
        capped = cpu.cpu_info()
        assert not {"avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8"} & set(capped.flags)
        assert "oneDNN capped at AVX2" in capped.model
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
        cpu.cpu_info.cache_clear()
        assert "capped" not in cpu.cpu_info().model and cpu.cpu_info().key != capped.key
    finally:
        cpu.cpu_info.cache_clear()
