"""Users' own image files: paths, folders and globs -> a batch a model can take.

`expand` turns what a user typed (files, folders, glob patterns) into a sorted list of image
files; `read` loads them as (N, H, W, C) float32 pixels in [0, 1] at the model's input size,
with notes: each file read at its full bit depth first (`cocoa_jax.data.pixels`: every PIL
mode, EXIF orientation, alpha on a white background by default), then resized in float: through
the model's own resize and crop when it has one (`model.preprocess`), else (the digits encoders)
converted to the model's channel count and stretched bilinearly. Normalisation (mean/std)
is NOT applied here: every loaded model takes [0, 1] pixels and normalises inside its
`encode_fn`, so blurring, masking and attributions happen on pixels.
Every problem is a ValueError naming the file; notes and errors know nothing of the command line
(a command prefixes them with its flag, `cocoa_jax.commands.errors.flag_errors`).
"""
from __future__ import annotations

import glob
import os
from typing import NamedTuple, Sequence

import numpy as np

from cocoa_jax.data import pixels

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand(paths: Sequence[str]) -> list[str]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns -> image files.

    Duplicates are kept once, in order. ValueError naming the path that finds nothing.
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
                raise ValueError(f"folder {raw!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        elif os.path.isfile(path):
            out.append(path)
        elif glob.has_magic(path):
            found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not found:
                raise ValueError(f"pattern {raw!r} matches no files")
            out += found
        else:
            raise ValueError(f"no such file or folder {raw!r}")
    return [os.path.abspath(p) for p in dict.fromkeys(out)]


class ReadImages(NamedTuple):
    """What `read` returns: the pixels and one line of note per file that was read unusually."""

    pixels: np.ndarray          # (N, H, W, C) float32 in [0, 1]
    notes: tuple[str, ...]      # e.g. "a.png (4x4 px): upscaled 8.0x; stretched to 32x32"


def read(paths: Sequence[str], input_shape, preprocess=None, *,
         background: float = pixels.WHITE) -> ReadImages:
    """Image files -> `ReadImages`: (N, H, W, C) float32 in [0, 1] for a model with `input_shape`
    (H, W, C), and notes.

    Each file is read at its full bit depth (`cocoa_jax.data.pixels.to_float`: every PIL mode,
    EXIF orientation applied, alpha composited on `background`, a grey level, default white,
    first frame of an animation), THEN resized in float: by `preprocess.resize_crop` when the
    model has its own resize and crop, else stretched bilinearly to (H, W). One line of note per
    file that is animated, magnified more than TINY_FACTOR times, or of aspect beyond
    EXTREME_ASPECT:1; aspect beyond MAX_ASPECT:1 is refused (the resize would be meaningless, and
    for a model's shorter-side resize, huge).
    """
    from PIL import Image, UnidentifiedImageError

    height, width, channels = (int(v) for v in input_shape)
    images, notes = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames = int(getattr(image, "n_frames", 1))
                decoded = pixels.to_float(image, 3 if preprocess is not None else channels, background=background)
            remarks = _resize_remarks(decoded.shape[:2], (height, width), preprocess)
            if preprocess is not None:
                out = preprocess.resize_crop(decoded)
            else:
                out = pixels.resize(decoded, (height, width), "bilinear")
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ValueError(f"cannot read image {path!r} ({type(err).__name__}: {err})") from None
        if frames > 1:
            remarks.insert(0, f"first frame of {frames}")
        if remarks:
            notes.append(f"{path} ({decoded.shape[1]}x{decoded.shape[0]} px): {'; '.join(remarks)}")
        out = np.asarray(out, np.float32)
        if out.ndim == 2:
            out = out[..., None]
        if out.shape != (height, width, channels):
            raise ValueError(f"image {path!r} became {out.shape} after preprocessing, but the model "
                             f"takes {(height, width, channels)}")
        images.append(out)
    if not images:
        raise ValueError("no images")
    return ReadImages(np.stack(images), tuple(notes))


# A note when one source pixel becomes more than TINY_FACTOR pixels on a side, or when the long
# side exceeds EXTREME_ASPECT times the short one; refused beyond MAX_ASPECT.
TINY_FACTOR = 4.0
EXTREME_ASPECT = 10.0
MAX_ASPECT = 100.0


def _resize_remarks(size, input_size, preprocess) -> list[str]:
    """What the resize does to an image of `size` (h, w) that a reader should know (phrases)."""
    (h, w), (height, width) = size, input_size
    aspect = max(h, w) / min(h, w)
    if aspect > MAX_ASPECT:
        raise ValueError(f"{w}x{h} px: aspect {aspect:.0f}:1 exceeds {MAX_ASPECT:.0f}:1; crop it to the part "
                         f"to explain first")
    remarks = []
    if preprocess is None:
        factor = max(height / h, width / w)
        target = f"stretched to {width}x{height}"
    else:
        factor = preprocess.resize / min(h, w)
        long_side = int(preprocess.resize * aspect)
        target = (f"shorter side to {preprocess.resize}, then the center {preprocess.crop}x{preprocess.crop} crop "
                  f"keeps {preprocess.crop / long_side:.0%} of its long side")
    if factor > TINY_FACTOR:
        remarks.append(f"upscaled {factor:.1f}x")
    if aspect > EXTREME_ASPECT:
        remarks.append(f"aspect {aspect:.1f}:1")
    if remarks:
        remarks.append(target)
    return remarks
