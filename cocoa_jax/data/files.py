"""Users' own image files: paths, folders and globs -> a batch a model can take.

`expand` turns what a user typed (files, folders, glob patterns) into a sorted list of image
files; `read` loads them as (N, H, W, C) float32 pixels in [0, 1] at the model's input size:
through the model's own resize and crop when it has one (`model.preprocess`), else (the digits
encoders) converted to the model's channel count and resized bilinearly. Normalisation (mean/std)
is NOT applied here: `pixel_encoder(model)` folds it into the encoder, so blurring, masking and
attributions happen on pixels (IG and RISE are unchanged by a per-channel affine map).
Every problem is a ValueError naming the argument and the file.
"""
from __future__ import annotations

import functools
import glob
import os
from typing import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand(option: str, paths: Sequence[str]) -> list[str]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns -> image files.

    `option` names the argument in errors (e.g. "--images"). Duplicates are kept once, in order.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for raw in paths:
        path = os.path.expanduser(str(raw))
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name)))
            if not found:
                raise ValueError(f"{option}: folder {raw!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        elif os.path.isfile(path):
            out.append(path)
        elif glob.has_magic(path):
            found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not found:
                raise ValueError(f"{option}: pattern {raw!r} matches no files")
            out += found
        else:
            raise ValueError(f"{option}: no such file or folder {raw!r}")
    return [os.path.abspath(p) for p in dict.fromkeys(out)]


def read(option: str, paths: Sequence[str], input_shape, preprocess=None) -> np.ndarray:
    """Image files -> (N, H, W, C) float32 in [0, 1] for a model with `input_shape` (H, W, C)."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = (int(v) for v in input_shape)
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                if preprocess is not None:
                    pixels = preprocess.resize_crop(image.convert("RGB"))
                else:
                    mode = "L" if channels == 1 else "RGB"
                    resized = image.convert(mode).resize((width, height), Image.BILINEAR)
                    pixels = np.asarray(resized, np.float32) / 255.0
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ValueError(f"{option}: cannot read image {path!r} ({type(err).__name__}: {err})") from None
        pixels = np.asarray(pixels, np.float32)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.shape != (height, width, channels):
            raise ValueError(f"{option}: image {path!r} became {pixels.shape} after preprocessing, but the model "
                             f"takes {(height, width, channels)}")
        images.append(pixels)
    if not images:
        raise ValueError(f"{option}: no images")
    return np.stack(images)


def pixel_encoder(model):
    """`encode_fn(params, pixels in [0, 1])` of `model`: its normalisation folded in (one function
    object per model, so compiled programs are reused)."""
    preprocess = getattr(model, "preprocess", None)
    if preprocess is None or getattr(preprocess, "mean", None) is None:
        return model.encode_fn
    return _normalized(model.encode_fn, preprocess)


@functools.lru_cache(maxsize=None)
def _normalized(encode_fn, preprocess):
    def encode(params, x):
        return encode_fn(params, preprocess.normalize(x))

    return encode
