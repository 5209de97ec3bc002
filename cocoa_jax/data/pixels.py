"""Any image -> float pixels in [0, 1] at the file's full bit depth, and resampling in float.

Why: `image.convert("L" or "RGB")` clips 16-bit values (a 16-bit grey PNG read that way is
almost white) and quantises every image to 8 bits before it is resized. Here each PIL mode is
mapped to [0, 1] by its own full scale, alpha is composited on a stated background, the EXIF
orientation is applied, and resizing runs on the float values.

Modes (PIL's names):
  1 -> 0 or 1;  L, LA, P, PA, RGB, RGBA, CMYK, YCbCr (8 bits) -> value / 255;
  I;16, I;16L, I;16B, I;16N -> value / 65535;
  I (32-bit integers) -> value / full scale where the file states it: PNG and PGM/PPM (Pillow
    opens their 16-bit images as I, PGM/PPM scaled to 0..65535) -> / 65535; TIFF with unsigned
    BitsPerSample b <= 16 -> / (2**b - 1). True 32-bit integers (and I of unknown origin) are
    refused: 32-bit integer images hold counts or labels, with no standard full scale
    (/ (2**32 - 1) would make typical data black, a min-max rescale would change with content);
  F (32-bit float) -> as it is if within [0, 1], else refused (no guessed rescaling);
  CMYK -> RGB = (1 - C)(1 - K), ... (no ICC colour management, as PIL's own convert);
  YCbCr -> RGB with the JPEG (ITU-R BT.601 full-range) matrix, clipped to [0, 1];
  colour -> grey with the ITU-R BT.601 luma weights 0.299, 0.587, 0.114 (PIL's "L" weights).
An animated or multi-page file gives its current frame (the first, as opened).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

WHITE = 1.0
BLACK = 0.0
LUMA_601 = (0.299, 0.587, 0.114)
# ITU-R BT.601 full range (JPEG/JFIF), the matrix PIL's YCbCr -> RGB approximates in fixed point:
# rows R, G, B over (Y, Cb - 128, Cr - 128) / 255.
YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_INTERPOLATIONS = ("bilinear", "bicubic")
_ROUNDING = 1e-6  # float pixels this far outside [0, 1] are rounding, clipped; further is refused


def to_float(image, channels: Optional[int] = None, *, background: float = WHITE) -> np.ndarray:
    """A PIL image (any mode) or an array -> float32 (H, W, C) in [0, 1].

    channels: 1 (grey: BT.601 luma of colour), 3 (RGB: grey repeated), or None (as the image is).
    background: grey level in [0, 1] that transparent pixels are composited on (default white):
      out = alpha * colour + (1 - alpha) * background.
    Arrays: (H, W), (H, W, 1|3|4) of uint8 (/ 255), uint16 (/ 65535), bool, or float in [0, 1];
    a 4th channel is alpha. PIL images get their EXIF orientation applied first.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    background = float(background)
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be a grey level in [0, 1], got {background}")
    from PIL import Image

    if isinstance(image, Image.Image):
        values, alpha = _from_pil(image)
    else:
        values, alpha = _from_array(image)
    if alpha is not None:
        values = alpha * values + (1.0 - alpha) * np.float32(background)
    return _with_channels(values, channels).astype(np.float32)


def resize(pixels: np.ndarray, size, interpolation: str = "bilinear") -> np.ndarray:
    """(H, W, C) float -> float32 (height, width, C): PIL's antialiased resampling on the float values
    (mode F, one channel at a time, no 8-bit step). As PIL's 8-bit resize (and so torchvision's PIL
    pipelines) it runs horizontally, then vertically, each pass clipped to [0, 1]: bicubic's
    overshoot at edges is cut where theirs is, and the result differs from theirs by their
    rounding only."""
    from PIL import Image

    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    height, width = (int(v) for v in size)
    out = np.asarray(pixels, np.float32)
    for shape in ((out.shape[0], width), (height, width)):  # (rows, columns) after each pass
        if out.shape[:2] != shape:
            out = np.clip(np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(out[..., c]))
                                               .resize(shape[::-1], resample))
                                    for c in range(out.shape[-1])], -1), 0.0, 1.0)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------

