"""Insertion / deletion curves and their AUC, with the paper's evaluation measures (Section 4.1).

Protocol (Petsiuk et al., 2018, as run by the COCOA paper's code):

* Features are pixels (or `superpixel` x `superpixel` blocks) ranked by the attribution
  averaged over channels (optionally its absolute value), most important first.
* `n_steps` steps reveal (insertion) or remove (deletion) features; step i adds
  `n_features // n_steps` features, plus one for the first `n_features % n_steps` steps
  (the remainder is spread over the first steps), and a step 0 with no feature changed
  comes first, so a curve has `n_steps + 1` points.
* A removed pixel takes the baseline's value (the blurred explicand), all channels of a
  pixel together: input = x * keep + baseline * (1 - keep), keep in {0, 1} per pixel.
* Every measure is evaluated at every step; measures that read the same representation
  share ONE encoder pass per step (`Measures` maps representations to all of them).
* AUC: trapezoid rule over the fraction of features changed (0 .. 1).

Everything is pure JAX: functions are jit-able and vmap-able over explicands, over K
attributions of one explicand, and over per-explicand `Measures`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks
from cocoa_jax.attribution import _shard_batch
from cocoa_jax.targets import Target

KINDS = ("insertion", "deletion")


# ----------------------------------------------------------------------------- steps


def step_sizes(n_features: int, n_steps: int = 50) -> np.ndarray:
    """Features changed at each step, (n_steps + 1,) int: [0, s+1, ..., s+1, s, ..., s].

    s = n_features // n_steps; the first n_features % n_steps steps take one more, and the
    leading 0 is the unperturbed step, as in the paper's code.
    """
    n_features = _checks.check_positive_int("n_features", n_features)
    n_steps = _checks.check_positive_int("n_steps", n_steps)
    if n_steps > n_features:
        raise ValueError(f"`n_steps`={n_steps} exceeds the number of features {n_features}")
    base, remainder = divmod(n_features, n_steps)
    sizes = np.full(n_steps + 1, base, dtype=np.int64)
    sizes[0] = 0
    sizes[1: remainder + 1] += 1
    return sizes


def feature_counts(n_features: int, n_steps: int = 50) -> np.ndarray:
    """Cumulative features changed after each step, (n_steps + 1,) int from 0 to n_features."""
    return np.cumsum(step_sizes(n_features, n_steps))


def feature_fractions(n_features: int, n_steps: int = 50) -> np.ndarray:
    """`feature_counts / n_features`, (n_steps + 1,) float64 from 0 to 1: the AUC's x-axis."""
    return feature_counts(n_features, n_steps) / float(n_features)


def auc(curves: jax.Array, fractions) -> jax.Array:
    """Trapezoid-rule area under curves, over their step axis.

    Args:
      curves: (..., S + 1, M) values at each step (M measures; the step axis is -2).
      fractions: (S + 1,) x-coordinates (fraction of features changed).
    Returns: (..., M).
    """
    fractions = jnp.asarray(fractions, curves.dtype)
    if curves.ndim < 2 or curves.shape[-2] != fractions.shape[0]:
        raise ValueError(f"`curves` must have shape (..., {fractions.shape[0]}, M), got {curves.shape}")
    widths = jnp.diff(fractions)[:, None]  # (S, 1)
    heights = 0.5 * (curves[..., 1:, :] + curves[..., :-1, :])
    return jnp.sum(heights * widths, axis=-2)


# ----------------------------------------------------------------------------- ranking


def _check_superpixel(superpixel, height: int, width: int) -> tuple[int, int]:
    if isinstance(superpixel, (int, np.integer)) and not isinstance(superpixel, bool):
        superpixel = (int(superpixel), int(superpixel))
    if (not isinstance(superpixel, (tuple, list)) or len(superpixel) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in superpixel)):
        raise ValueError(f"`superpixel` must be a positive int or (sh, sw), got {superpixel!r}")
    sh, sw = int(superpixel[0]), int(superpixel[1])
    if height % sh or width % sw:
        raise ValueError(f"`superpixel` {(sh, sw)} must divide the image size {(height, width)}")
    return sh, sw


