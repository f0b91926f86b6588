"""featx's exceptions (one ``FeatxError`` base) and the one "did you mean" helper.

Every error featx raises on purpose is a ``FeatxError``, so a caller (the CLI, a training script)
can tell featx's clear messages from bugs. Each also derives from the built-in exception a caller
would expect (``ValueError`` for bad arguments, ``KeyError`` for unknown names, ``RuntimeError``
for a step that could not run), so ``except ValueError`` keeps working.
"""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "FeatxError", "UnknownModelError", "WeightsError", "UnsafeCheckpointError", "CheckpointMismatchError",
    "WeightsUnavailableError", "ExportError", "QuantizationError", "ParityError", "DataError", "StoreError", "ArgumentError", "DepthError", "TrainError", "DetectorMismatchError",
    "Int8SaturationWarning", "PlanarHintWarning", "did_you_mean",
]


class FeatxError(Exception):
    """Base of every error featx raises on purpose; the message says what was expected and what to do."""


class UnknownModelError(FeatxError, KeyError):
    """A model name that no registry entry, alias or timm name matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(FeatxError, ValueError):
    """A weights argument or checkpoint that featx cannot use."""


class UnsafeCheckpointError(WeightsError):
    """The file needs arbitrary unpickling (code execution) to load; featx refuses it."""


class CheckpointMismatchError(WeightsError):
    """The checkpoint's keys or shapes do not fit the model."""


class WeightsUnavailableError(WeightsError):
    """The file is neither cached nor downloadable."""


class UnsafeConfigError(FeatxError, ValueError):
    """Config text that is not plain data (it would run code if executed); read, never run."""


class ExportError(FeatxError, RuntimeError):
    """The export could not be done; no file was left behind."""


class QuantizationError(FeatxError, ValueError):
    """A file or calibration set that int8 quantization cannot start from."""


class ParityError(FeatxError, RuntimeError):
    """The parity check could not run (wrong file, unavailable device); distinct from a failed gate."""


class DataError(FeatxError, ValueError):
    """The dataset cannot be used as given (raised before training starts)."""


class StoreError(FeatxError, ValueError):
    """A feature store whose files disagree (index, arrays, manifest) or cannot be written; nothing is guessed."""


class ArgumentError(FeatxError, ValueError, AssertionError):
    """A backbone argument featx refuses where mmdet's ResNet refuses it too; also an ``AssertionError``, what
    mmdet raises for the same refusals, so code written against mmdet's class catches it unchanged."""


class DepthError(FeatxError, ValueError, KeyError):
    """A ResNet depth featx does not build; also a ``KeyError``, what mmdet raises for it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TrainError(FeatxError, RuntimeError):
    """The training run cannot start as asked (raised before any epoch)."""


class DetectorMismatchError(FeatxError, ValueError):
    """A pyramid whose levels do not fit what a detector's anchors or RoI poolers ask for."""


class Int8SaturationWarning(UserWarning):
    """An int8 file about to run on a CPU where its u8 x s8 products can saturate (no VNNI, and quantized
    with 8-bit weights: without ONNX Runtime's reduce_range or NNCF's overflow fix, which guard against it)."""


class PlanarHintWarning(UserWarning):
    """An OpenVINO IR whose planar-kernel hints (written on the CPU it was exported on) name a kernel this CPU
    lacks for some layers: those run without the hint."""


def did_you_mean(word: object, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``" (did you mean a, b?)"`` for the choices closest to ``word``, or ``""`` when none is close.

    Matching ignores case, so ``"resnet50fpn"`` finds ``"ResNet50FPN"``.
    """
    choices = list(dict.fromkeys(choices))
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(by_lower[c] for c in close)}?)" if close else ""


class UntrainedFrozenWarning(UserWarning):
    """A training config that freezes layers (``frozen_stages``) or their normalization statistics (``norm_eval``)
    while nothing loads weights into them: those layers stay random, and the run trains to chance."""
