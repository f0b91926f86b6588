"""torch.compile for every catalogue backbone and neck: one graph, dynamic shapes, no recompilation.

Cheap for all of them: Dynamo with the ``eager`` backend (``fullgraph=True``: a graph break is an error) traces
each model once with dynamic batch, height and width, then runs two more input sizes and a batch of two without
tracing again (``error_on_recompile``). The models are checked two at a time in worker processes
(``helpers.failures_in_processes``: Dynamo's tracing is Python, one core each); each model's test reports its own
result. The PyTorch-native files (``.pt2``: torch.export, AOTInductor) are tested
in test_pt2.py.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo

from featx.features import input_channels
from featx.models import CATALOG, create_model
from helpers import failures_in_processes, failures_of_selected

# every backbone, and each neck once (a composite is a backbone and one of these necks: the same code for all)
NAMES = sorted(n for n, e in CATALOG.items() if e.kind == "backbone") + ["ResNet18FPN", "ResNet18RetinaFPN",
                                                                        "MobileNetV3SmallFPN"]


def _sizes(model: torch.nn.Module) -> list[tuple[int, int, int]]:
    """Three inputs (batch, H, W) with no dim of 1 anywhere (torch specializes a size of 1: a batch of one would
    be traced again)."""
    backbone = getattr(model, "backbone", model)
    side = max([backbone.min_input_size] + [i.stride for i in backbone.stage_infos]) * 2 + 3
    return [(2, side, side + 8), (2, side + 16, side + 40), (3, side + 5, side)]


def check_compiles_to_one_dynamic_graph(name: str) -> None:
    """Dynamo traces ``name`` once (no graph break), runs two more sizes without recompiling, equals eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(name).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    sizes = _sizes(model)
    with torch.no_grad():
        first = torch.randn(sizes[0][0], input_channels(model), *sizes[0][1:])
        want, got = model(first), compiled(first)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for b, h, w in sizes[1:]:
                x = torch.randn(b, first.shape[1], h, w)
                again = compiled(x)
                ref = model(x)
                for g, r in zip(again if isinstance(again, (tuple, list)) else [again], ref if isinstance(ref, (tuple, list)) else [ref]):
                    assert g.shape == r.shape
    outs = got if isinstance(got, (tuple, list)) else [got]
    refs = want if isinstance(want, (tuple, list)) else [want]
    assert len(outs) == len(refs)
    for g, r in zip(outs, refs):
        assert (g - r).abs().max().item() <= 1e-5 * max(r.abs().max().item(), 1e-6)


@pytest.fixture(scope="module")
def compile_failures(request) -> dict:
    return failures_of_selected(request, check_compiles_to_one_dynamic_graph, "test_every_model_compiles_to_one_dynamic_graph")


@pytest.mark.parametrize("name", NAMES)
def test_every_model_compiles_to_one_dynamic_graph(name, compile_failures):
    assert compile_failures[name] is None, compile_failures[name]


def test_a_failing_check_is_reported_by_its_own_model():
    """A graph break in one model fails that model's test, with Dynamo's words, and no other's."""
    failures = failures_in_processes(check_graph_break, ["LeNet5", "break"], processes=1)
    assert failures["LeNet5"] is None
    assert "Unsupported" in failures["break"] or "graph break" in failures["break"].lower(), failures["break"]


def check_graph_break(name: str) -> None:
    """``name`` compiled as test_compile does, or (for "break") a function with a graph break in it."""
    if name != "break":
        return check_compiles_to_one_dynamic_graph(name)
    torch._dynamo.reset()

    def broken(x):
        torch._dynamo.graph_break()
        return x + 1

    torch.compile(broken, backend="eager", fullgraph=True)(torch.ones(2))
