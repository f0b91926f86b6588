"""Images in, normalized batches out: the preprocessing torchvision's detectors apply."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.transforms.functional import pil_to_tensor
from torchvision.transforms.v2 import functional as TF

from featx.io import regular_file

__all__ = ["SAMPLE_PHOTOS", "sample_image_paths", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "MAX_RESIZED_PIXELS", "MAX_RESIZED_SIDE",
           "sample_image_path", "to_rgb", "load_image", "shorter_side_size", "resized_size_problem", "check_resized_size",
           "pipeline_size_problem", "resize_normalize", "detection_batch", "expand_image_paths"]

# File types featx reads as images (PIL decodes each).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# ImageNet statistics used by every torchvision (and timm ResNet) checkpoint, on a 0..1 scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Bounds on an image after resizing, checked before any decode or resize: PIL bounds decoded pixels, but a
# tiny file (a 6000x1 PNG is ~80 bytes) resized to a shorter side of 224 would become 1,344,000x224.
MAX_RESIZED_PIXELS = 1 << 26  # 67.1 million pixels (8192x8192)
MAX_RESIZED_SIDE = 1 << 15  # 32768 pixels


def shorter_side_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """``(h, w)`` scaled so that the shorter side is ``shorter`` (each side at least 1), as torchvision's
    ``Resize(int)`` computes it."""
    h, w = size
    scale = shorter / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resized_size_problem(original: tuple[int, int], resized: tuple[int, int]) -> str:
    """Why an ``original`` (h, w) image may not be resized to ``resized`` (h, w), or "" when it may."""
    h, w = resized
    if h * w > MAX_RESIZED_PIXELS or max(h, w) > MAX_RESIZED_SIDE:
        return (f"a {original[0]}x{original[1]} image would be resized to {h}x{w} ({h * w / 1e6:.1f} million pixels); "
                f"featx's limit is {MAX_RESIZED_PIXELS / 1e6:.1f} million pixels and {MAX_RESIZED_SIDE} per side "
                "(an extreme aspect ratio, or too large a size)")
    return ""


def check_resized_size(original: tuple[int, int], resized: tuple[int, int], name: str = "image") -> None:
    """Raise a ``ValueError`` naming ``name`` when :func:`resized_size_problem` finds one."""
    problem = resized_size_problem(original, resized)
    if problem:
        raise ValueError(f"{name}: {problem}")


def pipeline_size_problem(transform: object, original: tuple[int, int]) -> str:
    """Why a torchvision v2 pipeline may not run on an ``original`` (h, w) image, found before running it:
    each ``Resize`` with one size (the shorter side) or two (HxW) in turn, as :func:`resized_size_problem`
    (crops set the size the next step sees); "" when it may."""
    from torchvision.transforms import v2

    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    size = original
    for step in steps:
        if isinstance(step, v2.Resize) and step.size is not None:
            size = tuple(step.size) if len(step.size) == 2 else shorter_side_size(size, step.size[0])
            problem = resized_size_problem(original, size)
            if problem:
                return problem
        elif isinstance(step, (v2.CenterCrop, v2.RandomResizedCrop, v2.RandomCrop)):
            size = tuple(step.size)
    return ""


SAMPLE_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def sample_image_paths() -> list[Path]:
    """The photos and pictures that ship with matplotlib (a 512x600 JPEG portrait, two RGBA PNGs), to try
    commands on before one's own images."""
    return [sample_image_path().with_name(name) for name in SAMPLE_PHOTOS]


def sample_image_path() -> Path:
    """A real photo that ships with matplotlib (Grace Hopper, 600x512 JPEG)."""
    import matplotlib  # only to find its data folder; importing it costs ~0.3 s

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB version of ``image``: 16-bit/32-bit grayscale scaled to 0..255, alpha composited
    on white, palette and grayscale expanded."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F" and arr.size and arr.max() <= 1.0:
            top = 1.0
        elif mode.startswith("I;16") or (arr.size and arr.max() > 255):
            top = 65535.0
        else:
            top = 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def expand_image_paths(inputs: Sequence[Union[str, Path]]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursively, sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(p)
    return out


def load_image(path: Union[str, Path]) -> torch.Tensor:
    """Read an image file as a float RGB tensor ``(3, H, W)`` in 0..1 (grayscale/RGBA converted)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected an image file")
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    regular_file(path, "image")  # a pipe would block the reader forever, a device never end
    try:
        with Image.open(path) as im:
            rgb = to_rgb(im)
            rgb.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {path} as an image: {e}") from None
    return pil_to_tensor(rgb).float().div_(255)


def resize_normalize(image: torch.Tensor, size: Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(3, H, W)`` 0..1 image -> ``(3, *size)`` resized (antialiased) and normalized by ``mean``/``std``."""
    x = TF.resize(image, list(size), antialias=True)
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def detection_batch(images: list[torch.Tensor], min_size: int = 800, max_size: int = 1333,
                    size_divisible: int = 32) -> torch.Tensor:
    """Resize (shorter side to ``min_size``, longer at most ``max_size``), normalize with ImageNet
    statistics and pad to a multiple of ``size_divisible``, exactly as torchvision's
    Faster R-CNN does (it is torchvision's ``GeneralizedRCNNTransform``). Returns ``(N, 3, H, W)``."""
    transform = GeneralizedRCNNTransform(min_size, max_size, list(IMAGENET_MEAN), list(IMAGENET_STD),
                                         size_divisible=size_divisible).eval()
    with torch.no_grad():
        batch, _ = transform(images)
    return batch.tensors