def feature_scores(attribution: jax.Array, image_shape, *, absolute: bool = False,
                   superpixel=1) -> jax.Array:
    """Importance of each feature, (H // sh) * (W // sw) flattened row-major.

    Args:
      attribution: (H, W) or (H, W, C) (averaged over channels, as in the paper).
      image_shape: (H, W, C) of the explicand.
      absolute: rank by |channel mean| instead of the signed channel mean.
      superpixel: int or (sh, sw); a superpixel's score is its mean pixel score.
    """
    height, width = image_shape[0], image_shape[1]
    sh, sw = _check_superpixel(superpixel, height, width)
    if attribution.ndim == 3:
        if tuple(attribution.shape) != tuple(image_shape):
            raise ValueError(f"`attribution` of rank 3 must have the explicand's shape {tuple(image_shape)}, "
                             f"got {attribution.shape}")
        attribution = jnp.mean(attribution, axis=-1)
    elif attribution.ndim != 2 or tuple(attribution.shape) != (height, width):
        raise ValueError(f"`attribution` must have shape (H, W) or (H, W, C) = {tuple(image_shape)}, "
                         f"got {attribution.shape}")
    if absolute:
        attribution = jnp.abs(attribution)
    pooled = attribution.reshape(height // sh, sh, width // sw, sw).mean(axis=(1, 3))
    return pooled.reshape(-1)


def ablation_masks(scores: jax.Array, image_shape, *, kind: str, n_steps: int = 50,
                   superpixel=1) -> jax.Array:
    """Keep-masks of the explicand for every step: (n_steps + 1, H, W), 1 = explicand pixel.

    scores: (n_features,) from `feature_scores`. Ties are broken by feature index (stable
    sort), so results are deterministic.
    """
    _checks.check_choice("kind", kind, KINDS)
    height, width = image_shape[0], image_shape[1]
    sh, sw = _check_superpixel(superpixel, height, width)
    n_features = scores.shape[0]
    counts = jnp.asarray(feature_counts(n_features, n_steps))  # (S + 1,)
    order = jnp.argsort(-scores, stable=True)  # most important first
    rank = jnp.zeros(n_features, jnp.int32).at[order].set(jnp.arange(n_features, dtype=jnp.int32))
    changed = rank[None, :] < counts[:, None]  # (S + 1, n_features): features changed so far
    keep = changed if kind == "insertion" else ~changed
    keep = keep.reshape(-1, height // sh, width // sw).astype(scores.dtype)
    # Superpixel -> pixels (nearest upsampling).
    return jnp.repeat(jnp.repeat(keep, sh, axis=1), sw, axis=2)


def ablated_inputs(x: jax.Array, baseline: jax.Array, masks: jax.Array) -> jax.Array:
    """x * m + baseline * (1 - m) for each mask: (S, H, W) masks -> (S, H, W, C) inputs."""
    m = masks[..., None]
    return x[None] * m + baseline[None] * (1.0 - m)


# ----------------------------------------------------------------------------- measures


@dataclasses.dataclass(frozen=True)
class Measures:
    """Evaluation measures on representations, all read from ONE encoder pass.

    `measures(reps)` maps (..., D) representations to (..., M) values, in the order of
    `names`: first the similarity targets (one per entry of `target`), then the
    predicted probabilities of `prob_classes` under the linear probe, then the
    representation shift |r - shift_reference|^2. Absent parts are None.

    A pytree: per-explicand fields (`prob_classes`, `shift_reference`, label-free
    directions) carry a leading batch axis and are vmapped with their explicands.

    Attributes:
      target: a (stacked) `Target`, e.g. COCOA with the explanation's corpus/foil and with
        a resampled foil; scores (..., K).
      probe_weights, probe_bias: (D, C), (C,) linear classifier on representations.
      prob_classes: (P,) int class indices whose softmax probability is measured (corpus
        majority class, explicand's predicted class).
      shift_reference: (D,) the explicand's own representation.
      names: static tuple of M names.
    """

    target: Target | None
    probe_weights: jax.Array | None
    probe_bias: jax.Array | None
    prob_classes: jax.Array | None
    shift_reference: jax.Array | None
    names: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))

    def __call__(self, reps: jax.Array) -> jax.Array:
        parts = []
        if self.target is not None:
            scores = self.target(reps)
            parts.append(scores[..., None] if self.target.num_targets is None else scores)
        if self.prob_classes is not None:
            logits = reps @ self.probe_weights + self.probe_bias
            probs = jax.nn.softmax(logits, axis=-1)
            parts.append(jnp.take(probs, self.prob_classes, axis=-1))
        if self.shift_reference is not None:
            parts.append(jnp.sum(jnp.square(reps - self.shift_reference), axis=-1, keepdims=True))
        if not parts:
            raise ValueError("`Measures` has no measure (all of target, prob_classes, shift_reference are None)")
        return jnp.concatenate(parts, axis=-1)


