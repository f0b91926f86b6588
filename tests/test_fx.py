"""torch.fx graphs of featx models (torchvision's ``create_feature_extractor``, what timm's ``_create_fx_model`` builds
on): they script with ``torch.jit.script`` and export with ``torch.export``, compute the model, and keep the input
check, which follows the graph to another dtype. timm's own ``test_model_forward_fx_torchscript`` runs on every
``featx_*`` timm model in tests/test_timm_own_suite.py."""
from __future__ import annotations

import warnings

import pytest
import torch
from helpers import rel_err
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from featx import create_model
from featx.deploy.onnx_export import dynamic_input_shapes
from featx.features import as_output_tuple, input_channels

# timm's own test_model_forward_fx_torchscript scripts every featx timm backbone but the DenseNets (its exclusion
# list); here: a DenseNet, and composites with each FPN variant (the neck's input check is an FX leaf too)
SCRIPTED = ["DenseNet121", "ResNet18FPN", "ResNet18RetinaFPN", "MobileNetV3SmallFPN"]
EXPORTED = ["ResNet18FPN", "GoogLeNet", "MobileNetV3Small", "LeNet5"]


def last_node_graph(model: torch.nn.Module) -> torch.fx.GraphModule:
    """The model as an FX graph returning its last node (the last output level), as timm's FX tests build it."""
    return create_feature_extractor(model, return_nodes={get_graph_node_names(model)[1][-1]: "out"})


def sample(model: torch.nn.Module, batch: int, height: int, width: int) -> torch.Tensor:
    side = max(getattr(getattr(model, "backbone", model), "min_input_size", 0), 1)
    return torch.randn(batch, input_channels(model), max(height, side), max(width, side))


@pytest.mark.parametrize("name", SCRIPTED)
def test_fx_graph_scripts_and_computes_the_model(name):
    model = create_model(name).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(last_node_graph(model))
    x = sample(model, 2, 96, 128)
    with torch.no_grad():
        got, want = scripted(x)["out"], as_output_tuple(model(x))[-1]
    assert rel_err(got, want) <= 1e-6
    # the scripted graph keeps the input check: a wrong channel count is refused with featx's words
    wrong = torch.randn(1, input_channels(model) + 1, x.shape[2], x.shape[3])
    with pytest.raises(torch.jit.Error, match=r"expects a 4-D tensor \(N, \d, H, W\)"):
        scripted(wrong)


@pytest.mark.parametrize("name", EXPORTED)
def test_fx_graph_exports_with_dynamic_shapes(name):
    model = create_model(name).eval()
    graph = last_node_graph(model)
    program = torch.export.export(graph, (sample(model, 2, 160, 192),), dynamic_shapes=dynamic_input_shapes())
    x = sample(model, 3, 128, 224)
    with torch.no_grad():
        assert rel_err(program.module()(x)["out"], as_output_tuple(model(x))[-1]) <= 1e-6


def test_the_traced_input_check_follows_the_graph_to_another_dtype():
    """The check compares with the graph's own first parameter, not with a dtype fixed at tracing time."""
    graph = last_node_graph(create_model("ResNet18").eval())
    with pytest.raises(TypeError, match="has float32 weights and expects float32 input, got float64"):
        graph(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    graph = graph.double()
    assert graph(torch.randn(1, 3, 64, 64, dtype=torch.float64))["out"].dtype == torch.float64
    with pytest.raises(TypeError, match="has float64 weights and expects float64 input, got float32"):
        graph(torch.randn(1, 3, 64, 64))


def test_traced_roots_carry_real_annotations():
    """torch.fx copies the root's annotations into its code; strings there (``from __future__ import annotations``)
    become names TorchScript cannot resolve."""
    for name in ("ResNet18FPN", "ResNet18"):
        code = torch.fx.symbolic_trace(create_model(name).eval()).code
        assert "x : torch.Tensor" in code and "_torch_Tensor_" not in code, code[:300]
