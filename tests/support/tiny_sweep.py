"""The tiny sweep of the sweep tests: a random-weight conv encoder, class-dependent blobs, and a
small config (one instance of the encoder per process: the sweep caches compiled functions per
encode_fn)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.data.image_folder import ArrayImages
from cocoa_jax.sweep import SweepConfig, run_sweep

__all__ = ["IMAGE_SHAPE", "N_CLASSES", "TinyConvEncoder", "TinyEncoder", "tiny_datasets", "tiny_config",
           "tiny_encoder", "run_tiny", "run_sweep"]

IMAGE_SHAPE = (16, 16, 1)
N_CLASSES = 3


class TinyConvEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2))(x))
        h = h.reshape(h.shape[0], -1)
        return nn.relu(nn.Dense(8)(h))


class TinyEncoder:
    """Random-weight encoder with the attributes the sweep needs."""

    def __init__(self):
        module = TinyConvEncoder()
        self.params = module.init(jax.random.key(1), jnp.zeros((1,) + IMAGE_SHAPE))
        self.encode_fn = module.apply
        self.input_shape = IMAGE_SHAPE
        self.preprocess = None


def tiny_datasets():
    """Class-dependent blobs so classes are separable for the probe."""
    rng = np.random.default_rng(0)

    def make(n):
        labels = np.arange(n) % N_CLASSES
        yy, xx = np.mgrid[0:16, 0:16]
        images = np.zeros((n,) + IMAGE_SHAPE, np.float32)
        for i, c in enumerate(labels):
            cy, cx = 4 + 4 * c, 4 + 3 * c
            images[i, ..., 0] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        images += 0.1 * rng.random(images.shape).astype(np.float32)
        return ArrayImages(images, labels)

    return {"train": make(60), "test": make(30)}


def tiny_config(**changes) -> SweepConfig:
    base = dict(encoder="custom:tiny", dataset="custom:blobs", classes=(0, 1), explicands_per_class=3,
                corpus_size=5, foil_size=12, seeds=(0, 1),
                methods={"integrated_gradients": {"n_steps": 4}, "rise": {"n_masks": 24}},
                blur_kernel_size=5, blur_sigma=1.0, eval_steps=8, explicand_batch=2, eval_batch=64)
    base.update(changes)
    return SweepConfig(**base)


_ENCODER = None


def tiny_encoder() -> TinyEncoder:
    # One instance per process: the sweep caches compiled functions per encode_fn.
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = TinyEncoder()
    return _ENCODER


def run_tiny(run_dir, **kwargs):
    kwargs.setdefault("compile_cache", None)  # the cache is process-global: tests leave it off
    return run_sweep(tiny_config(), str(run_dir), encoder=tiny_encoder(), datasets=tiny_datasets(),
                     progress=False, **kwargs)