jax.tree_util.register_dataclass(
    Measures,
    data_fields=["target", "probe_weights", "probe_bias", "prob_classes", "shift_reference"],
    meta_fields=["names"],
)


def majority_class(probe_logits: jax.Array, n_classes: int | None = None) -> jax.Array:
    """Most frequent predicted class among corpus samples (ties -> smallest index).

    probe_logits: (C_corpus, n_classes) -> int scalar.
    """
    n_classes = probe_logits.shape[-1] if n_classes is None else n_classes
    votes = jnp.bincount(jnp.argmax(probe_logits, axis=-1), length=n_classes)
    return jnp.argmax(votes)


def make_measures(*, targets: dict[str, Target] | None = None, probe=None,
                  prob_classes: dict[str, jax.Array] | None = None,
                  shift_reference: jax.Array | None = None) -> Measures:
    """Assemble `Measures` from named parts.

    Args:
      targets: name -> single `Target` (e.g. {"ccs": cocoa(corpus, foil),
        "ccs_resampled_foil": cocoa(corpus, other_foil)}); directions may carry a batch axis.
      probe: object with `weights` (D, C) and `bias` (C,) (a `cocoa_jax.probe.LinearProbe`);
        needed with `prob_classes`.
      prob_classes: name -> class index, scalar or (N,) batched (e.g.
        {"corpus_majority_prob": ..., "explicand_pred_prob": ...}).
      shift_reference: (D,) or (N, D) explicand representations: adds "rep_shift".
    """
    from cocoa_jax import targets as targets_mod

    names: list[str] = []
    target = None
    if targets:
        for name, t in targets.items():
            if not isinstance(t, Target) or t.num_targets is not None:
                raise TypeError(f"`targets[{name!r}]` must be a single (unstacked) Target")
        names += list(targets)
        target = targets_mod.stack(list(targets.values()))
    classes = weights = bias = None
    if prob_classes:
        if probe is None:
            raise ValueError("`probe` is required with `prob_classes`")
        names += list(prob_classes)
        classes = jnp.stack([jnp.asarray(c, jnp.int32) for c in prob_classes.values()], axis=-1)
        weights, bias = jnp.asarray(probe.weights), jnp.asarray(probe.bias)
    if shift_reference is not None:
        names.append("rep_shift")
        shift_reference = jnp.asarray(shift_reference)
    if not names:
        raise ValueError("make_measures needs at least one of `targets`, `prob_classes`, `shift_reference`")
    return Measures(target, weights, bias, classes, shift_reference, tuple(names))


# ----------------------------------------------------------------------------- curves


def _check_kinds(kinds) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError("`kinds` is empty")
    for k in kinds:
        _checks.check_choice("kinds", k, KINDS)
    return kinds


