"""Labelled images from a local folder `root/split/class_name/*.png|jpg` (as MURA and ImageNette ship).

Nothing is downloaded: a missing folder raises a `FileNotFoundError` that says what to place
where. Classes are the sorted sub-folder names of the split (or the `class_names` you give,
so that every split uses the same label ids).

Also home of `LabelledImages`, the random-access interface every cocoa-jax loader offers
(`cocoa_jax.data.tfds` subclasses it): `len()`, `labels` (N,), `images(indices)` ->
(n, H, W, C) float32, `batches(batch_size)` -> iterator of (images, labels) NHWC batches.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def to_unit_range(image) -> np.ndarray:
    """Default preprocessing: a PIL image (any mode, at full bit depth: `cocoa_jax.data.pixels`) or an
    (H, W[, C]) array (uint16 / 65535, other integers / 255, floats as they are) -> float32 (H, W, C)."""
    from PIL import Image

    from cocoa_jax.data import pixels

    if isinstance(image, Image.Image):
        return pixels.to_float(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"an image must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32)


class LabelledImages:
    """Random-access labelled images, preprocessed to float32 NHWC.

    Subclasses implement `_load(index) -> (H, W, C)` raw image (uint8 array, float array in
    [0, 1] or PIL) and set
    `self.labels` ((N,) int32) and `self.class_names`.

    Args (of subclasses):
      preprocess: one raw image -> float32 (H, W, C); default `to_unit_range`. E.g.
        `cocoa_jax.models.preprocessing.CIFAR.resize_crop` (resize + crop, [0, 1]).
    """

    labels: np.ndarray
    class_names: tuple[str, ...]

    def __init__(self, preprocess: Callable | None = None):
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"`preprocess` must be callable, got {type(preprocess).__name__}")
        self.preprocess = preprocess or to_unit_range

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def _load(self, index: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_indices(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"`indices` must lie in [0, {len(self)}), got range "
                             f"[{indices.min()}, {indices.max()}]")
        return indices

    def images(self, indices: Sequence[int]) -> np.ndarray:
        """Preprocessed images at `indices`: (n, H, W, C) float32."""
        indices = self._check_indices(indices)
        out = [np.asarray(self.preprocess(self._load(int(i))), dtype=np.float32) for i in indices]
        shapes = {o.shape for o in out}
        if len(shapes) > 1:
            raise ValueError(f"images have different shapes {sorted(shapes)}; pass a `preprocess` that "
                             f"resizes them to one size")
        return np.stack(out) if out else np.zeros((0, 0, 0, 0), np.float32)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_remainder: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images (B, H, W, C) float32, labels (B,) int32) over the whole split."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield self.images(idx), self.labels[idx]


class ArrayImages(LabelledImages):
    """In-memory images (N, H, W, C) and labels (N,) behind the `LabelledImages` interface."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None,
                 preprocess: Callable | None = None):
        super().__init__(preprocess)
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4:
            raise ValueError(f"`images` must have shape (N, H, W, C), got {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"`labels` must have shape ({images.shape[0]},), got {labels.shape}")
        self._images = images
        self.labels = labels.astype(np.int32)
        n_classes = int(labels.max()) + 1 if labels.size else 0
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(n_classes)))

    def _load(self, index: int):
        return self._images[index]

    def images(self, indices: Sequence[int]) -> np.ndarray:
        if self.preprocess is to_unit_range and np.issubdtype(self._images.dtype, np.floating):
            return self._images[self._check_indices(indices)].astype(np.float32)
        return super().images(indices)


class ImageFolder(LabelledImages):
    """Images in `root/split/class_name/*.{png,jpg,jpeg,bmp}`.

    Args:
      root: dataset root holding one folder per split.
      split: e.g. "train", "val", "test".
      class_names: label order (default: the split's sorted sub-folder names).
      preprocess: raw image -> float32 (H, W, C) (default [0, 1] scaling; images must then
        share one size).
      mode: "RGB" or "L": each file read to float (H, W, 3 | 1) in [0, 1] at its full bit depth
        (`cocoa_jax.data.pixels.to_float`: every PIL mode, EXIF orientation, alpha on white);
        None: the PIL image as it is; another PIL mode: `image.convert(mode)`.
    """

    def __init__(self, root: str, split: str, *, class_names: Sequence[str] | None = None,
                 preprocess: Callable | None = None, mode: str | None = "RGB"):
        super().__init__(preprocess)
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"`root` must be a path, got {type(root).__name__}")
        split_dir = os.path.join(os.fspath(root), split)
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(
                f"no image folder at {split_dir!r}: place images as {os.path.join(os.fspath(root), split)}"
                f"/<class_name>/<image>.png|jpg (one sub-folder per class); nothing is downloaded")
        found = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
        self.class_names = tuple(class_names) if class_names is not None else tuple(found)
        missing = [c for c in self.class_names if c not in found]
        if missing:
            raise FileNotFoundError(f"class folder(s) {missing} missing under {split_dir!r}")
        paths, labels = [], []
        for label, name in enumerate(self.class_names):
            class_dir = os.path.join(split_dir, name)
            for file_name in sorted(os.listdir(class_dir)):
                if file_name.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(class_dir, file_name))
                    labels.append(label)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir!r}/<class_name>/")
        self.paths = tuple(paths)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.mode = mode

    def _load(self, index: int):
        from PIL import Image

        from cocoa_jax.data import pixels

        with Image.open(self.paths[index]) as image:
            if self.mode in ("RGB", "L"):
                return pixels.to_float(image, 3 if self.mode == "RGB" else 1)
            image = image.convert(self.mode) if self.mode else image.copy()
        return image
