"""tensorflow-datasets builders (`cifar10`, `imagenette`, ...) read from a user's local `data_dir`.

Never downloads: the dataset must already be prepared under `data_dir/<name>/<version>/`.
Reading uses `tfds.data_source` (random access), which works WITHOUT TensorFlow when the
dataset was prepared in the `array_record` file format (measured here: tensorflow-datasets
4.9 + `array_record` + `importlib_resources`, PNG/JPEG images decoded with PIL). Datasets
prepared as `tfrecord` (tfds' default) need TensorFlow to read; without it a clear error
says how to re-prepare them as array_record.

tensorflow_datasets is imported lazily, inside `TfdsImages`, so `import cocoa_jax` never
imports it.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from cocoa_jax.data.image_folder import LabelledImages

INSTALL_HINT = "pip install 'cocoa-jax[data]'  (tensorflow-datasets, array_record, importlib_resources)"


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading tfds datasets needs tensorflow-datasets: {INSTALL_HINT}") from err
    return tfds


class TfdsImages(LabelledImages):
    """One split of a prepared tfds image-classification dataset.

    Args:
      name: tfds name, optionally with version/config ("cifar10", "imagenette/320px-v2").
      split: "train", "test", "validation", or any tfds split string.
      data_dir: the tfds data directory holding the prepared dataset.
      preprocess: raw (H, W, C) uint8 -> float32 (H, W, C); default [0, 1] scaling (use
        `cocoa_jax.models.preprocessing.IMAGENET_RAW.resize_crop` etc. for ImageNette).
      image_key, label_key: feature names (tfds image-classification datasets use these).
    """

    def __init__(self, name: str, split: str, data_dir: str, *, preprocess: Callable | None = None,
                 image_key: str = "image", label_key: str = "label"):
        super().__init__(preprocess)
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a tfds dataset name, got {name!r}")
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"`data_dir` must be a path, got {type(data_dir).__name__}")
        data_dir = os.fspath(data_dir)
        base_name = name.split("/")[0].split(":")[0]
        if not os.path.isdir(os.path.join(data_dir, base_name)):
            raise FileNotFoundError(
                f"tfds dataset {name!r} is not prepared under data_dir={data_dir!r}: place the prepared "
                f"dataset at {os.path.join(data_dir, base_name)}/<version>/ (e.g. prepare it on a machine "
                f"with internet with `tfds build {base_name} --data_dir=DIR --file_format=array_record` "
                f"and copy DIR here); cocoa-jax never downloads")
        tfds = _import_tfds()
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"tfds dataset {name!r} under {data_dir!r} is incomplete (no prepared version "
                f"{builder.version}); prepare it elsewhere and copy it here; cocoa-jax never downloads")
        if split.split("[")[0] not in builder.info.splits:
            raise ValueError(f"`split` {split!r} not in {name!r}'s splits {sorted(builder.info.splits)}")
        file_format = str(getattr(builder.info, "file_format", "") or "")
        try:
            self._source = builder.as_data_source(split=split)
        except Exception as err:  # tfrecord-format data has no random-access source
            raise RuntimeError(
                f"cannot read {name!r} (file format {file_format or 'tfrecord'}) without TensorFlow: "
                f"re-prepare it with `--file_format=array_record`, or install tensorflow") from err
        features = builder.info.features
        self.image_key, self.label_key = image_key, label_key
        label_feature = features[label_key]
        self.class_names = tuple(label_feature.names) if hasattr(label_feature, "names") else tuple(
            map(str, range(label_feature.num_classes)))
        self.name, self.split = name, split
        self.labels = self._read_labels()

    def _read_labels(self) -> np.ndarray:
        # Labels are read once; images are decoded only when asked for.
        n = len(self._source)
        labels = np.empty(n, dtype=np.int32)
        chunk = 1024
        for start in range(0, n, chunk):
            records = self._source.__getitems__(list(range(start, min(start + chunk, n))))
            labels[start:start + len(records)] = [int(r[self.label_key]) for r in records]
        return labels

    def _load(self, index: int):
        return self._source[index][self.image_key]

    def images(self, indices: Sequence[int]) -> np.ndarray:
        indices = self._check_indices(indices)
        records = self._source.__getitems__([int(i) for i in indices])  # one batched read
        out = [np.asarray(self.preprocess(r[self.image_key]), dtype=np.float32) for r in records]
        return np.stack(out) if out else np.zeros((0, 0, 0, 0), np.float32)


def load_tfds(name: str, data_dir: str, splits: Sequence[str] = ("train", "test"), *,
              preprocess: Callable | None = None) -> dict[str, TfdsImages]:
    """Several splits at once: {split: TfdsImages}."""
    return {split: TfdsImages(name, split, data_dir, preprocess=preprocess) for split in splits}
