"""CLIP (Radford et al., 2021) training of the digits image-text dual encoder, in JAX + optax.

Pairs are (training digit, caption of its label under a random template of
`digits_clip.TEMPLATES`); the loss is CLIP's symmetric InfoNCE with a learnable temperature.
Digits are lightly augmented (`simclr.augment`: small affine warps, contrast, noise; no
cutout) so the image tower does not memorise the 1297 training images. Everything is a pure
function of explicit PRNG keys: the same seed gives the same parameters on the same machine.

Shapes: images NHWC float32 in [0, 1]; `clip_loss` takes (N, D) image and text embeddings.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cocoa_jax.models import digits_clip
from cocoa_jax.training.simclr import AugmentConfig, TrainState, augment_batch, make_optimizer

# Milder than SimCLR's views: the caption must stay true of the image.
CLIP_AUGMENT = AugmentConfig(max_rotation=math.radians(10.0), scale_range=(0.85, 1.1), max_shear=0.15,
                             max_translation=3.0, contrast_range=(0.7, 1.1), max_noise_std=0.05,
                             cutout_prob=0.0)


def clip_loss(image_embeddings: jax.Array, text_embeddings: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """CLIP's symmetric InfoNCE: mean of image->text and text->image cross-entropies.

    image_embeddings, text_embeddings: (N, D); row i of each is a positive pair, every other
    row a negative. logit_scale: () log inverse temperature, clipped at log(100) as in CLIP.
    Returns a scalar.
    """
    if image_embeddings.ndim != 2 or image_embeddings.shape != text_embeddings.shape:
        raise ValueError(f"image_embeddings and text_embeddings must both have shape (N, D), got "
                         f"{image_embeddings.shape} and {text_embeddings.shape}")
    img = image_embeddings / jnp.maximum(jnp.linalg.norm(image_embeddings, axis=1, keepdims=True), 1e-12)
    txt = text_embeddings / jnp.maximum(jnp.linalg.norm(text_embeddings, axis=1, keepdims=True), 1e-12)
    logits = jnp.exp(jnp.minimum(logit_scale, digits_clip.MAX_LOGIT_SCALE)) * img @ txt.T
    labels = jnp.arange(logits.shape[0])
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return 0.5 * (jnp.mean(image_to_text) + jnp.mean(text_to_image))


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Hyper-parameters of `train_clip` (defaults: the shipped dual encoder)."""

    steps: int = 400
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 1e-4
    seed: int = 0
    augment: AugmentConfig = CLIP_AUGMENT

    def validate(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or int(value) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if int(self.batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2 (one negative per pair), got {self.batch_size}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if int(self.warmup_steps) < 0 or not self.weight_decay >= 0:
            raise ValueError("warmup_steps and weight_decay must be >= 0")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def sample_batch(key: jax.Array, images: jax.Array, labels: jax.Array, indices: jax.Array,
                 captions: jax.Array, cfg: ClipConfig) -> tuple[jax.Array, jax.Array]:
    """Augmented images (B, H, W, 1) and caption tokens (B, L) for the training rows `indices` (B,).

    captions: (10, T, L) token table (`digits_clip.caption_table()`); each image gets its
    label's caption under a template drawn uniformly from the T.
    """
    aug_key, template_key = jax.random.split(key)
    batch = augment_batch(aug_key, images[indices], cfg.augment)
    template = jax.random.randint(template_key, indices.shape, 0, captions.shape[1])
    return batch, captions[labels[indices], template]


def make_train_step(module: digits_clip.DigitsCLIP, optimizer: optax.GradientTransformation,
                    cfg: ClipConfig) -> Callable:
    """jit-compiled `step(state, images, labels, indices (B,), captions, key) -> (state, loss)`."""

    def loss_fn(params, batch_stats, x, tokens):
        (img, txt, scale), updates = module.apply({"params": params, "batch_stats": batch_stats},
                                                  x, tokens, train=True, mutable=["batch_stats"])
        return clip_loss(img, txt, scale), updates["batch_stats"]

    @jax.jit
    def step(state: TrainState, images, labels, indices, captions, key):
        x, tokens = sample_batch(key, images, labels, indices, captions, cfg)
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, tokens)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state), loss

    return step


