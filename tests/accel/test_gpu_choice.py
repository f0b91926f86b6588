"""featx.accel.optimize_for_gpu: inference options chosen by measurement, never slower than eager as measured.
The choice logic runs here on injected timings and on the CPU; the CUDA graph candidates need CUDA."""
from __future__ import annotations

import pytest
import torch

import featx
from featx.accel import optimize_for_gpu
from featx.accel.gpu import candidate_runners


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _timer(medians: dict[str, float], calls: list):
    def timer(fns):
        calls.append(sorted(fns))
        for fn in fns.values():
            fn()  # every candidate really runs
        return {name: [medians.get(name, 99.0)] * 3 for name in fns}
    return timer


def test_the_fastest_candidate_is_chosen_and_cached(cache):
    model = featx.create_model("ResNet18FPN")
    calls: list = []
    run, choice = optimize_for_gpu(model, (1, 3, 64, 64), "fp32", torch.device("cpu"),
                                   timer=_timer({"eager": 5.0, "contiguous": 4.0, "channels_last": 3.0}, calls))
    assert choice.choice == "channels_last" and choice.medians["eager"] == 5.0 and not choice.cached
    assert calls == [["channels_last", "contiguous", "eager"]]  # no CUDA graphs on a CPU
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.eval()(x)
    for a, b in zip(run(x), ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    again, second = optimize_for_gpu(model, (1, 3, 64, 64), "fp32", torch.device("cpu"), timer=_timer({}, calls))
    assert second.cached and second.choice == "channels_last" and len(calls) == 1  # measured once
    other, third = optimize_for_gpu(model, (2, 3, 64, 64), "fp32", torch.device("cpu"),
                                    timer=_timer({"eager": 1.0, "contiguous": 2.0}, calls))
    assert third.choice == "eager" and len(calls) == 2  # another shape is measured anew; eager can win


def test_a_tie_keeps_eager_and_bf16_candidates_run(cache):
    model = featx.create_model("ResNet18FPN")
    run, choice = optimize_for_gpu(model, (1, 3, 64, 64), "bf16", torch.device("cpu"), use_cache=False,
                                   timer=_timer({"eager": 2.0, "contiguous": 2.0, "channels_last": 2.0}, []))
    assert choice.choice == "eager"
    runners = candidate_runners(model, torch.randn(1, 3, 64, 64), "bf16", graphs=True, compile=False)
    outs = runners["channels_last"](torch.randn(1, 3, 64, 64))
    assert outs[0].dtype == torch.bfloat16 and set(runners) == {"eager", "contiguous", "channels_last"}
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize_for_gpu(model, (1, 3, 64, 64), "int8", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_choice_is_never_slower_than_eager(cache):
    model = featx.create_model("ResNet18FPN").cuda()
    run, choice = optimize_for_gpu(model, (2, 3, 128, 128), "fp16", repeats=5)
    assert choice.medians[choice.choice] <= choice.medians["eager"]
    assert {"contiguous+graph", "channels_last+graph"} <= set(choice.medians)
