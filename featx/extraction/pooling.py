"""Each image's output per level: pooled over its own (unpadded) region (``avg``, ``max``, ``gem``) or the cropped map."""
from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

from featx.extraction.settings import ExtractSettings


def valid_sizes(resized: Sequence[tuple[int, int]], map_size: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """Per image, the ``(h, w)`` of its level map that sees the image, not the padding to the batch shape."""
    return [(min(map_size[0], max(1, math.ceil(h / stride))), min(map_size[1], max(1, math.ceil(w / stride))))
            for h, w in resized]


def pool_maps(maps: torch.Tensor, valid: Sequence[tuple[int, int]], how: str, p: float = 3.0) -> torch.Tensor:
    """``(N, C, h, w)`` maps -> ``(N, C)`` float32 vectors, each pooled over its own valid top-left
    ``valid[i]`` region (``avg``, ``max`` or ``GeM`` with exponent ``p``), batched where the maps are."""
    n, _, h, w = maps.shape
    x = maps.float()
    rows = torch.arange(h, device=x.device)[None, :, None] < torch.tensor([v[0] for v in valid], device=x.device)[:, None, None]
    cols = torch.arange(w, device=x.device)[None, None, :] < torch.tensor([v[1] for v in valid], device=x.device)[:, None, None]
    mask = (rows & cols)[:, None]  # (N, 1, h, w)
    if how == "max":
        return x.masked_fill(~mask, float("-inf")).amax(dim=(2, 3))
    count = mask.sum(dim=(2, 3)).to(x.dtype)  # (N, 1)
    if how == "avg":
        return (x * mask).sum(dim=(2, 3)) / count
    return ((x.clamp_min(1e-6).pow(p) * mask).sum(dim=(2, 3)) / count).pow(1.0 / p)  # GeM


def level_features(maps: torch.Tensor, resized: Sequence[tuple[int, int]], stride: int, settings: ExtractSettings,
                   dtype: np.dtype) -> list[np.ndarray]:
    """Each image's stored value at one level, from the batch's ``(N, C, h, w)`` maps wherever they are: the
    pooled ``(C,)`` vector or (``settings.maps``) the cropped map, cast to the stored ``dtype`` there and then
    brought to the host (one copy of vectors per batch, not of the maps)."""
    return to_host(device_values(maps, resized, stride, settings, dtype))


def device_values(maps: torch.Tensor, resized: Sequence[tuple[int, int]], stride: int, settings: ExtractSettings,
                  dtype: np.dtype) -> Union[torch.Tensor, list[torch.Tensor]]:
    """:func:`level_features` before the host copy: the ``(N, C)`` pooled vectors, or each image's cropped map,
    in the stored dtype, where the maps are."""
    valid = valid_sizes(resized, tuple(maps.shape[-2:]), stride)
    target = torch.float16 if dtype == np.float16 else torch.float32
    if settings.maps:
        return [maps[i, :, :vh, :vw].to(target) for i, (vh, vw) in enumerate(valid)]
    return pool_maps(maps, valid, settings.pool, settings.gem_p).to(target)


def to_host(values: Union[torch.Tensor, list[torch.Tensor]]) -> list[np.ndarray]:
    """:func:`device_values` on the host: one array per image."""
    if isinstance(values, list):
        return [np.ascontiguousarray(v.cpu().numpy()) for v in values]
    return list(values.cpu().numpy())
