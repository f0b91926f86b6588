"""The planar-kernel hint on Winograd input transforms in an OpenVINO IR.

On AVX2, OpenVINO's CPU plugin runs every convolution in the channels-last (nspc) layout. The input
transform of :class:`featx.accel.winograd.WinogradConv2d` is a 1-channel convolution (F(4x4): 6x6 kernel,
stride 4, 36 outputs) between two reshapes that need the planar layout, so the plugin reorders the planar input
to nspc for it and its 36-channel output (2.25x the input) back. Pinning that convolution to a kernel that
reads planar input (``jit_avx2``, which on AVX-512 CPUs moves it to ``jit_avx512_f32``) removes the reorder into
it and shrinks the one out of it. Whether that makes the whole model faster depends on the CPU, so the export
measures it (:func:`featx.accel.tuning.confirm_on_whole_model`) and hints only where it was faster.

The hint is OpenVINO's ``primitives_priority`` attribute (:mod:`featx.deploy.openvino_hints`). A hinted
convolution for which the plugin has no such kernel runs on the reference kernel instead of its default one,
so after tagging the hinted IR is compiled, and a transform the plugin put on a reference kernel loses the hint
again; an IR hinted on one CPU and loaded on another is checked the same way by
:func:`featx.deploy.runtimes.open_session`.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple, Union

from featx.accel.winograd import TILES
from featx.deploy.openvino_hints import clear_priority, reference_kernel_layers, set_priority

__all__ = ["PLANAR_INPUT_PRIORITY", "PlanarHints", "prefer_planar_winograd_input", "winograd_input_layers"]

PLANAR_INPUT_PRIORITY = "cpu:jit_avx2"
# (stride, weight dims) of each input transform featx builds: F(m x m, 3 x 3) has stride m, weights (n*n, 1, n, n)
_INPUT_TRANSFORMS = {(f"{m},{m}", (str((m + 2) ** 2), "1", str(m + 2), str(m + 2))) for m in TILES}


def _dims(port: ET.Element) -> list[str]:
    return [d.text or "" for d in port.findall("dim")]


def winograd_input_layers(root: ET.Element) -> list[ET.Element]:
    """The ``<layer>`` elements of an IR that are Winograd input transforms (Convolution, stride m,
    weights (m+2)^2 x 1 x (m+2) x (m+2) for each tile side m featx builds)."""
    found = []
    for layer in root.iter("layer"):
        if layer.get("type") != "Convolution":
            continue
        data, ports = layer.find("data"), layer.findall("input/port")
        if (data is not None and len(ports) == 2
                and (data.get("strides", "").replace(" ", ""), tuple(_dims(ports[1]))) in _INPUT_TRANSFORMS):
            found.append(layer)
    return found


class PlanarHints(NamedTuple):
    """What :func:`prefer_planar_winograd_input` did to an IR: ``kept`` of its ``transforms`` Winograd input
    transforms carry the hint."""
    kept: int
    transforms: int


def prefer_planar_winograd_input(xml_path: Union[str, Path], priority: str = PLANAR_INPUT_PRIORITY,
                                 check_kernels: bool = True) -> PlanarHints:
    """Give every Winograd input transform of the IR at ``xml_path`` (edited in place, its ``.bin`` beside it;
    callers write to a staged file) the ``primitives_priority`` hint ``priority``. With ``check_kernels``, those
    this CPU then runs on a reference kernel lose it again (found by compiling the hinted IR: ~0.5 s for
    ResNet50FPN); without, every transform keeps it, for a caller that loads the IR through
    :func:`featx.deploy.runtimes.open_session`, which makes the same check as it compiles."""
    tree = ET.parse(xml_path)
    layers = winograd_input_layers(tree.getroot())
    if not layers:
        return PlanarHints(0, 0)
    set_priority(layers, priority)
    tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    slow: set[str] = set()
    if check_kernels:
        import openvino as ov  # the optional `openvino` extra

        compiled = ov.Core().compile_model(str(xml_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # as sessions run
        slow = reference_kernel_layers(compiled, {layer.get("name") for layer in layers})
    if slow:  # these keep the plugin's own choice
        clear_priority([layer for layer in layers if layer.get("name") in slow])
        tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    return PlanarHints(len(layers) - len(slow), len(layers))
