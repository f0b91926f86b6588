"""Reading a ``.pt2`` archive as data: featx's description, the kind of file, its device and precision, from the
zip entries alone. Nothing here loads or runs the program (see :mod:`featx.deploy.pt2_export` and docs/trust.md).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Union

from featx.errors import ParityError

__all__ = ["METADATA_ENTRY", "aoti_device", "is_aoti_package", "pt2_precision", "read_pt2_metadata"]

METADATA_ENTRY = "featx.json"


def _entries(path: Path) -> list[str]:
    if not path.is_file():
        raise ParityError(f"pt2 file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        raise ParityError(f"{path} is not a .pt2 archive (not a zip file)") from None


def is_aoti_package(path: Union[str, Path]) -> bool:
    """Whether a ``.pt2`` archive holds an AOTInductor package (compiled code) rather than an ExportedProgram."""
    return any("/data/aotinductor/" in name for name in _entries(Path(path)))


def _wrapper_metadata(path: Path) -> dict:
    names = [n for n in _entries(path) if n.endswith("wrapper_metadata.json")]
    if not names:
        return {}
    with zipfile.ZipFile(path) as archive:
        try:
            values = json.loads(archive.read(names[0]))
        except json.JSONDecodeError:
            raise ParityError(f"{path}: its AOTInductor metadata is not JSON") from None
    return values if isinstance(values, dict) else {}


def aoti_device(path: Union[str, Path]) -> str:
    """The device an AOTInductor package was compiled for, as AOTInductor recorded it (``AOTI_DEVICE_KEY``)."""
    return str(_wrapper_metadata(Path(path)).get("AOTI_DEVICE_KEY") or "cpu")


# torch.export's serialized dtypes (torch/_export/serde/schema.py ScalarType): HALF and BFLOAT16
_HALF_DTYPES = {6, 13}


def pt2_precision(path: Union[str, Path]) -> str:
    """The precision a ``.pt2`` computes in, from its weights' recorded dtypes (an ExportedProgram: ``"fp16"`` when
    most are half precision, else ``"fp32"``); an AOTInductor package's compiled weights cannot be read this way,
    and it is judged as fp32 (the strictest gate)."""
    path = Path(path)
    config = [n for n in _entries(path) if n.endswith("/data/weights/model_weights_config.json")]
    if not config:
        return "fp32"
    with zipfile.ZipFile(path) as archive:
        try:
            weights = json.loads(archive.read(config[0])).get("config", {})
        except (json.JSONDecodeError, AttributeError):
            raise ParityError(f"{path}: its weights description is not JSON") from None
    dtypes = [w.get("tensor_meta", {}).get("dtype") for w in weights.values() if isinstance(w, dict)]
    return "fp16" if dtypes and sum(d in _HALF_DTYPES for d in dtypes) * 2 > len(dtypes) else "fp32"


def read_pt2_metadata(path: Union[str, Path]) -> dict[str, Any]:
    """featx's ``featx.*`` description of a ``.pt2`` file (prefix dropped, JSON values decoded), read from the zip
    entries alone: nothing is loaded or run. ``{}`` for a .pt2 that featx did not write."""
    path = Path(path)
    names = _entries(path)
    with zipfile.ZipFile(path) as archive:
        extra = [n for n in names if n.endswith("/extra/" + METADATA_ENTRY)]
        if extra:
            text = archive.read(extra[0]).decode("utf-8", errors="replace")
        else:  # an AOTInductor package: its metadata sits in the wrapper's JSON
            text = _wrapper_metadata(path).get(METADATA_ENTRY)
            if not isinstance(text, str):
                return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise ParityError(f"{path}: featx's metadata in it is not JSON") from None
    if not isinstance(values, dict):
        raise ParityError(f"{path}: featx's metadata in it is not a JSON object")
    return {k[6:]: _decode(v) for k, v in values.items() if isinstance(k, str) and k.startswith("featx.")}


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
