"""Image preprocessing of each ported model, with PIL + numpy (no torchvision).

Each `Preprocessing` reproduces a torchvision pipeline
`Resize(resize, interpolation) -> CenterCrop(crop) -> ToTensor -> [Normalize(mean, std)]`
but returns NHWC-ready float32 arrays `(crop, crop, 3)`.

`resize_crop(image)` gives the geometric part in [0, 1] (any PIL mode or array read to float at
full bit depth first, then resized in float); `normalize(x)` the mean/std part.
Calling the object gives [0, 1] pixels (`resize_crop`): every loaded model takes pixels in [0, 1]
and applies `normalize` inside its `encode_fn` (differentiable jnp-compatible arithmetic), so
attributions, blurs and masks act on pixels; `normalize` gives the raw network's input (`network_fn`).
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


def shorter_side_size(width: int, height: int, size: int) -> Tuple[int, int]:
    """torchvision `Resize(size)`'s output (width, height): shorter side -> size, long side floored."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resize_shorter_side(image, size: int, interpolation: str):
    """torchvision `Resize(size)`: shorter side -> size, aspect kept (long side floored).

    On a PIL image (resampled by PIL in its own mode) or an (H, W, C) float array (resampled
    on the float values: `cocoa_jax.data.pixels.resize`)."""
    from PIL import Image

    from cocoa_jax.data import pixels

    if isinstance(image, Image.Image):
        width, height = image.size
    else:
        height, width = image.shape[:2]
    if min(width, height) == size:
        return image
    new_w, new_h = shorter_side_size(width, height, size)
    if isinstance(image, Image.Image):
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
        return image.resize((new_w, new_h), resample)
    return pixels.resize(image, (new_h, new_w), interpolation)


def center_crop(image, size: int):
    """torchvision `CenterCrop(size)` on a PIL image or an (H, W, C) array at least `size` on both sides."""
    from PIL import Image

    pil = isinstance(image, Image.Image)
    width, height = image.size if pil else (image.shape[1], image.shape[0])
    if width < size or height < size:
        raise ValueError(f"image ({width}x{height}) is smaller than the crop size {size}")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    if pil:
        return image.crop((left, top, left + size, top + size))
    return image[top:top + size, left:left + size]


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

    def at_size(self, size: int) -> "Preprocessing":
        """The same pipeline for a model whose native input is `size` px (CLIP L/14@336, SigLIP 384,
        a ViT converted at 518): crop `size`, the resize scaled by the same factor as the table's
        (CLIP: resize = crop; ImageNet: 256/224 of the crop)."""
        size = int(size)
        if size == self.crop:
            return self
        return dataclasses.replace(self, resize=int(round(self.resize * size / self.crop)), crop=size)

    def resize_crop(self, image, *, background: float = 1.0) -> np.ndarray:
        """Image -> float32 (crop, crop, 3) in [0, 1].

        `image`: a PIL image of any mode (read at its full bit depth, EXIF orientation applied,
        first frame) or an (H, W[, 1|3|4]) array: uint8, uint16 or float in [0, 1]
        (`cocoa_jax.data.pixels.to_float`). Alpha is composited on `background` (a grey level,
        default white). The resize runs on the float values: on 8-bit images it matches
        torchvision's PIL pipeline up to that pipeline's rounding after each of its two passes
        (measured on photos: at most 1/255 bilinear, 1.1/255 bicubic; 0.3/255 on average).
        """
        from cocoa_jax.data import pixels

        rgb = pixels.to_float(image, 3, background=background)
        resized = resize_shorter_side(rgb, self.resize, self.interpolation)
        return np.ascontiguousarray(center_crop(resized, self.crop))

    def normalize(self, x):
        """(..., 3) pixels in [0, 1] -> (x - mean) / std, the raw network's input (`network_fn`);
        identity when the model takes raw [0, 1] pixels.

        Works on numpy and jax arrays: `LoadedModel.encode_fn` applies it inside, differentiably.
        """
        if self.mean is None:
            return x
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def input_range(self, channels: int = 3) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(low, high) per channel of what calling this preprocessing gives: [0, 1] pixels.
        (`value_range(self, channels)` is the range after `normalize`, the raw network's input.)"""
        return (0.0,) * channels, (1.0,) * channels

    def __call__(self, image) -> np.ndarray:
        """One image -> float32 (crop, crop, 3) pixels in [0, 1] (resize + crop, NOT normalised):
        what `LoadedModel.encode_fn` takes (it normalises inside), ready to stack into a batch."""
        return np.asarray(self.resize_crop(image), dtype=np.float32)

    def batch(self, images) -> np.ndarray:
        """Sequence of images -> float32 (N, crop, crop, 3) pixels in [0, 1]."""
        return np.stack([self(image) for image in images])


def value_range(preprocess: Optional["Preprocessing"], channels: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(low, high) per channel of `preprocess.normalize` on [0, 1] pixels, the raw network's input:
    ((0 - mean) / std, (1 - mean) / std); [0, 1] for None or a preprocessing without mean/std."""
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
