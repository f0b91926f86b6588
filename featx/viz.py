"""Feature-map pictures: the input and, per pyramid level, a heat map over the image.

Each level's map ``(C, h, w)`` is reduced to one channel by the mean of absolute activations
(``"mean"``) or by its first principal component over channels (``"pca"``), upsampled to the
image's size and overlaid on it, titled with the level, stride and shape.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

import torchvision.transforms.v2.functional as TF

from featx.devices import checked_device
from featx.images import IMAGENET_MEAN, IMAGENET_STD, check_resized_size, load_image, sample_image_path, shorter_side_size
from featx.io import atomic_path
from featx.models import create_model

__all__ = ["reduce_map", "feature_figure", "render_feature_maps"]

PANEL_INCHES = 4.0
DPI = 100


def reduce_map(feature: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """``(C, h, w)`` -> ``(h, w)`` in 0..1: mean |activation| or the first principal component."""
    if feature.dim() != 3:
        raise ValueError(f"expected one feature map (C, h, w), got shape {tuple(feature.shape)}")
    c, h, w = feature.shape
    if method == "mean":
        m = feature.abs().mean(0)
    elif method == "pca":
        x = feature.reshape(c, h * w).T.double()
        x = x - x.mean(0, keepdim=True)
        if h * w < 2:
            m = torch.zeros(h, w, dtype=torch.float64)
        else:
            _, _, v = torch.pca_lowrank(x, q=1, center=False)
            m = (x @ v[:, 0]).reshape(h, w)
            if m.abs().max() > 0 and m.max() < -m.min():  # the sign of a component is arbitrary
                m = -m
    else:
        raise ValueError(f"method must be 'mean' or 'pca', got {method!r}")
    m = m.float()
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else torch.zeros_like(m)


def feature_figure(image: torch.Tensor, features: Sequence[torch.Tensor], titles: Sequence[str],
                   out: Union[str, Path], method: str = "mean", suptitle: str = "") -> tuple[int, int, int]:
    """Write a PNG: the image (``(3, H, W)`` in 0..1) then one overlay per level.

    Panels are ``PANEL_INCHES`` square at ``DPI``, at most 3 per row, so the PNG is
    ``(100 * 4 * cols) x (100 * 4 * rows)`` pixels. Returns ``(width, height, panels)``.
    """
    import matplotlib  # headless: the Agg backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(features)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows), dpi=DPI, squeeze=False)
    img = image.permute(1, 2, 0).clamp(0, 1).numpy()
    h, w = img.shape[:2]
    axes[0][0].imshow(img)
    axes[0][0].set_title(f"input {h}x{w}", fontsize=9)
    for i, (feat, title) in enumerate(zip(features, titles), start=1):
        ax = axes[i // cols][i % cols]
        heat = reduce_map(feat, method)
        heat = F.interpolate(heat[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        ax.imshow(img)
        ax.imshow(heat.numpy(), cmap="inferno", alpha=0.6)
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)
    return int(PANEL_INCHES * DPI * cols), int(PANEL_INCHES * DPI * rows), panels


def render_feature_maps(image: str, model_name: str, out: Union[str, Path], weights: Optional[str] = None,
                        size: int = 512, method: str = "mean", device: str = "cpu") -> tuple[int, int, int]:
    """Run ``model_name`` on ``image`` (``"sample"``: matplotlib's photo) resized to shorter side
    ``size`` on ``device`` and write the heat-map figure to ``out``; returns ``(width, height, panels)`` in
    pixels."""
    run_on = checked_device(device)
    img = load_image(sample_image_path() if image == "sample" else image)
    original = tuple(img.shape[-2:])
    check_resized_size(original, shorter_side_size(original, size), str(image))
    img = TF.resize(img, size, antialias=True)
    x = TF.normalize(img, list(IMAGENET_MEAN), list(IMAGENET_STD))[None]
    torch.manual_seed(0)
    model = create_model(model_name, weights=weights).eval().to(run_on)
    with torch.inference_mode():
        feats = [f.cpu() for f in model(x.to(run_on))]
    titles = [f"{f.name}  stride {f.stride}  {f.channels}x{o.shape[-2]}x{o.shape[-1]}" for f, o in zip(model.feature_info, feats)]
    note = model.load_report.source if model.load_report else "random init (seed 0)"
    return feature_figure(img, [f[0] for f in feats], titles, out, method, f"{model_name}: {method} activation | weights: {note}")
