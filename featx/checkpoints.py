"""Reading checkpoint files safely, and the torch hub cache they come from.

- Files are read with ``torch.load(weights_only=True)`` or safetensors. A file that needs
  arbitrary unpickling is refused with a clear message, never retried unsafely.
- mmengine's checkpoints (mmengine/mmdet/featx training runs) hold a few non-tensor types; importing
  featx allow-lists exactly those for ``weights_only=True`` (``allow_mmengine_checkpoints``), so
  mmdet's own ``init_detector`` loads a featx detector's checkpoint under torch >= 2.6.
- ``cached_download`` finds a URL's file where torch.hub (and so torchvision and timm) caches it,
  downloads it only when allowed, and checks the SHA-256 prefix that torchvision's file names carry
  (``resnet50-0676ba61.pth``) every time a cached file is used.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import socket
import zipfile
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from safetensors.torch import load_file as load_safetensors

from featx.errors import UnsafeCheckpointError, WeightsError, WeightsUnavailableError

__all__ = [
    "hf_weights_unreachable",
    "read_checkpoint", "load_checkpoint_file", "unwrap_state_dict", "hub_checkpoint_path", "cached_download",
    "verify_hash_prefix", "MMENGINE_CHECKPOINT_TYPES", "allow_mmengine_checkpoints",
]

logger = logging.getLogger("featx")


# -- mmengine's checkpoint types ---------------------------------------------------------------
def _numpy_multiarray():
    # numpy 2 moved numpy.core to numpy._core; the pickles name whichever wrote them
    return (getattr(np, "_core", None) or np.core).multiarray


# HistoryBuffer's built-in statistics (its registry of them fills only when an instance exists)
_HISTORY_BUFFER_STATISTICS = frozenset({"min", "max", "mean", "current"})


def _history_buffer_getattr(owner: object, name: str) -> object:
    """The one ``getattr`` mmengine's pickles call: ``getattr(HistoryBuffer, "min"/"max"/"mean"/"current")``
    (its statistics methods). Anything else is refused: a general ``getattr`` would let a crafted
    checkpoint walk from an allowed class to arbitrary code."""
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"featx refuses getattr({owner!r}, {name!r}) in a checkpoint")


# Exactly what mmengine's message hub pickles (found by loading a real checkpoint with
# weights_only=True until it loaded): the history buffers, the numpy arrays/scalars inside,
# and a getattr restricted to HistoryBuffer's statistics methods.
MMENGINE_CHECKPOINT_TYPES = [
    HistoryBuffer,
    (_history_buffer_getattr, "builtins.getattr"),
    _numpy_multiarray()._reconstruct,  # numpy arrays
    _numpy_multiarray().scalar,  # numpy scalars
    np.ndarray,
    np.dtype,
    type(np.dtype(np.float64)),  # numpy.dtypes.Float64DType (the dtype of the logged scalars)
    type(np.dtype(np.int64)),
]


def allow_mmengine_checkpoints() -> None:
    """Allow-list the types mmengine's checkpoints hold for ``torch.load(weights_only=True)``."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_TYPES)


allow_mmengine_checkpoints()