@functools.lru_cache(maxsize=8)
def _train_step_for(module: digits_clip.DigitsCLIP, cfg: ClipConfig) -> Callable:
    """One compiled step per (module, settings): the step does not read the seed, so runs that
    differ only in it (reproducibility checks, seed studies) share one compilation."""
    return make_train_step(module, make_optimizer(cfg), cfg)


def train_clip(images, labels, cfg: ClipConfig = ClipConfig(), *, module: digits_clip.DigitsCLIP | None = None,
               log: Callable[[str], None] | None = None):
    """Train the dual encoder on (images (N, H, W, 1), labels (N,) in 0..9).

    Returns (variables {"params", "batch_stats"}, losses (steps,) float32, wall seconds).
    Same seed, same result: init, batch order, templates and augmentations all derive from
    `jax.random.key(cfg.seed)`.
    """
    cfg.validate()
    module = module or digits_clip.DigitsCLIP()
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    if images.ndim != 4 or images.shape[-1] != 1:
        raise ValueError(f"images must have shape (N, H, W, 1), got {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    n = images.shape[0]
    if cfg.batch_size > n:
        raise ValueError(f"batch_size ({cfg.batch_size}) must not exceed the number of images ({n})")
    init_key, shuffle_key, batch_key = jax.random.split(jax.random.key(cfg.seed), 3)
    variables = digits_clip.init_variables(module, init_key)
    optimizer = make_optimizer(cfg)
    step = _train_step_for(module, dataclasses.replace(cfg, seed=0))
    state = TrainState(variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
    captions = jnp.asarray(digits_clip.caption_table())

    per_epoch = n // cfg.batch_size
    losses = np.zeros(cfg.steps, np.float32)
    start = time.perf_counter()
    order = None
    for i in range(cfg.steps):
        epoch, j = divmod(i, per_epoch)
        if j == 0:
            order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
        indices = order[j * cfg.batch_size:(j + 1) * cfg.batch_size]
        state, loss = step(state, images, labels, indices, captions, jax.random.fold_in(batch_key, i))
        losses[i] = float(loss)
        if log is not None and (i % 50 == 0 or i == cfg.steps - 1):
            log(f"step {i}: loss {losses[i]:.4f}")
    seconds = time.perf_counter() - start
    return {"params": state.params, "batch_stats": state.batch_stats}, losses, seconds


def class_text_embeddings(model: digits_clip.DigitsClipModel,
                          templates=(digits_clip.QUERY_TEMPLATE,)) -> np.ndarray:
    """(10, D) unit class embeddings: the mean of the unit embeddings of each digit's captions
    under `templates` (one template: just that caption), re-normalised."""
    if isinstance(templates, str) or not len(templates):
        raise ValueError(f"`templates` must be a non-empty sequence of strings, got {templates!r}")
    texts = [digits_clip.caption(t.replace("{}", "{word}"), d) for d in range(10) for t in templates]
    emb = np.asarray(model.encode_text(texts), np.float64).reshape(10, len(templates), -1)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    emb = emb.mean(axis=1)
    return emb / np.linalg.norm(emb, axis=-1, keepdims=True)


def zero_shot_accuracy(model: digits_clip.DigitsClipModel, images, labels,
                       templates=(digits_clip.QUERY_TEMPLATE,), batch_size: int = 250) -> float:
    """Fraction of images whose most cosine-similar class caption is their label."""
    from cocoa_jax.training.simclr import encode_in_batches

    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images (N, H, W, 1) and labels (N,) must match, got {images.shape} and {labels.shape}")
    reps = encode_in_batches(model.encode_fn, model.params, images, batch_size=batch_size)
    predictions = np.argmax(np.asarray(reps, np.float64) @ class_text_embeddings(model, templates).T, axis=1)
    return float(np.mean(predictions == labels))
