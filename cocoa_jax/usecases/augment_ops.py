"""Augmentations with provenance: pure JAX, explicit keys, each `fn(key, image (H, W, C)) -> View`.

A View is the augmented image plus its *provenance*: `source` (H, W, 2), the (row, col)
position in the original that each output pixel was sampled from (pixel centres at integer
coordinates), and `valid` (H, W), False where an output pixel carries no original content
(erased). Geometric operations transform the identity coordinate grid with the very same
operation as the image, so provenance cannot drift from what was done to the pixels.
Colour operations use dm-pix with SimCLR v1's semantics (its `color_jitter_rand`:
additive brightness, contrast/saturation factors, hue shift, random order, clip after each).
`footprint` turns provenance into the (H, W) pixels of the original a view was sampled from.

Used by the content-share experiment of `cocoa_jax.usecases.augmentations`, which re-exports
every public name here. Images (H, W, C) float32 in [0, 1]; sample i of a batch uses
`jax.random.split(key, n)[i]`.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks

# Views the experiment can explain. "original" is the identity (the paper's first column).
AUGMENTATIONS = ("original", "flip", "crop", "crop_flip", "grayscale", "color_jitter", "erase", "rot90")
COLOR_AUGMENTATIONS = ("grayscale", "color_jitter")  # need 3 channels
AUGMENTATION_TITLES = {"original": "original", "flip": "flip", "crop": "resized crop",
                       "crop_flip": "crop + flip", "grayscale": "grayscale", "color_jitter": "colour jitter",
                       "erase": "random erasing", "rot90": "rotate 90°"}

CROP_SCALE = (0.2, 0.5)            # issue / paper: random resized crop of 20-50% of the area
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision / SimCLR aspect-ratio range
ERASE_SCALE = (0.1, 0.25)
ERASE_RATIO = (0.3, 3.3)           # torchvision RandomErasing default
ERASE_VALUE = 0.5
JITTER = (0.8, 0.8, 0.8, 0.2)      # brightness, contrast, saturation, hue (SimCLR strength 1.0)
_ATTEMPTS = 10                     # torchvision's rejection-sampling attempts for boxes


class View(NamedTuple):
    """An augmented image and where its pixels came from.

    image:  (H, W, C) the augmented view.
    source: (H, W, 2) float32, (row, col) in the original sampled by each output pixel.
    valid:  (H, W) bool, False where the pixel holds no original content (erased).
    """

    image: jax.Array
    source: jax.Array
    valid: jax.Array


# ----------------------------------------------------------------------------- provenance


def identity_grid(height: int, width: int) -> jax.Array:
    """(H, W, 2) float32 grid whose entry (r, c) is (r, c)."""
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                              indexing="ij")
    return jnp.stack([rows, cols], axis=-1)


def identity_view(image: jax.Array) -> View:
    """The original as a View: every pixel from itself, all valid."""
    h, w = image.shape[:2]
    return View(image, identity_grid(h, w), jnp.ones((h, w), bool))


def resample(image: jax.Array, source: jax.Array) -> jax.Array:
    """Bilinear sampling: out[i, j] = image at (source[i, j, 0], source[i, j, 1]).

    image (H, W, C); source (H', W', 2) with coordinates in [0, H-1] x [0, W-1] (clamped to the
    edges outside). Returns (H', W', C). Integer coordinates reproduce pixels exactly.
    """
    coords = [source[..., 0], source[..., 1]]
    one = lambda channel: jax.scipy.ndimage.map_coordinates(channel, coords, order=1, mode="nearest")
    return jax.vmap(one, in_axes=-1, out_axes=-1)(image)


def _geometric(view: View, op: Callable[[jax.Array], jax.Array]) -> View:
    """Apply a pixel-moving op (H, W, c) -> (H', W', c) to image, provenance and mask alike."""
    return View(op(view.image), op(view.source), op(view.valid[..., None].astype(jnp.float32))[..., 0] > 0.5)


def footprint(source: jax.Array, valid: jax.Array, shape: Sequence[int]) -> jax.Array:
    """(H, W) bool mask of the original's pixels that valid view pixels sample from.

    Marks the four bilinear neighbours (floor/ceil of each coordinate) of every valid source
    position; for a resized crop this is exactly the crop box.
    """
    h, w = int(shape[0]), int(shape[1])
    r = jnp.clip(source[..., 0], 0, h - 1).reshape(-1)
    c = jnp.clip(source[..., 1], 0, w - 1).reshape(-1)
    weight = valid.reshape(-1).astype(jnp.float32)
    mask = jnp.zeros((h, w), jnp.float32)
    for rr in (jnp.floor(r), jnp.ceil(r)):
        for cc in (jnp.floor(c), jnp.ceil(c)):
            mask = mask.at[rr.astype(jnp.int32), cc.astype(jnp.int32)].add(weight)
    return mask > 0


# ----------------------------------------------------------------------------- geometric ops


def _require_image(image) -> jax.Array:
    _checks.check_array("image", image, ndim=3)
    image = jnp.asarray(image)
    return image if jnp.issubdtype(image.dtype, jnp.floating) else image.astype(jnp.float32)


def flip(key: jax.Array, image: jax.Array) -> View:
    """Horizontal flip (dm-pix `flip_left_right`). `key` is unused (uniform signature)."""
    import dm_pix

    del key
    return _geometric(identity_view(_require_image(image)), dm_pix.flip_left_right)


def rot90(key: jax.Array, image: jax.Array) -> View:
    """Rotation by 90 degrees counter-clockwise (dm-pix `rot90`, as `np.rot90`). Square images."""
    import dm_pix

    del key
    image = _require_image(image)
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"rot90 needs a square image, got shape {tuple(image.shape)}")
    return _geometric(identity_view(image), lambda a: dm_pix.rot90(a, k=1))


def _box_candidates(key, height, width, scale, log_ratio):
    """torchvision's candidate box sizes: `_ATTEMPTS` (h, w) pairs for area fraction `scale`."""
    k_area, k_ratio = jax.random.split(key)
    area = height * width * jax.random.uniform(k_area, (_ATTEMPTS,), minval=scale[0], maxval=scale[1])
    aspect = jnp.exp(jax.random.uniform(k_ratio, (_ATTEMPTS,), minval=log_ratio[0], maxval=log_ratio[1]))
    # jnp.round rounds half to even, as Python's round() in torchvision.
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    return h, w