# -- reading files --------------------------------------------------------------------------
def read_checkpoint(path: Union[str, Path]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return its (unwrapped) state dict on the CPU."""
    return unwrap_state_dict(load_checkpoint_file(path), str(path))


def load_checkpoint_file(path: Union[str, Path]) -> Any:
    """The object in a checkpoint file, on the CPU: safetensors, or ``torch.load(weights_only=True)``
    (plus the types registered with ``torch.serialization.add_safe_globals``). Missing, corrupt and
    unsafe files raise ``WeightsError`` subclasses with a clear message."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; expected a checkpoint file (.pth, .pt, .safetensors)")
    if not path.is_file():
        raise WeightsUnavailableError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error type for bad headers
            raise WeightsError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's own advice is to retry with weights_only=False; featx never does, so only the reason is kept
        reason = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln), None)
        if reason is None:  # a broken or foreign pickle stream, not a refused class or function
            detail = next((ln for ln in lines if ln.startswith("Unsupported") or ln.startswith("invalid")), "a pickle "
                          "stream torch cannot read")
            raise WeightsError(f"cannot read {path}: not a checkpoint, or corrupt or truncated ({detail[:160]})") from None
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds objects that only arbitrary unpickling can build, which can run code "
            f"({reason[:160]}). featx loads checkpoints with weights_only=True only. If you trust the file, re-save "
            "its tensors with torch.save(model.state_dict(), ...) or as safetensors and load that."
        ) from None
    except (TypeError, AttributeError, ValueError) as e:
        if zipfile.is_zipfile(path):  # a whole torch.save archive whose pickle calls an allowed function wrongly
            raise UnsafeCheckpointError(
                f"refused to load {path}: its pickle calls functions that weights_only loading allows with arguments "
                f"they refuse ({type(e).__name__}: {str(e)[:160]}), which torch.save never writes: a crafted or "
                "foreign file. Re-save its tensors with torch.save(model.state_dict(), ...) or as safetensors") from None
        raise WeightsError(f"cannot read {path}: not a checkpoint, or corrupt or truncated "
                           f"({type(e).__name__}: {str(e)[:200]})") from None
    except Exception as e:  # torch.load raises many types for files that are not checkpoints (KeyError for text)
        raise WeightsError(f"cannot read {path}: not a checkpoint, or corrupt or truncated "
                           f"({type(e).__name__}: {str(e)[:200]})") from None


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``{"state_dict": sd}`` / ``{"model": sd}`` / DDP ``module.`` prefixes -> a flat tensor dict."""
    for _ in range(3):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            for key in ("state_dict", "model", "model_state_dict", "module"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        kind = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {list(obj)[:6]}"
        raise WeightsError(f"{source} holds no state dict (a {kind}); expected name -> tensor, optionally under 'state_dict' or 'model'")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


# -- the hub cache --------------------------------------------------------------------------
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch.hub's convention: <name>-<sha256 prefix>.<ext>
_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> verified prefix, per process


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub (and so torchvision) caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _verification_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def verify_hash_prefix(path: Path) -> None:
    """Check the SHA-256 prefix in a torch.hub file name (as ``torch.hub``'s ``check_hash`` does)
    against the file's content; a mismatch is a ``WeightsError`` naming both."""
    match = _HASH_IN_NAME.search(path.name)
    if not match:
        return
    prefix = match.group(1)
    key = _verification_key(path)
    if _VERIFIED.get(key) == prefix:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if not actual.startswith(prefix):
        raise WeightsError(
            f"{path} does not match the SHA-256 its name promises ({prefix}...; the file's is {actual[:len(prefix)]}...): "
            "it is not the published checkpoint (corrupt, or replaced). Delete it and download it again.")
    _VERIFIED[key] = prefix


def cached_download(url: str, check_hash: bool = True, progress: bool = True, timeout_s: float = 30.0,
                    allow_download: bool = True) -> Path:
    """The hub-cache file for ``url``, downloaded first when missing and ``allow_download``.

    With ``check_hash`` the SHA-256 prefix in the file name is checked on download and on every
    use of a cached file."""
    path = hub_checkpoint_path(url)
    if path.is_file():
        if check_hash:
            verify_hash_prefix(path)
        return path
    if not allow_download:
        raise WeightsUnavailableError(f"{path.name} is not cached at {path}, and downloading was not allowed here")
    path.parent.mkdir(parents=True, exist_ok=True)
    match = _HASH_IN_NAME.search(path.name) if check_hash else None
    logger.info("downloading %s to %s", url, path)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        # writes to a temporary file and renames it only when complete (and the hash matches)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=progress)
    except (OSError, RuntimeError) as e:
        raise WeightsUnavailableError(
            f"{path.name} is not cached and could not be downloaded ({type(e).__name__}: {e}).\n"
            f"  expected at: {path}\n"
            f"  to use it offline, download {url} on a machine with internet and copy it there "
            f"(the cache folder follows $TORCH_HOME, now {torch.hub.get_dir()})."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return path


# the files timm's Hugging Face loader looks for, in its order
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _in_hf_cache(repo_id: str) -> bool:
    """Whether a weights file of ``repo_id`` is in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in _HF_WEIGHT_FILES)


def hf_weights_unreachable(repo_id: str, timeout_s: float = 3.0) -> Optional[str]:
    """Why timm's download of ``repo_id``'s weights would fail now, or ``None``: not in the Hugging Face cache,
    and offline mode, or no name resolution or TCP connection to the hub within ``timeout_s``. (huggingface_hub
    itself retries for about a minute, printing each retry, before it fails.)"""
    from huggingface_hub import constants

    if _in_hf_cache(repo_id):
        return None
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme != "http" else 80)
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return None  # behind a proxy only the download itself can tell
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        return f"{host}:{port} cannot be reached ({type(e).__name__}: {e})"
    return None
