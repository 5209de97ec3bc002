"""Image preprocessing of each ported model, with PIL + numpy (no torchvision).

Each `Preprocessing` reproduces a torchvision pipeline
`Resize(resize, interpolation) -> CenterCrop(crop) -> ToTensor -> [Normalize(mean, std)]`
but returns NHWC-ready float32 arrays `(crop, crop, 3)`.

`resize_crop(image)` gives the geometric part in [0, 1]; `normalize(x)` the mean/std part.
Calling the object does both. Keeping them apart lets you attribute in [0, 1] pixel space
by folding `normalize` into the encoder (it is differentiable jnp-compatible arithmetic).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = ("bilinear", "bicubic")


def _to_pil_rgb(image):
    """PIL image, or (H, W[, C]) uint8 / float-in-[0, 1] array -> RGB PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"image must be a PIL image or an (H, W[, 1|3|4]) array, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"image array must be uint8 or float in [0, 1], got dtype {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError("image contains NaN or inf")
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def resize_shorter_side(image, size: int, interpolation: str):
    """torchvision `Resize(size)` on a PIL image: shorter side -> size, aspect kept (long side floored)."""
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return image.resize((new_w, new_h), resample)


def center_crop(image, size: int):
    """torchvision `CenterCrop(size)` on a PIL image at least `size` on both sides."""
    width, height = image.size
    if width < size or height < size:
        raise ValueError(f"image ({width}x{height}) is smaller than the crop size {size}")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Resize shorter side -> center crop -> [0, 1] -> optional (x - mean) / std. Output (crop, crop, 3)."""

    resize: int
    crop: int
    interpolation: str = "bilinear"
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None

    def __post_init__(self):
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must both be given or both be None")

    def resize_crop(self, image) -> np.ndarray:
        """PIL image or (H, W[, C]) array -> float32 (crop, crop, 3) in [0, 1]."""
        pil = center_crop(resize_shorter_side(_to_pil_rgb(image), self.resize, self.interpolation), self.crop)
        return np.asarray(pil, dtype=np.float32) / 255.0

    def normalize(self, x):
        """(..., 3) in [0, 1] -> normalised; identity when the model takes raw [0, 1] pixels.

        Works on numpy and jax arrays (so it can be folded into a differentiable encoder).
        """
        if self.mean is None:
            return x
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def input_range(self, channels: int = 3) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(low, high) per channel of what this preprocessing outputs: [0, 1] pixels normalised,
        i.e. ((0 - mean) / std, (1 - mean) / std), or [0, 1] without mean/std."""
        return value_range(self, channels)

    def __call__(self, image) -> np.ndarray:
        """One image -> float32 (crop, crop, 3), ready to stack into an encoder batch."""
        return np.asarray(self.normalize(self.resize_crop(image)), dtype=np.float32)

    def batch(self, images) -> np.ndarray:
        """Sequence of images -> float32 (N, crop, crop, 3)."""
        return np.stack([self(image) for image in images])


def value_range(preprocess: Optional["Preprocessing"], channels: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(low, high) per channel of inputs prepared by `preprocess` (None: raw [0, 1] pixels)."""
    if preprocess is None or preprocess.mean is None:
        return (0.0,) * channels, (1.0,) * channels
    mean, std = np.asarray(preprocess.mean, np.float64), np.asarray(preprocess.std, np.float64)
    return tuple(float(v) for v in (0.0 - mean) / std), tuple(float(v) for v in (1.0 - mean) / std)


# int(32 * 8 / 7) == 36: SimSiam's CIFAR test transform.
CIFAR = Preprocessing(resize=36, crop=32, interpolation="bicubic", mean=CIFAR_MEAN, std=CIFAR_STD)
# SimCLR v1 takes raw [0, 1] pixels (no mean/std).
IMAGENET_RAW = Preprocessing(resize=256, crop=224, interpolation="bilinear")
IMAGENET = Preprocessing(resize=256, crop=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)
CLIP = Preprocessing(resize=224, crop=224, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD)
# DINO / DINOv2 evaluation: bicubic resize 256, center crop 224, ImageNet mean/std.
IMAGENET_BICUBIC = Preprocessing(resize=256, crop=224, interpolation="bicubic", mean=IMAGENET_MEAN,
                                 std=IMAGENET_STD)