def _place(key, height, width, h, w):
    """Uniform top-left corner for an (h, w) box: randint(0, H - h + 1) as torchvision."""
    k_top, k_left = jax.random.split(key)
    top = jax.random.randint(k_top, (), 0, height - h + 1)
    left = jax.random.randint(k_left, (), 0, width - w + 1)
    return top, left


def _check_range(name, value, low, high):
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in value)
            or not low <= value[0] <= value[1] <= high):
        raise ValueError(f"`{name}` must be (min, max) with {low} <= min <= max <= {high}, got {value!r}")
    return float(value[0]), float(value[1])


def crop_box(key: jax.Array, height: int, width: int, scale=CROP_SCALE, ratio=CROP_RATIO) -> jax.Array:
    """torchvision `RandomResizedCrop.get_params`: int32 (top, left, h, w).

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio), 10 attempts; the first box that
    fits is kept, else the largest centred box within `ratio` (the whole image if it is square).
    """
    scale = _check_range("scale", scale, 0.0, 1.0)
    ratio = _check_range("ratio", ratio, 1e-6, 1e6)
    k_size, k_place = jax.random.split(key)
    h, w = _box_candidates(k_size, height, width, scale, (np.log(ratio[0]), np.log(ratio[1])))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits)
    # Fallback (torchvision): centre crop at the clamped aspect ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    h = jnp.where(jnp.any(fits), h[first], fh)
    w = jnp.where(jnp.any(fits), w[first], fw)
    top, left = _place(k_place, height, width, h, w)
    top = jnp.where(jnp.any(fits), top, (height - fh) // 2)
    left = jnp.where(jnp.any(fits), left, (width - fw) // 2)
    return jnp.stack([top, left, h, w]).astype(jnp.int32)


def crop_source(box: jax.Array, out_height: int, out_width: int) -> jax.Array:
    """(out_H, out_W, 2) source coordinates of resizing `box` (top, left, h, w) to out size.

    Half-pixel centres (torch `interpolate(bilinear, align_corners=False)`, i.e. torchvision's
    `resized_crop`): crop-local coordinate (i + 0.5) * h / out_H - 0.5, clamped to the crop, so
    no pixel outside the box contributes.
    """
    box = jnp.asarray(box, jnp.float32)
    top, left, h, w = box[0], box[1], box[2], box[3]
    rows = jnp.clip((jnp.arange(out_height, dtype=jnp.float32) + 0.5) * h / out_height - 0.5, 0.0, h - 1.0)
    cols = jnp.clip((jnp.arange(out_width, dtype=jnp.float32) + 0.5) * w / out_width - 0.5, 0.0, w - 1.0)
    rr, cc = jnp.meshgrid(top + rows, left + cols, indexing="ij")
    return jnp.stack([rr, cc], axis=-1)


def resized_crop_with(image: jax.Array, box: jax.Array) -> View:
    """Crop `box` (top, left, h, w) and resize it bilinearly back to the image's size."""
    image = _require_image(image)
    source = crop_source(box, image.shape[0], image.shape[1])
    return View(resample(image, source), source, jnp.ones(image.shape[:2], bool))


def random_resized_crop(key: jax.Array, image: jax.Array, scale=CROP_SCALE, ratio=CROP_RATIO) -> View:
    """SimCLR's random resized crop (area 20-50% by default, aspect 3/4-4/3), same output size."""
    image = _require_image(image)
    return resized_crop_with(image, crop_box(key, image.shape[0], image.shape[1], scale, ratio))


def crop_flip(key: jax.Array, image: jax.Array, scale=CROP_SCALE, ratio=CROP_RATIO) -> View:
    """Random resized crop, then horizontal flip."""
    import dm_pix

    return _geometric(random_resized_crop(key, image, scale, ratio), dm_pix.flip_left_right)


def erase_box(key: jax.Array, height: int, width: int, scale=ERASE_SCALE, ratio=ERASE_RATIO) -> jax.Array:
    """torchvision `RandomErasing.get_params`: int32 (top, left, h, w); h = w = 0 (nothing erased)
    when none of the 10 attempts fits (never happens for square images and the defaults)."""
    scale = _check_range("scale", scale, 0.0, 1.0)
    ratio = _check_range("ratio", ratio, 1e-6, 1e6)
    k_size, k_place = jax.random.split(key)
    h, w = _box_candidates(k_size, height, width, scale, (np.log(ratio[0]), np.log(ratio[1])))
    fits = (h < height) & (w < width) & (h > 0) & (w > 0)
    first = jnp.argmax(fits)
    h = jnp.where(jnp.any(fits), h[first], 0)
    w = jnp.where(jnp.any(fits), w[first], 0)
    top, left = _place(k_place, height, width, h, w)
    return jnp.stack([top, left, h, w]).astype(jnp.int32)


def box_mask(box: jax.Array, height: int, width: int) -> jax.Array:
    """(H, W) bool, True inside `box` (top, left, h, w)."""
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    return (rows >= box[0]) & (rows < box[0] + box[2]) & (cols >= box[1]) & (cols < box[1] + box[3])


def erase_with(image: jax.Array, box: jax.Array, value: float = ERASE_VALUE) -> View:
    """Fill `box` (top, left, h, w) with `value`; those pixels are not valid."""
    image = _require_image(image)
    inside = box_mask(box, image.shape[0], image.shape[1])
    view = identity_view(image)
    return View(jnp.where(inside[..., None], jnp.asarray(value, image.dtype), image), view.source, ~inside)


def random_erasing(key: jax.Array, image: jax.Array, scale=ERASE_SCALE, ratio=ERASE_RATIO,
                   value: float = ERASE_VALUE) -> View:
    """Random erasing (cutout): a box of 10-25% of the area (aspect 0.3-3.3) set to 0.5."""
    image = _require_image(image)
    return erase_with(image, erase_box(key, image.shape[0], image.shape[1], scale, ratio), value)


# ----------------------------------------------------------------------------- colour ops


def _require_rgb(image) -> jax.Array:
    image = _require_image(image)
    if image.shape[-1] != 3:
        raise ValueError(f"colour augmentations need 3 channels (H, W, 3), got shape {tuple(image.shape)}")
    return image


def grayscale(key: jax.Array, image: jax.Array) -> View:
    """Luma (Rec. 601, dm-pix `rgb_to_grayscale`) replicated to 3 channels. `key` unused."""
    import dm_pix

    del key
    image = _require_rgb(image)
    gray = dm_pix.rgb_to_grayscale(image, keep_dims=True)
    return identity_view(image)._replace(image=jnp.broadcast_to(gray, image.shape))


class JitterParams(NamedTuple):
    """One colour-jitter draw. order: (4,) int32 permutation of (brightness, contrast,
    saturation, hue); brightness: additive delta; contrast, saturation: factors; hue: shift."""

    order: jax.Array
    brightness: jax.Array
    contrast: jax.Array
    saturation: jax.Array
    hue: jax.Array


def jitter_params(key: jax.Array, strengths=JITTER) -> JitterParams:
    """SimCLR v1 `color_jitter_rand` draws: brightness U(-b, b), contrast U(1-c, 1+c),
    saturation U(1-s, 1+s) (lower ends clamped at 0), hue U(-h, h), a random order."""
    b, c, s, h = (float(v) for v in strengths)
    if min(b, c, s, h) < 0 or h > 0.5:
        raise ValueError(f"`strengths` must be >= 0 with hue <= 0.5, got {strengths!r}")
    k = jax.random.split(key, 5)
    u = lambda kk, lo, hi: jax.random.uniform(kk, (), minval=lo, maxval=hi)
    return JitterParams(jax.random.permutation(k[0], 4).astype(jnp.int32), u(k[1], -b, b),
                        u(k[2], max(0.0, 1 - c), 1 + c), u(k[3], max(0.0, 1 - s), 1 + s), u(k[4], -h, h))


def color_jitter_with(image: jax.Array, params: JitterParams) -> jax.Array:
    """Apply the four dm-pix colour ops in `params.order`, clipping to [0, 1] after each."""
    import dm_pix

    image = _require_rgb(image)
    ops = (lambda a: dm_pix.adjust_brightness(a, params.brightness),
           lambda a: dm_pix.adjust_contrast(a, params.contrast),
           lambda a: dm_pix.adjust_saturation(a, params.saturation),
           lambda a: dm_pix.adjust_hue(a, params.hue))
    step = lambda i, a: jnp.clip(jax.lax.switch(params.order[i], ops, a), 0.0, 1.0)
    return jax.lax.fori_loop(0, 4, step, image)


def color_jitter(key: jax.Array, image: jax.Array, strengths=JITTER) -> View:
    """SimCLR colour jitter (brightness 0.8, contrast 0.8, saturation 0.8, hue 0.2)."""
    image = _require_rgb(image)
    return identity_view(image)._replace(image=color_jitter_with(image, jitter_params(key, strengths)))


# ----------------------------------------------------------------------------- dispatch


def _original(key, image):
    del key
    return identity_view(_require_image(image))


_FUNCTIONS = {"original": _original, "flip": flip, "crop": random_resized_crop, "crop_flip": crop_flip,
              "grayscale": grayscale, "color_jitter": color_jitter, "erase": random_erasing, "rot90": rot90}


def check_augmentations(names: Sequence[str], channels: int) -> tuple[str, ...]:
    """Validate augmentation names for images with `channels` channels; returns them as a tuple."""
    if isinstance(names, str) or not len(names):
        raise ValueError(f"`augmentations` must be a non-empty sequence of names from {AUGMENTATIONS}, "
                         f"got {names!r}")
    unknown = [n for n in names if n not in _FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {list(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"`augmentations` has duplicates: {list(names)}")
    colour = [n for n in names if n in COLOR_AUGMENTATIONS]
    if colour and channels != 3:
        raise ValueError(f"{colour} need 3-channel images, got {channels} channel(s)")
    return tuple(names)


def applicable_augmentations(channels: int) -> tuple[str, ...]:
    """All augmentations that apply to `channels`-channel images (colour ops need 3)."""
    return tuple(n for n in AUGMENTATIONS if channels == 3 or n not in COLOR_AUGMENTATIONS)


def augment(name: str, key: jax.Array, image: jax.Array) -> View:
    """The augmentation called `name` (see `AUGMENTATIONS`) of one image (H, W, C)."""
    check_augmentations([name], np.shape(image)[-1] if np.ndim(image) == 3 else 3)
    return _FUNCTIONS[name](key, image)


def augment_batch(name: str, keys: jax.Array, images: jax.Array) -> View:
    """vmapped `augment`: keys (N,), images (N, H, W, C) -> View with a leading N axis."""
    _checks.check_array("images", images, ndim=4)
    check_augmentations([name], np.shape(images)[-1])
    if np.shape(keys)[:1] != np.shape(images)[:1]:
        raise ValueError(f"`keys` must have shape ({np.shape(images)[0]},), got {np.shape(keys)}")
    return _augment_batch_jit(name, keys, jnp.asarray(images, jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _augment_batch_jit(name, keys, images):
    return jax.vmap(_FUNCTIONS[name])(keys, images)
