"""SimCLR (Chen et al., 2020) self-supervised training and a linear probe, in JAX + optax.

Used to train the embedded digits encoder (`cocoa-jax train-digits`). Everything is a pure
function of explicit PRNG keys: the same seed gives the same encoder on the same machine.

Shapes: images are NHWC float32 in [0, 1]; `nt_xent` takes two (N, P) projection batches.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.ndimage import map_coordinates


# ---------------------------------------------------------------------------------------------
# Loss

def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float = 0.2) -> jax.Array:
    """Normalised-temperature cross-entropy (SimCLR's NT-Xent), averaged over all 2N anchors.

    z1, z2: (N, P) projections of two views; row i of z1 and row i of z2 are a positive pair,
    every other of the 2N - 2 rows is a negative. Returns a scalar.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both have shape (N, P), got {z1.shape} and {z2.shape}")
    if z1.shape[0] < 2:
        raise ValueError(f"z1 needs at least 2 rows (one negative), got {z1.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z1.shape[0]
    z = jnp.concatenate([z1, z2], axis=0)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    logits = z @ z.T / temperature
    # An anchor is never its own negative: drop the diagonal from the softmax.
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    log_prob = jax.nn.log_softmax(logits, axis=1)
    return -jnp.mean(log_prob[jnp.arange(2 * n), positives])


# ---------------------------------------------------------------------------------------------
# Augmentations (one image at a time; vmap over the batch)

@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentations for 32x32 digits (all in pixels / radians / [0, 1])."""

    max_rotation: float = math.radians(15.0)
    scale_range: tuple = (0.75, 1.2)     # >1 zooms in (random-resized-crop-like)
    max_shear: float = 0.25
    max_translation: float = 4.0
    contrast_range: tuple = (0.6, 1.2)
    max_noise_std: float = 0.1
    cutout_prob: float = 0.5
    cutout_size_range: tuple = (6.0, 14.0)


def augment(key: jax.Array, x: jax.Array, cfg: AugmentConfig = AugmentConfig()) -> jax.Array:
    """One random view of ONE image x (H, W, C) in [0, 1] -> (H, W, C) in [0, 1].

    Random affine warp (rotation, scale, shear, translation; bilinear, zero fill), contrast
    scaling, additive Gaussian noise, random cutout, then clipping to [0, 1]. No flips:
    mirrored digits are other shapes (or other digits).
    """
    h, w, c = x.shape
    k = jax.random.split(key, 10)
    theta = jax.random.uniform(k[0], (), minval=-cfg.max_rotation, maxval=cfg.max_rotation)
    scale = jax.random.uniform(k[1], (), minval=cfg.scale_range[0], maxval=cfg.scale_range[1])
    shear = jax.random.uniform(k[2], (), minval=-cfg.max_shear, maxval=cfg.max_shear)
    shift = jax.random.uniform(k[3], (2,), minval=-cfg.max_translation, maxval=cfg.max_translation)
    # Output pixel p samples the input at M (p - centre) + centre + shift (inverse warp).
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    m = jnp.array([[cos, -sin], [sin, cos]]) @ jnp.array([[1.0, shear], [0.0, 1.0]]) / scale
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij")
    grid = jnp.stack([rows.ravel(), cols.ravel()]) - centre[:, None]
    src = m @ grid + (centre + shift)[:, None]
    warp = lambda channel: map_coordinates(channel, [src[0], src[1]], order=1, mode="constant", cval=0.0)
    y = jax.vmap(warp, in_axes=2, out_axes=1)(x).reshape(h, w, c)

    y = y * jax.random.uniform(k[4], (), minval=cfg.contrast_range[0], maxval=cfg.contrast_range[1])
    noise_std = jax.random.uniform(k[5], (), maxval=cfg.max_noise_std)
    y = y + noise_std * jax.random.normal(k[6], y.shape, y.dtype)

    size = jax.random.uniform(k[7], (2,), minval=cfg.cutout_size_range[0], maxval=cfg.cutout_size_range[1])
    corner = jax.random.uniform(k[8], (2,)) * (jnp.array([h, w], x.dtype) - size)
    inside = ((rows >= corner[0]) & (rows < corner[0] + size[0])
              & (cols >= corner[1]) & (cols < corner[1] + size[1]))
    apply_cutout = jax.random.bernoulli(k[9], cfg.cutout_prob)
    y = jnp.where((inside & apply_cutout)[..., None], 0.0, y)
    return jnp.clip(y, 0.0, 1.0)


def augment_batch(key: jax.Array, x: jax.Array, cfg: AugmentConfig = AugmentConfig()) -> jax.Array:
    """Independent random views of a batch (N, H, W, C) -> (N, H, W, C)."""
    return jax.vmap(lambda k, xi: augment(k, xi, cfg))(jax.random.split(key, x.shape[0]), x)


# ---------------------------------------------------------------------------------------------
# Training

@dataclasses.dataclass(frozen=True)
class SimCLRConfig:
    """Hyper-parameters of `train_simclr` (defaults: the shipped digits encoder)."""

    steps: int = 250
    batch_size: int = 64           # positive pairs per step (2 * batch_size images)
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 1e-4
    temperature: float = 0.2
    seed: int = 0
    augment: AugmentConfig = AugmentConfig()

    def validate(self) -> None:
        for name in ("steps", "batch_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("learning_rate", "temperature"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if int(self.warmup_steps) < 0 or float(self.weight_decay) < 0:
            raise ValueError("warmup_steps and weight_decay must be >= 0")


class TrainState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any


def make_optimizer(cfg: SimCLRConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay (plenty for a ~250-step run)."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(cfg.warmup_steps, max(cfg.steps - 1, 0)), max(cfg.steps, 1),
        end_value=cfg.learning_rate * 0.01)
    return optax.adamw(schedule, weight_decay=cfg.weight_decay)


def make_train_step(model, optimizer: optax.GradientTransformation, cfg: SimCLRConfig) -> Callable:
    """jit-compiled `step(state, images (N, H, W, C), key) -> (state, loss)`.

    `model` is a `SimCLRNet` (returns (representation, projection)); both views of the N
    images go through ONE forward pass, so BatchNorm sees 2N images, as in SimCLR.
    """

    def loss_fn(params, batch_stats, images, key):
        k1, k2 = jax.random.split(key)
        views = jnp.concatenate([augment_batch(k1, images, cfg.augment),
                                 augment_batch(k2, images, cfg.augment)], axis=0)
        (_, z), updates = model.apply({"params": params, "batch_stats": batch_stats}, views,
                                      train=True, mutable=["batch_stats"])
        n = images.shape[0]
        return nt_xent(z[:n], z[n:], cfg.temperature), updates["batch_stats"]

    @jax.jit
    def step(state: TrainState, images: jax.Array, key: jax.Array):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, images, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state), loss

    return step


@functools.lru_cache(maxsize=8)
def _optimizer_and_step(model, cfg: SimCLRConfig):
    """Cached per (model, config) so a second run with the same settings does not recompile."""
    optimizer = make_optimizer(cfg)
    return optimizer, make_train_step(model, optimizer, cfg)


def train_simclr(model, images: np.ndarray, cfg: SimCLRConfig, *, variables=None, progress: bool = False,
                 log: Callable[[str], None] | None = None):
    """Train `model` (a `SimCLRNet`) on unlabeled images (N, H, W, C) with NT-Xent.

    Batches are drawn epoch by epoch from a seeded permutation (the last partial batch of an
    epoch is dropped, so every step has the same shape and compiles once). `variables`
    ({"params", "batch_stats"} of `model`) starts from given weights instead of a seeded
    init (e.g. to continue training).

    Returns (variables of the ENCODER {"params", "batch_stats"}, losses (steps,) np.float32,
    seconds spent training).
    """
    cfg.validate()
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    n = images.shape[0]
    if cfg.batch_size > n:
        raise ValueError(f"batch_size ({cfg.batch_size}) must not exceed the number of images ({n})")
    root = jax.random.key(cfg.seed)
    init_key, shuffle_key, aug_key = jax.random.split(root, 3)
    if variables is None:
        variables = model.init(init_key, images[:2], train=False)
    optimizer, step = _optimizer_and_step(model, dataclasses.replace(cfg, seed=0))  # the step never reads the seed
    # A network without BatchNorm (the digits ViT) has no batch_stats: trained with an empty collection.
    state = TrainState(variables["params"], variables.get("batch_stats", {}),
                       optimizer.init(variables["params"]))

    per_epoch = n // cfg.batch_size
    losses = np.zeros(cfg.steps, np.float32)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="SimCLR", unit="step")
    start = time.perf_counter()
    order = None
    for i in range(cfg.steps):
        epoch, j = divmod(i, per_epoch)
        if j == 0:
            order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
        batch = images[order[j * cfg.batch_size:(j + 1) * cfg.batch_size]]
        state, loss = step(state, batch, jax.random.fold_in(aug_key, i))
        losses[i] = float(loss)  # syncs each step; cheap next to the step itself
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[i]:.3f}")
        elif log is not None and (i % 50 == 0 or i == cfg.steps - 1):
            log(f"step {i}: loss {losses[i]:.4f}")
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    enc = {"params": state.params["encoder"], "batch_stats": state.batch_stats.get("encoder", {})}
    return enc, losses, seconds


# ---------------------------------------------------------------------------------------------
# Evaluation

def encode_in_batches(encode_fn: Callable, variables, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Apply a pure `encode_fn(variables, x (B, ...)) -> (B, D)` to (N, ...) in chunks -> (N, D)."""
    fn = jax.jit(encode_fn)
    x = np.asarray(x, np.float32)
    # Zero-pad to whole batches so every call has one shape (one compilation).
    padded = np.zeros((-(-len(x) // batch_size) * batch_size, *x.shape[1:]), np.float32)
    padded[:len(x)] = x
    out = [np.asarray(fn(variables, jnp.asarray(padded[i:i + batch_size])))
           for i in range(0, len(padded), batch_size)]
    return np.concatenate(out, axis=0)[:len(x)]


def linear_probe(train_reps: np.ndarray, train_labels: np.ndarray, test_reps: np.ndarray,
                 test_labels: np.ndarray, *, n_classes: int = 10, steps: int = 500,
                 learning_rate: float = 0.05, l2: float = 1e-4, seed: int = 0) -> float:
    """Test accuracy of `cocoa_jax.probe.fit_probe` (standardised multinomial logistic
    regression, full-batch Adam) on frozen representations: train (N, D), test (M, D)."""
    from cocoa_jax import probe  # the one logistic-regression implementation

    train_reps = np.asarray(train_reps, np.float32)
    test_reps = np.asarray(test_reps, np.float32)
    if train_reps.ndim != 2 or test_reps.ndim != 2 or train_reps.shape[1] != test_reps.shape[1]:
        raise ValueError(f"train_reps and test_reps must be (N, D) with the same D, got "
                         f"{train_reps.shape} and {test_reps.shape}")
    fitted = probe.fit_probe(train_reps, np.asarray(train_labels), n_classes=n_classes,
                             key=jax.random.key(seed), n_epochs=steps, learning_rate=learning_rate,
                             weight_decay=l2)
    return probe.accuracy(fitted, test_reps, np.asarray(test_labels))