def _from_pil(image):
    """(values (H, W, 1|3) float32 in [0, 1], alpha (H, W, 1) or None), EXIF orientation applied."""
    from PIL import ImageOps

    mode = image.mode
    full_scale = _integer_full_scale(image) if mode == "I" else None  # before the transpose drops the tags
    image = ImageOps.exif_transpose(image)
    if mode == "1":
        return np.asarray(image, bool)[..., None].astype(np.float32), None
    if mode in ("L", "RGB") or mode in _SIXTEEN_BIT:
        array = np.asarray(image)
        scale = 255.0 if mode in ("L", "RGB") else 65535.0
        return _hwc(array.astype(np.float32) / scale), None
    if mode == "I":
        array = np.asarray(image).astype(np.float32)
        if array.size and (array.min() < 0 or array.max() > full_scale):
            raise ValueError(f"mode I image holds values in [{array.min():g}, {array.max():g}], outside its "
                             f"full scale [0, {full_scale:g}]")
        return _hwc(array / full_scale), None
    if mode == "F":
        return _hwc(_unit_float(np.asarray(image, np.float32), "mode F image")), None
    if mode == "CMYK":
        cmyk = np.asarray(image).astype(np.float32) / 255.0
        return (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:]), None
    if mode == "YCbCr":
        offset = np.array([0.0, 128.0, 128.0], np.float32)  # JPEG's chroma offset
        ycc = (np.asarray(image).astype(np.float32) - offset) / 255.0
        return np.clip(ycc @ np.asarray(YCBCR_TO_RGB, np.float32).T, 0.0, 1.0), None
    if mode in ("LA", "La"):
        array = np.asarray(image.convert("LA")).astype(np.float32) / 255.0
        return array[..., :1], array[..., 1:]
    if mode == "RGBA" or mode in ("P", "PA", "RGBa", "RGBX"):
        # P: palette (and its transparency) looked up by PIL, exactly (8-bit to 8-bit).
        array = np.asarray(image.convert("RGBA")).astype(np.float32) / 255.0
        has_alpha = mode in ("RGBA", "PA", "RGBa") or (mode == "P" and _palette_has_alpha(image))
        return array[..., :3], (array[..., 3:] if has_alpha else None)
    raise ValueError(f"image mode {mode!r} is not supported (supported: 1, L, LA, P, PA, RGB, RGBA, CMYK, "
                     f"YCbCr, I;16, I;16L, I;16B, I, F)")


def _palette_has_alpha(image) -> bool:
    return "transparency" in image.info or (image.palette is not None and "A" in image.palette.mode)


def _integer_full_scale(image) -> float:
    """The value that means full intensity in a mode-I image, from what its file states; else refused."""
    fmt = getattr(image, "format", None)
    if fmt in ("PNG", "PPM"):
        return 65535.0  # Pillow opens 16-bit PNG / PGM as I (PGM's maxval rescaled to 65535)
    if fmt == "TIFF":
        tags = image.tag_v2
        bits = tags.get(258, (None,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        sample_format = tags.get(339, (1,))
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        if sample_format == 1 and bits is not None and int(bits) <= 16:
            return float(2 ** int(bits) - 1)
        kind = {1: "unsigned", 2: "signed"}.get(sample_format, f"SampleFormat {sample_format}")
        raise ValueError(f"{bits}-bit {kind} integer TIFF: integer images wider than 16 bits (or signed) have "
                         f"no standard full scale; save it as 8 or 16 bits, or as float in [0, 1] (mode F)")
    raise ValueError(f"mode I (32-bit integer) image from {fmt or 'memory'} has no known bit depth; "
                     f"pass an array scaled to [0, 1] (e.g. values / max possible value)")


def _from_array(image):
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"image must be a PIL image or an (H, W[, 1|3|4]) array, got shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif array.dtype == bool:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        array = _unit_float(array.astype(np.float32), "image array")
    else:
        raise TypeError(f"image array must be uint8, uint16, bool or float in [0, 1], got dtype {array.dtype}")
    array = _hwc(array)
    if array.shape[-1] == 4:
        return array[..., :3], array[..., 3:]
    return array, None


def _unit_float(array: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or inf")
    if array.size and (array.min() < -_ROUNDING or array.max() > 1.0 + _ROUNDING):
        raise ValueError(f"{what} holds values in [{array.min():g}, {array.max():g}]; float pixels must lie in "
                         f"[0, 1] (rescale them first: no rescaling is guessed)")
    return np.clip(array, 0.0, 1.0)


def _hwc(array: np.ndarray) -> np.ndarray:
    return array[..., None] if array.ndim == 2 else array


def _with_channels(values: np.ndarray, channels: Optional[int]) -> np.ndarray:
    have = values.shape[-1]
    if channels is None or channels == have:
        return values
    if channels == 3:  # grey -> RGB
        return np.repeat(values, 3, axis=-1)
    return values @ np.asarray(LUMA_601, np.float32)[:, None]  # RGB -> grey
