"""A runtime hint written into an OpenVINO IR: Winograd input transforms on a planar-layout kernel.

On AVX2, OpenVINO's CPU plugin runs every convolution in the channels-last (nspc) layout. The input
transform of :class:`featx.winograd.WinogradConv2d` is a 1-channel convolution (F(4x4): 6x6 kernel,
stride 4, 36 outputs) between two reshapes that need the planar layout, so the plugin reorders the planar input
to nspc for it and its 36-channel output (2.25x the input) back. Pinning that one convolution to the
``jit_avx2`` kernel, which reads planar input, removes the reorder into it and halves the one out of it
(its 8-channel-blocked output is cheaper to unpack): on ResNet50FPN's 256-channel 128x128 FPN layer in
OpenVINO 2026.4, 37 -> 21 ms of reorders; the whole model 3-7% faster (AVX2 AMD EPYC, three
interleaved runs at 512x512 and 800x1216). On an AVX-512 CPU the plugin has no jit_avx2 kernel to give, but
the hint still moves these convolutions off its default ``brgconv_avx512_f32`` (channels-last, behind a
reorder) onto ``jit_avx512_f32``, which reads the planar input: ResNet50FPN's reorders 62 -> 21 ms, the
whole IR 0.96x -> 0.88x of the direct IR (Xeon with AVX-512/AMX, 12 interleaved rounds at 512x512).

The hint is OpenVINO's ``primitives_priority`` runtime attribute, which its IR reader restores as the
typed attribute that the CPU plugin honours (a plain string set from Python is neither serialized nor
read). Whether it helps is measured per CPU (``featx.tuning.confirm_on_whole_model``), not assumed.

A hinted convolution for which the plugin has no such kernel does not fall back to its default one: it runs
on the reference kernel. With oneDNN capped to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, its AVX2 dispatch on an
AVX-512 machine) F(6x6)'s input transform (8x8 kernel, stride 6, pads 1 and 6) hinted took 7.3 s where
F(4x4)'s ran ``jit_avx2_f32``; on the AVX-512 Xeon, with no cap, the transform of a 2x3 map (padded to 7x8)
ran ``ref_any_f32`` hinted. So after tagging, the hinted IR is compiled, and a transform the plugin put on a
reference kernel loses the hint again. An IR hinted on one CPU and run on another is checked the same way when
it is loaded (:func:`featx.deploy.runtimes.open_session`): hinted layers on reference kernels there are
compiled again without the hint, with a warning.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, NamedTuple, Union

from featx.winograd import TILES

__all__ = ["PLANAR_INPUT_PRIORITY", "PlanarHints", "prefer_planar_winograd_input", "winograd_input_layers",
           "reference_kernel_layers", "planar_hinted_layers", "read_without_hints"]

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


def _clear_priority(layers: list[ET.Element]) -> None:
    """Take the ``primitives_priority`` runtime attribute off each ``<layer>``."""
    for layer in layers:
        rt_info = layer.find("rt_info")
        for attribute in [] if rt_info is None else rt_info.findall("attribute"):
            if attribute.get("name") == "primitives_priority":
                rt_info.remove(attribute)


def _set_priority(layers: list[ET.Element], priority: str) -> None:
    """Give each ``<layer>`` the ``primitives_priority`` runtime attribute ``priority`` (replacing an older one)."""
    _clear_priority(layers)
    for layer in layers:
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ET.Element("rt_info")
            layer.insert(1 if layer.find("data") is not None else 0, rt_info)
        ET.SubElement(rt_info, "attribute", {"name": "primitives_priority", "version": "0", "value": priority})


def reference_kernel_layers(compiled: Any, names: set[str]) -> set[str]:
    """Which of the layers ``names`` an OpenVINO compiled model runs on a reference kernel (its runtime model's
    ``primitiveType``)."""
    found = set()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "primitiveType" in info and info["primitiveType"].astype(str).startswith("ref"):
            original = info["originalLayersNames"].astype(str).split(",") if "originalLayersNames" in info else []
            found |= names & ({op.get_friendly_name(), *original})
    return found


def planar_hinted_layers(model: Any) -> set[str]:
    """Names of the ops of an OpenVINO model (as read from an IR) that carry a ``primitives_priority`` hint."""
    return {op.get_friendly_name() for op in model.get_ops()
            if any(key.startswith("primitives_priority") for key in op.get_rt_info().keys())}


def read_without_hints(xml_path: Union[str, Path], names: set[str]) -> Any:
    """The IR at ``xml_path`` read by OpenVINO with the ``primitives_priority`` hint taken off the layers
    ``names`` (the files are not changed)."""
    import numpy as np
    import openvino as ov  # the optional `openvino` extra

    tree = ET.parse(xml_path)
    _clear_priority([layer for layer in tree.getroot().iter("layer") if layer.get("name") in names])
    weights = np.fromfile(Path(xml_path).with_suffix(".bin"), np.uint8)
    return ov.Core().read_model(ET.tostring(tree.getroot(), encoding="utf-8"), ov.Tensor(weights))


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
    _set_priority(layers, priority)
    tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    slow: set[str] = set()
    if check_kernels:
        import openvino as ov  # the optional `openvino` extra

        compiled = ov.Core().compile_model(str(xml_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # as sessions run
        slow = reference_kernel_layers(compiled, {layer.get("name") for layer in layers})
    if slow:  # these keep the plugin's own choice
        _clear_priority([layer for layer in layers if layer.get("name") in slow])
        tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    return PlanarHints(len(layers) - len(slow), len(layers))
