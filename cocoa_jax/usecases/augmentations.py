"""What an encoder keeps invariant under its training augmentations (paper Section 4.2).

The paper explains an augmented view of an image (the explicand) with COCOA, taking the
un-augmented original as a corpus of one and random training images as the foil: the
attribution shows which pixels of the view make its representation similar to the
original's (and not to other images'). The pieces:

1. Augmentations with provenance (`View`: image, source, valid) live in
   `cocoa_jax.usecases.augment_ops` and are re-exported here.
2. `explain_pairs` / `explain_augmentations`: COCOA (cosine, corpus of one) and the label-free
   target of the explicand, stacked so every encoder pass serves both, explained with IG,
   GradientSHAP and RISE (blurred explicand as baseline, as in the paper), through the one
   pipeline (`cocoa_jax.pipeline.attribute`: fixed-size chunks of explicands, one compilation,
   optionally sharded over a mesh).
3. `positive_share`: the share of positive attribution mass on pixels that carry the
   original's content; `content_share_experiment` measures it for random erasing (explicand:
   the erased view, content: pixels outside the box) and for random resized crop. A crop view
   consists only of original content (every share would be 1), so for crop the question is
   asked the other way round: explicand = the original, corpus = its crop view, content = the
   crop's footprint in the original (pixels the view was sampled from).

Array conventions: images NHWC float32 in [0, 1], as every loaded model's `encode_fn` takes them
(it applies the model's normalisation inside). Sample i of a batch uses `jax.random.split(key, n)[i]`.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks
from cocoa_jax.usecases.augment_ops import (AUGMENTATION_TITLES, AUGMENTATIONS,
                                            COLOR_AUGMENTATIONS, CROP_RATIO, CROP_SCALE, ERASE_RATIO,
                                            ERASE_SCALE, ERASE_VALUE, JITTER, JitterParams, View,
                                            applicable_augmentations, augment, augment_batch, box_mask,
                                            check_augmentations, color_jitter, color_jitter_with, crop_box,
                                            crop_flip, crop_source, erase_box, erase_with, flip, footprint,
                                            grayscale, identity_grid, identity_view, jitter_params,
                                            random_erasing, random_resized_crop, resample, resized_crop_with,
                                            rot90)

TARGET_NAMES = ("cocoa", "label_free")  # the stacked pair explained for every explicand
METHODS = ("integrated_gradients", "gradient_shap", "rise")  # names of `cocoa_jax.methods`

__all__ = [
    # the experiment (this module)
    "METHODS", "TARGET_NAMES", "AugmentationResult", "content_share_experiment", "encode_in_chunks",
    "explain_augmentations", "explain_pairs", "make_views", "method_options", "pair_target",
    "pixel_attribution", "positive_share", "view_content_shares",
    # augmentations with provenance (`augment_ops`)
    "AUGMENTATIONS", "AUGMENTATION_TITLES", "COLOR_AUGMENTATIONS", "CROP_RATIO", "CROP_SCALE", "ERASE_RATIO",
    "ERASE_SCALE", "ERASE_VALUE", "JITTER", "JitterParams", "View", "applicable_augmentations", "augment",
    "augment_batch", "box_mask", "check_augmentations", "color_jitter", "color_jitter_with", "crop_box",
    "crop_flip", "crop_source", "erase_box", "erase_with", "flip", "footprint", "grayscale", "identity_grid",
    "identity_view", "jitter_params", "random_erasing", "random_resized_crop", "resample", "resized_crop_with",
    "rot90",
]


# ----------------------------------------------------------------------------- scoring


def pixel_attribution(attribution: jax.Array, method: str) -> jax.Array:
    """Per-pixel maps of `method`'s output, from the method table: channels summed for
    per-channel methods ((..., H, W, C) -> (..., H, W)); centred methods' maps minus their
    spatial mean (RISE adds the mean score to every pixel, which is no attribution)."""
    from cocoa_jax import methods

    a = jnp.asarray(attribution)
    if methods.get(method).per_channel:
        a = a.sum(axis=-1)
    if methods.get(method).centred:
        a = a - a.mean(axis=(-2, -1), keepdims=True)
    return a


def positive_share(attribution: jax.Array, mask: jax.Array) -> jax.Array:
    """Share of positive attribution mass on `mask`: sum(max(a, 0) * mask) / sum(max(a, 0)).

    attribution (..., H, W) per-pixel maps (sum channels first: `pixel_attribution`); mask
    (H, W) or (..., H, W) bool. Returns (...) in [0, 1]; NaN where a map has no positive mass.
    """
    a = jnp.asarray(attribution)
    m = jnp.asarray(mask)
    if a.ndim < 2 or m.ndim < 2 or a.shape[-2:] != m.shape[-2:]:
        raise ValueError(f"`attribution` (..., H, W) and `mask` (..., H, W) must share (H, W), got "
                         f"{a.shape} and {m.shape}")
    positive = jnp.maximum(a, 0.0)
    total = positive.sum(axis=(-2, -1))
    inside = (positive * m.astype(positive.dtype)).sum(axis=(-2, -1))
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), jnp.nan)


# ----------------------------------------------------------------------------- explaining


def pair_target(explicand_reps, corpus_reps, foil_reps, similarity: str = "cosine"):
    """Per-explicand stacked target [COCOA (corpus of one), label-free]: direction (N, 2, D).

    explicand_reps, corpus_reps: (N, D), row i of corpus_reps is explicand i's corpus of one;
    foil_reps: (F, D) shared by all.
    """
    from cocoa_jax import targets

    explicand_reps = np.asarray(explicand_reps, np.float32)
    corpus_reps = np.asarray(corpus_reps, np.float32)
    if explicand_reps.ndim != 2 or explicand_reps.shape != corpus_reps.shape:
        raise ValueError(f"`explicand_reps` and `corpus_reps` must both be (N, D), got "
                         f"{explicand_reps.shape} and {corpus_reps.shape}")
    pairs = [targets.build_stacked(TARGET_NAMES, explicand_reps=e, corpus_reps=c[None], foil_reps=foil_reps,
                                   similarity=similarity)
             for e, c in zip(explicand_reps, corpus_reps)]
    return targets.Target(jnp.stack([p.direction for p in pairs]), pairs[0].normalize)


def method_options(names, options=None, **shared) -> dict[str, dict]:
    """{method: options} for `names`: `options` per method, plus `shared` keywords (n_steps=...,
    n_masks=...) applied to every method of `names` that has an option of that name (None: the
    method's signature default). Names and types checked by the method table."""
    from cocoa_jax import methods

    options = {name: dict((options or {}).get(name, {})) for name in names}
    for key, value in shared.items():
        if value is None:
            continue
        owners = [name for name in names if key in methods.defaults(name)]
        if not owners:
            raise ValueError(f"`{key}` is an option of none of the methods {list(names)}")
        for name in owners:
            options[name].setdefault(key, tuple(value) if isinstance(value, list) else value)
    return {name: methods.check_options(name, opts) for name, opts in options.items()}


def encode_in_chunks(encode_fn, params, images, chunk_size: int = 256) -> np.ndarray:
    """(N, H, W, C) -> (N, D) float32 (`cocoa_jax.pipeline.encode_in_chunks`)."""
    from cocoa_jax import pipeline

    return pipeline.encode_in_chunks(encode_fn, params, images, chunk_size=chunk_size)


def explain_pairs(encode_fn, params, explicands, corpus_images, foil_reps, key, *, methods=METHODS,
                  similarity: str = "cosine", chunk_size: int | None = None, options=None, batch_size=None,
                  mesh=None, **shared) -> dict:
    """Explain each explicand with [COCOA (its corpus image as a corpus of one), label-free].

    Args:
      encode_fn: pure `encode_fn(params, x (n, H, W, C)) -> (n, D)` (pass the same function
        object to reuse compilations).
      explicands, corpus_images: (N, H, W, C) pixels in [0, 1] (a loaded model's `encode_fn`
        normalises inside).
      foil_reps: (F, D) representations of random images.
      key: PRNG key; method m, explicand i uses split(fold_in(key, methods.stream_id(m)), N)[i]
        (independent of chunking and of which other methods run).
      methods: names of `cocoa_jax.methods` (default IG, GradientSHAP, RISE); options: {method:
        options}; `shared` keywords (n_steps=..., n_masks=..., grid_size=...) apply to every
        method that has that option; unset options take the signature defaults. All use the
        explicand blurred with the paper's baseline (`explicand_program.PAPER_BASELINE`, GaussianBlur(21, 5)).
      chunk_size: explicands per program call (default: the pipeline's, one per call on CPU,
        where vmapping explicands measured 2.7x slower for RISE on the digits views);
        batch_size: perturbed inputs per encoder call; mesh: shard the explicands over it
        (e.g. `meshes.local_explicand_mesh(N)`).
    Returns: dict with one (N, 2, H, W[, C]) array per method and "scores" (N, 2): target values
      at the explicands (axis 1 is `TARGET_NAMES`).
    """
    from cocoa_jax import explicand_program
    from cocoa_jax import methods as methods_mod
    from cocoa_jax import pipeline

    _checks.check_array("explicands", explicands, ndim=4)
    _checks.check_same_shape("corpus_images", corpus_images, "explicands", explicands)
    _checks.check_array("foil_reps", foil_reps, ndim=2)
    if isinstance(methods, str) or not methods or any(m not in methods_mod.ATTRIBUTION_METHODS for m in methods):
        raise ValueError(f"`methods` must be a non-empty sequence from {list(methods_mod.ATTRIBUTION_METHODS)}, "
                         f"got {methods!r}")
    if chunk_size is not None:
        chunk_size = _checks.check_positive_int("chunk_size", chunk_size)
    options = method_options(tuple(methods), options, **shared)
    xs = np.asarray(explicands, np.float32)
    n = len(xs)
    expl_reps = encode_in_chunks(encode_fn, params, xs)
    corpus_reps = encode_in_chunks(encode_fn, params, corpus_images)
    target = pair_target(expl_reps, corpus_reps, foil_reps, similarity)
    scores = np.asarray(jax.vmap(lambda r, t: t(r))(jnp.asarray(expl_reps), target))
    blurred = np.asarray(explicand_program.apply_baseline(explicand_program.PAPER_BASELINE, jnp.asarray(xs)))
    out = {"scores": scores}
    for method in dict.fromkeys(methods):
        out[method] = pipeline.attribute(encode_fn, params, xs, blurred, target, method,
                                         explicand_program.method_keys(key, method, n), options=options[method],
                                         batch_size=batch_size, mesh=mesh,
                                         chunk_size=None if chunk_size is None else min(chunk_size, n))
    return out


class AugmentationResult(NamedTuple):
    """`explain_augmentations` output; A = len(augmentations), K = 2 (`TARGET_NAMES`).

    augmentations: the view names; views: View with arrays (N, A, H, W, C) / (N, A, H, W, 2) /
    (N, A, H, W); attributions: method -> (N, A, K, H, W, C) (IG, GradientSHAP) or
    (N, A, K, H, W) (RISE); scores: (N, A, K) target values at each view.
    """

    augmentations: tuple
    views: View
    attributions: dict
    scores: np.ndarray


def make_views(originals, key, augmentations: Sequence[str]) -> View:
    """Views (N, A, ...) of every original under every augmentation.

    Augmentation a of original i uses split(fold_in(key, a), N)[i].
    """
    _checks.check_array("originals", originals, ndim=4)
    names = check_augmentations(augmentations, np.shape(originals)[-1])
    n = np.shape(originals)[0]
    per = [augment_batch(name, jax.random.split(jax.random.fold_in(key, AUGMENTATIONS.index(name)), n),
                         originals) for name in names]
    return View(*(np.stack([np.asarray(getattr(v, f)) for v in per], axis=1) for f in View._fields))


def explain_augmentations(encode_fn, params, originals, foil_reps, key, *, augmentations=None,
                          methods=METHODS, **options) -> AugmentationResult:
    """The paper's Section 4.2 setup: explain every augmented view of every original.

    Explicand: the view; corpus: the un-augmented original (a corpus of one); foil: `foil_reps`
    (F, D) of random training images; targets: COCOA and the view's label-free target.
    originals: (N, H, W, C) in the encoder's input space; augmentations: default all that
    apply to C channels (`applicable_augmentations`). `options` go to `explain_pairs`.
    """
    _checks.check_array("originals", originals, ndim=4)
    names = tuple(augmentations) if augmentations is not None else applicable_augmentations(np.shape(originals)[-1])
    k_views, k_explain = jax.random.split(key)
    views = make_views(originals, k_views, names)
    n, a = views.image.shape[:2]
    flat = lambda arr: arr.reshape(n * a, *arr.shape[2:])
    corpus = np.repeat(np.asarray(originals, np.float32), a, axis=0)
    out = explain_pairs(encode_fn, params, flat(views.image), corpus, foil_reps, k_explain, methods=methods,
                        **options)
    unflat = lambda arr: arr.reshape(n, a, *arr.shape[1:])
    attributions = {m: unflat(out[m]) for m in out if m != "scores"}
    return AugmentationResult(names, views, attributions, unflat(out["scores"]))


def view_content_shares(result: AugmentationResult, methods: Sequence[str]) -> np.ndarray:
    """(M, N, A, K) share of each method's positive attribution on the pixels of each view that
    carry original content (`View.valid`), M in `methods` order (`positive_share`)."""
    valid = jnp.asarray(result.views.valid)[:, :, None]
    return np.stack([np.asarray(positive_share(pixel_attribution(result.attributions[m], m), valid))
                     for m in methods])


def content_share_experiment(encode_fn, params, originals, foil_reps, key, *, methods=METHODS,
                             **options) -> dict:
    """Share of positive attribution on the original's content, crop and erase, COCOA vs label-free.

    erase: explicand = erased view, corpus = original; content = pixels outside the box.
    crop:  explicand = original, corpus = its random resized crop (a crop view holds only
           original content, so the question is asked on the original); content = the crop's
           footprint in the original.
    Maps go through `pixel_attribution` (channels summed; RISE centred) before the positive part.

    Returns {"erase"|"crop": {"share": {method: (N, K)}, "chance": (N,) content area fraction}}.
    """
    _checks.check_array("originals", originals, ndim=4)
    originals = np.asarray(originals, np.float32)
    shape = originals.shape[1:]
    k_views, k_explain = jax.random.split(key)
    views = make_views(originals, k_views, ("erase", "crop"))
    erased, cropped = (View(*(np.asarray(f[:, j]) for f in views)) for j in (0, 1))
    crop_masks = np.asarray(jax.vmap(lambda s, v: footprint(s, v, shape))(cropped.source, cropped.valid))
    settings = {"erase": (erased.image, originals, erased.valid), "crop": (originals, cropped.image, crop_masks)}
    result = {}
    for i, (name, (explicands, corpus, mask)) in enumerate(settings.items()):
        out = explain_pairs(encode_fn, params, explicands, corpus, foil_reps, jax.random.fold_in(k_explain, i),
                            methods=methods, **options)
        share = {}
        for method in (m for m in out if m != "scores"):
            maps = pixel_attribution(out[method], method)  # (N, K, H, W)
            share[method] = np.asarray(positive_share(maps, jnp.asarray(mask)[:, None]))
        result[name] = {"share": share, "chance": mask.reshape(len(mask), -1).mean(axis=1), "mask": mask,
                        "scores": out["scores"]}
    return result
