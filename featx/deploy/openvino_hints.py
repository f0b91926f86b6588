"""OpenVINO's per-layer kernel hint (``primitives_priority``) in an IR: set, cleared, and checked on load.

An IR may ask OpenVINO's CPU plugin for a particular kernel on a layer (the ``primitives_priority`` runtime
attribute, which the IR reader restores as the typed attribute the plugin honours; a plain string set from
Python is neither serialized nor read). Where the plugin has no such kernel on the CPU at hand, the layer does
not fall back to the plugin's own choice: it runs on a reference kernel, seconds a call. So
:func:`featx.deploy.runtimes.open_session` compiles a hinted IR, finds hinted layers on reference kernels
(:func:`reference_kernel_layers`) and compiles again without their hints (:func:`read_without_hints`).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Union

__all__ = ["clear_priority", "set_priority", "hinted_layers", "reference_kernel_layers", "read_without_hints"]

_ATTRIBUTE = "primitives_priority"


def clear_priority(layers: list[ET.Element]) -> None:
    """Take the ``primitives_priority`` runtime attribute off each ``<layer>``."""
    for layer in layers:
        rt_info = layer.find("rt_info")
        for attribute in [] if rt_info is None else rt_info.findall("attribute"):
            if attribute.get("name") == _ATTRIBUTE:
                rt_info.remove(attribute)


def set_priority(layers: list[ET.Element], priority: str) -> None:
    """Give each ``<layer>`` the ``primitives_priority`` runtime attribute ``priority`` (replacing an older one)."""
    clear_priority(layers)
    for layer in layers:
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ET.Element("rt_info")
            layer.insert(1 if layer.find("data") is not None else 0, rt_info)
        ET.SubElement(rt_info, "attribute", {"name": _ATTRIBUTE, "version": "0", "value": priority})


def hinted_layers(model: Any) -> set[str]:
    """Names of the ops of an OpenVINO model (as read from an IR) that carry a ``primitives_priority`` hint."""
    return {op.get_friendly_name() for op in model.get_ops()
            if any(key.startswith(_ATTRIBUTE) for key in op.get_rt_info().keys())}


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


def read_without_hints(xml_path: Union[str, Path], names: set[str]) -> Any:
    """The IR at ``xml_path`` read by OpenVINO with the ``primitives_priority`` hint taken off the layers
    ``names`` (the files are not changed)."""
    import numpy as np
    import openvino as ov  # the optional `openvino` extra

    tree = ET.parse(xml_path)
    clear_priority([layer for layer in tree.getroot().iter("layer") if layer.get("name") in names])
    weights = np.fromfile(Path(xml_path).with_suffix(".bin"), np.uint8)
    return ov.Core().read_model(ET.tostring(tree.getroot(), encoding="utf-8"), ov.Tensor(weights))