def ablation_curves(
    encode: Callable[[jax.Array], jax.Array],
    measures: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    baseline: jax.Array,
    attribution: jax.Array,
    *,
    kinds=KINDS,
    n_steps: int = 50,
    absolute: bool = False,
    superpixel=1,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """Insertion and/or deletion curves of one explicand.

    Args:
      encode: batch (B, H, W, C) -> representations (B, D).
      measures: (B, D) -> (B, M), e.g. a `Measures`.
      x, baseline: (H, W, C) explicand and the image whose values removed pixels take.
      attribution: (H, W) or (H, W, C); or with a leading K axis, (K, H, W[, C]), for K
        attributions of the same explicand (e.g. K stacked targets): all K x kinds x
        (n_steps + 1) inputs go through the encoder together.
      kinds: "insertion", "deletion" or both (default), in that order on the output.
      n_steps, absolute, superpixel: see the module docstring.
      batch_size: inputs per encoder call (None: all at once); chunks run in a rolled
        `lax.map`, which costs nothing for forward-only work.
      mesh: split each batch of ablated inputs over the devices of this mesh (measured on
        2 CPU host devices, ResNet-18: 97 -> 126 evaluations/s).
    Returns: (len(kinds), n_steps + 1, M), or (K, len(kinds), n_steps + 1, M).
    """
    kinds = _check_kinds(kinds)
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"`x` must be one image (H, W, C), got shape {x.shape}")
    _checks.check_same_shape("baseline", baseline, "x", x)
    baseline = jnp.asarray(baseline, x.dtype)
    attribution = jnp.asarray(attribution, x.dtype)
    stacked = attribution.ndim == 4 or (attribution.ndim == 3 and attribution.shape != x.shape)
    batch_size = _checks.check_optional_batch_size(batch_size)
    attributions = attribution if stacked else attribution[None]

    def masks_of(attr):  # -> (len(kinds), S + 1, H, W)
        scores = feature_scores(attr, x.shape, absolute=absolute, superpixel=superpixel)
        return jnp.stack([ablation_masks(scores, x.shape, kind=k, n_steps=n_steps, superpixel=superpixel)
                          for k in kinds])

    masks = jax.vmap(masks_of)(attributions)  # (K, kinds, S + 1, H, W)
    lead = masks.shape[:3]
    inputs = ablated_inputs(x, baseline, masks.reshape((-1,) + masks.shape[3:]))
    evaluate = lambda b: measures(encode(_shard_batch(b, mesh)))
    values = map_in_batches(evaluate, inputs, batch_size, multiple=1 if mesh is None else mesh.size)
    values = values.reshape(lead + values.shape[1:])
    return values if stacked else values[0]


def map_in_batches(fn, inputs: jax.Array, batch_size: int | None, multiple: int = 1) -> jax.Array:
    """fn over the leading axis of inputs in equal chunks of at most batch_size.

    The chunk size is ceil(n / n_chunks) rounded up to `multiple` (the device count when
    sharded), so padding (repeats of the last input, dropped from the output) stays small.
    """
    n = inputs.shape[0]
    n_chunks = 1 if batch_size is None or batch_size >= n else -(-n // batch_size)
    size = -(-n // n_chunks)
    size = -(-size // multiple) * multiple
    pad = n_chunks * size - n
    padded = jnp.concatenate([inputs, jnp.repeat(inputs[-1:], pad, axis=0)]) if pad else inputs
    if n_chunks == 1:
        return fn(padded)[:n]
    out = jax.lax.map(fn, padded.reshape((n_chunks, size) + inputs.shape[1:]))
    return out.reshape((n_chunks * size,) + out.shape[2:])[:n]


def insertion_deletion(encode, measures, x, baseline, attribution, *, n_steps: int = 50,
                       absolute: bool = False, superpixel=1, batch_size: int | None = None,
                       mesh: jax.sharding.Mesh | None = None):
    """Curves and AUCs for both kinds.

    Returns (curves, aucs): curves ([K,] 2, n_steps + 1, M) with kind 0 = insertion and
    1 = deletion; aucs ([K,] 2, M), trapezoid over the fraction of features.
    """
    curves = ablation_curves(encode, measures, x, baseline, attribution, kinds=KINDS, n_steps=n_steps,
                             absolute=absolute, superpixel=superpixel, batch_size=batch_size, mesh=mesh)
    height, width = x.shape[0], x.shape[1]
    sh, sw = _check_superpixel(superpixel, height, width)
    fractions = feature_fractions((height // sh) * (width // sw), n_steps)
    return curves, auc(curves, fractions)


def random_attribution(key: jax.Array, image_shape) -> jax.Array:
    """The random-attribution benchmark: i.i.d. U[0, 1) pixel scores, (H, W)."""
    return jax.random.uniform(key, tuple(image_shape[:2]))


def representation_shift(reps: jax.Array, reference: jax.Array) -> jax.Array:
    """|reps - reference|^2 over the last axis (the paper code's RepShift), (..., D) -> (...)."""
    return jnp.sum(jnp.square(reps - reference), axis=-1)


__all__ = [
    "KINDS", "Measures", "ablated_inputs", "ablation_curves", "ablation_masks", "auc",
    "feature_counts", "feature_fractions", "feature_scores", "insertion_deletion",
    "majority_class", "make_measures", "random_attribution", "representation_shift", "step_sizes",
]
