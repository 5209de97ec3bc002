"""Offline loaders: an image folder of generated PNGs and a tfds dataset built in a temp data_dir."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cocoa_jax.data.image_folder import ArrayImages, ImageFolder


def write_folder(root, split, per_class, size=(10, 12)):
    rng = np.random.default_rng(0)
    expected = {}
    for name in ("cat", "dog"):
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / f"{i:03d}.png")
            expected[(name, i)] = pixels
    return expected


def test_image_folder_reads_pngs_back(tmp_path):
    expected = write_folder(tmp_path, "train", 3)
    source = ImageFolder(tmp_path, "train")
    assert source.class_names == ("cat", "dog") and len(source) == 6
    np.testing.assert_array_equal(source.labels, [0, 0, 0, 1, 1, 1])
    images = source.images([4])
    assert images.shape == (1, 10, 12, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], expected[("dog", 1)] / 255.0, atol=1e-6)
    batches = list(source.batches(4))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), source.labels)
    shuffled = np.concatenate([b[1] for b in source.batches(4, shuffle=True, seed=1)])
    assert sorted(shuffled) == sorted(source.labels)
    gray = ImageFolder(tmp_path, "train", mode="L")
    assert gray.images([0]).shape == (1, 10, 12, 1)


def test_image_folder_missing_data_says_what_to_place_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="<class_name>"):
        ImageFolder(tmp_path, "val")
    write_folder(tmp_path, "train", 1)
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolder(tmp_path, "train", class_names=("cat", "dog", "bird"))


def test_array_images_and_bad_indices():
    source = ArrayImages(np.zeros((5, 4, 4, 1), np.float32), np.arange(5) % 2)
    assert source.n_classes == 2 and source.images([1, 2]).shape == (2, 4, 4, 1)
    with pytest.raises(IndexError, match="indices"):
        source.images([5])
    with pytest.raises(ValueError, match="batch_size"):
        next(source.batches(0))


_BUILDER = []  # tfds registers builder classes by name: define ours once per process


def _build_tiny_tfds(data_dir):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    pytest.importorskip("importlib_resources")
    if not _BUILDER:
        _BUILDER.append(_define_builder(tfds))
    _BUILDER[0](data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def _define_builder(tfds):

    def png(pixels):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        buffer.seek(0)
        return buffer  # pre-encoded: tfds then needs no TensorFlow to write it

    class CocoaTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(16, 16, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9, 0), "test": self._generate_examples(6, 1)}

        def _generate_examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                pixels = np.full((16, 16, 3), 20 * i, np.uint8) + rng.integers(0, 5, (16, 16, 3), dtype=np.uint8)
                yield i, {"image": png(pixels), "label": i % 3}

    return CocoaTinyImages


def test_tfds_builder_read_back_offline_without_tensorflow(tmp_path):
    _build_tiny_tfds(tmp_path)
    # Read back in a fresh interpreter: the builder class is not registered there, so the
    # data comes from data_dir only; TensorFlow must not be imported.
    code = f"""
import sys, numpy as np
from cocoa_jax.data.tfds import TfdsImages
s = TfdsImages("cocoa_tiny_images", "train", {str(tmp_path)!r})
x = s.images(np.arange(len(s)))
assert x.shape == (9, 16, 16, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
means = np.round(x.mean(axis=(1, 2, 3)) * 255 / 20).astype(int)   # image i has value ~20 i
assert sorted(means) == list(range(9)), means
assert all(s.labels[j] == means[j] % 3 for j in range(9)), (s.labels, means)
assert s.class_names == ("a", "b", "c")
assert len(list(s.batches(4))) == 3
assert "tensorflow" not in sys.modules, "read without TensorFlow"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_tfds_missing_dataset_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from cocoa_jax.data.tfds import TfdsImages

    with pytest.raises(FileNotFoundError, match="never downloads"):
        TfdsImages("cifar10", "train", str(tmp_path))
    _build_tiny_tfds(tmp_path)
    with pytest.raises(ValueError, match="split"):
        TfdsImages("cocoa_tiny_images", "validation", str(tmp_path))


def test_import_cocoa_jax_does_not_import_tf_or_tfds():
    code = ("import sys, cocoa_jax, cocoa_jax.metrics, cocoa_jax.probe, cocoa_jax.sweep, cocoa_jax.data.image_folder, "
            "cocoa_jax.data.tfds\n"
            "bad = [m for m in ('tensorflow', 'tensorflow_datasets', 'torch') if m in sys.modules]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
