"""Explanation targets on representations (paper Sections 2-3, Appendix C).

Every target in the paper is linear in the (optionally L2-normalised) representation of
the perturbed input once the corpus, foil and explicand representations are known:

    target(r) = <r / |r|, direction>   (cosine similarity)
    target(r) = <r, direction>         (dot-product similarity)

For contrastive corpus similarity this is Prop. 3.3: the mean cosine similarity to the
corpus minus the mean cosine similarity to the foil equals the dot product of r/|r| with
the *contrastive direction* mean_c(f(x_c)/|f(x_c)|) - mean_i(f(x_i)/|f(x_i)|). So a
`Target` stores one direction and evaluates in O(D), whatever the corpus and foil sizes.

A `Target` is a pytree: it passes through `jit`, and per-explicand targets (label-free,
contrastive label-free) built from a batch of explicand representations `(N, D)` are
vmapped together with their explicands.

Cross-modal COCOA (paper Section 4.3, eq. 6): the corpus and foil representations may come
from another encoder that maps into the same space (CLIP's text tower), e.g.
``cocoa(text_encode(captions), text_encode(foil_captions))`` explains an image encoder's
explicand with ``explain_fn(image_encode, target)``; nothing else changes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks

SIMILARITIES = ("cosine", "dot")

# Norms below this are treated as this value, as torch.nn.functional.normalize does, so a
# zero representation scores 0 (with a finite gradient) instead of NaN.
NORM_EPS = 1e-12


def safe_norm(reps: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm clamped below at `NORM_EPS`, with a finite gradient at 0.

    Args: reps (..., D). Returns (...) (or (..., 1) with keepdims).
    """
    # max() before sqrt keeps the gradient finite at 0 (sqrt'(0) is inf).
    squared = jnp.sum(jnp.square(reps), axis=axis, keepdims=keepdims)
    return jnp.sqrt(jnp.maximum(squared, NORM_EPS**2))


def unit(reps: jax.Array) -> jax.Array:
    """reps / |reps| along the last axis, (..., D) -> (..., D); zero rows stay zero."""
    return reps / safe_norm(reps, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Target:
    """A linear explanation target on representations.

    Attributes:
      direction: (..., D) for one target, or (..., K, D) for K stacked targets. Leading
        axes are batch axes (e.g. one label-free target per explicand, to be vmapped).
      normalize: static. A bool for one target (True: cosine similarity, the
        representation is L2-normalised first; False: dot product), or a tuple of K bools
        for a stacked target.
    """

    direction: jax.Array
    normalize: bool | tuple[bool, ...] = dataclasses.field(metadata=dict(static=True))

    @property
    def num_targets(self) -> int | None:
        """K for a stacked target, None for a single one (scalar scores)."""
        return len(self.normalize) if isinstance(self.normalize, tuple) else None

    def __call__(self, reps: jax.Array) -> jax.Array:
        """Scores of representations: (..., D) -> (...) or, stacked, (..., K)."""
        reps = jnp.asarray(reps)
        if reps.shape[-1:] != self.direction.shape[-1:]:
            raise ValueError(
                f"`reps` must have last dimension {self.direction.shape[-1]} (the target's "
                f"representation dimension), got shape {reps.shape}"
            )
        inv_norm = 1.0 / safe_norm(reps, keepdims=True)  # (..., 1)
        if self.num_targets is None:
            if self.direction.ndim == 1:
                raw = reps @ self.direction
            else:
                raw = jnp.sum(reps * self.direction, axis=-1)
            return raw * inv_norm[..., 0] if self.normalize else raw
        if self.direction.ndim == 2:
            raw = reps @ self.direction.T  # (..., K): one matmul for all K targets
        else:
            raw = jnp.einsum("...d,...kd->...k", reps, self.direction)
        # Per-target scale: 1/|r| for cosine targets, 1 for dot-product targets.
        cosine = jnp.asarray(self.normalize)
        return raw * jnp.where(cosine, inv_norm, 1.0)


jax.tree_util.register_dataclass(Target, data_fields=["direction"], meta_fields=["normalize"])


def _similarity_normalizes(similarity: str) -> bool:
    return _checks.check_choice("similarity", similarity, SIMILARITIES) == "cosine"


def _check_reps(name: str, reps, *, ndim: int | None = None, dim: int | None = None,
                cosine: bool = False) -> jax.Array:
    """Validate a representation array and return it as a floating jax array."""
    _checks.check_array(name, reps, ndim=ndim, min_ndim=1)
    shape = np.shape(reps)
    if ndim == 2 and shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {shape}); it needs at least one representation")
    if shape[-1] == 0:
        raise ValueError(f"`{name}` has representation dimension 0 (shape {shape})")
    if dim is not None and shape[-1] != dim:
        raise ValueError(
            f"`{name}` has representation dimension {shape[-1]}, expected {dim} to match the "
            f"other representations"
        )
    if cosine and _checks.is_concrete(reps):
        norms = np.linalg.norm(np.asarray(reps, dtype=np.float64).reshape(-1, shape[-1]), axis=-1)
        zero = np.flatnonzero(norms <= NORM_EPS)
        if zero.size:
            raise ValueError(
                f"`{name}` has {zero.size} zero-norm representation(s) (first at flat index "
                f"{int(zero[0])}); cosine similarity to a zero vector is undefined"
            )
    reps = jnp.asarray(reps)
    return reps if jnp.issubdtype(reps.dtype, jnp.floating) else reps.astype(jnp.float32)


def _mean_direction(reps: jax.Array, cosine: bool) -> jax.Array:
    """(N, D) -> (D,): mean of unit representations (cosine) or of raw ones (dot)."""
    return jnp.mean(unit(reps) if cosine else reps, axis=0)


def cocoa(corpus_reps, foil_reps, similarity: str = "cosine") -> Target:
    """Contrastive corpus similarity, eq. (3), via its contrastive direction (Prop. 3.3).

    Args:
      corpus_reps: (C, D) representations of the corpus.
      foil_reps: (F, D) representations of the foil samples.
      similarity: "cosine" (the paper's main results) or "dot" (Appendix L).
    Returns: a `Target` with direction (D,).
    """
    cosine = _similarity_normalizes(similarity)
    corpus_reps = _check_reps("corpus_reps", corpus_reps, ndim=2, cosine=cosine)
    foil_reps = _check_reps("foil_reps", foil_reps, ndim=2, dim=corpus_reps.shape[-1], cosine=cosine)
    direction = _mean_direction(corpus_reps, cosine) - _mean_direction(foil_reps, cosine)
    return Target(direction, cosine)


def corpus(corpus_reps, similarity: str = "cosine") -> Target:
    """Corpus similarity: mean similarity to the corpus, no foil term. (C, D) -> direction (D,)."""
    cosine = _similarity_normalizes(similarity)
    corpus_reps = _check_reps("corpus_reps", corpus_reps, ndim=2, cosine=cosine)
    return Target(_mean_direction(corpus_reps, cosine), cosine)


def label_free(explicand_rep, similarity: str = "cosine") -> Target:
    """Similarity to the explicand's own representation.

    cosine = RELAX (Wickstrom et al.); dot = label-free feature importance (Crabbe & van
    der Schaar). explicand_rep: (..., D); a batch (N, D) gives N targets to vmap over.
    """
    cosine = _similarity_normalizes(similarity)
    explicand_rep = _check_reps("explicand_rep", explicand_rep, cosine=cosine)
    return Target(unit(explicand_rep) if cosine else explicand_rep, cosine)


def contrastive_label_free(explicand_rep, foil_reps, similarity: str = "cosine") -> Target:
    """Contrastive similarity: label-free with the explicand as a corpus of one, minus the foil.

    explicand_rep: (..., D); foil_reps: (F, D). Direction (..., D).
    """
    cosine = _similarity_normalizes(similarity)
    explicand_rep = _check_reps("explicand_rep", explicand_rep, cosine=cosine)
    foil_reps = _check_reps("foil_reps", foil_reps, ndim=2, dim=explicand_rep.shape[-1], cosine=cosine)
    own = unit(explicand_rep) if cosine else explicand_rep
    return Target(own - _mean_direction(foil_reps, cosine), cosine)


def stack(targets: Sequence[Target]) -> Target:
    """K targets as one: scores (..., K) from ONE encoder pass.

    Targets may mix cosine and dot similarity and may themselves be stacked; batch axes of
    the directions are broadcast (a shared COCOA target stacks with per-explicand label-free
    targets of shape (N, D) into directions (N, K, D)).
    """
    targets = list(targets)
    if not targets:
        raise ValueError("`targets` is empty; stack needs at least one Target")
    for i, t in enumerate(targets):
        if not isinstance(t, Target):
            raise TypeError(f"`targets[{i}]` must be a Target, got {type(t).__name__}")
    dims = {t.direction.shape[-1] for t in targets}
    if len(dims) != 1:
        raise ValueError(f"`targets` have different representation dimensions {sorted(dims)}")
    # Bring every target to (..., k, D) with its own flags.
    blocks, flags = [], []
    for t in targets:
        if t.num_targets is None:
            blocks.append(t.direction[..., None, :])
            flags.append(bool(t.normalize))
        else:
            blocks.append(t.direction)
            flags.extend(t.normalize)
    batch_shape = jnp.broadcast_shapes(*(b.shape[:-2] for b in blocks))
    blocks = [jnp.broadcast_to(b, batch_shape + b.shape[-2:]) for b in blocks]
    return Target(jnp.concatenate(blocks, axis=-2), tuple(flags))


# One table of the target vocabulary: name -> (builder, the representations it reads).
# `build` is how every front end (sweep, explain, benchmarks) turns a name into a Target.
TARGETS = {
    "label_free": (lambda e, c, f, s: label_free(e, s), ("explicand_reps",)),
    "contrastive_label_free": (lambda e, c, f, s: contrastive_label_free(e, f, s), ("explicand_reps", "foil_reps")),
    "corpus": (lambda e, c, f, s: corpus(c, s), ("corpus_reps",)),
    "cocoa": (lambda e, c, f, s: cocoa(c, f, s), ("corpus_reps", "foil_reps")),
}
TARGET_TITLES = {"label_free": "Label-Free", "contrastive_label_free": "Contrastive Label-Free",
                 "corpus": "Corpus", "cocoa": "COCOA"}


def stationary_at_explicand(name: str, similarity: str = "cosine") -> bool:
    """Whether target `name`'s score is at its maximum at the explicand itself, so its gradient
    there is zero (rounding noise, ~1e-11): the label-free target with cosine similarity, the
    cosine of f(x) with f(x). Methods that read only that gradient (`methods.Method.local`) give
    it an all-zero map; methods that move away from x (IG, GradientSHAP, RISE, ...) do not."""
    return name == "label_free" and _similarity_normalizes(similarity)


def build(name: str, *, explicand_reps=None, corpus_reps=None, foil_reps=None,
          similarity: str = "cosine") -> Target:
    """The target called `name` (a key of `TARGETS`) from the representations it needs.

    explicand_reps: (..., D) (label-free targets; a batch gives per-explicand directions);
    corpus_reps: (C, D); foil_reps: (F, D). Representations a target does not read are ignored;
    a missing one it reads is an error naming it.
    """
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; expected one of {list(TARGETS)}")
    builder, needs = TARGETS[name]
    given = {"explicand_reps": explicand_reps, "corpus_reps": corpus_reps, "foil_reps": foil_reps}
    missing = [n for n in needs if given[n] is None]
    if missing:
        raise ValueError(f"target {name!r} needs `{'`, `'.join(missing)}`")
    return builder(explicand_reps, corpus_reps, foil_reps, similarity)


def build_stacked(names: Sequence[str], **reps_and_similarity) -> Target:
    """`stack([build(n, ...) for n in names])`: K named targets sharing every encoder pass."""
    if isinstance(names, str) or not len(names):
        raise ValueError(f"`names` must be a non-empty sequence of target names, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"`names` has duplicates: {list(names)}")
    return stack([build(n, **reps_and_similarity) for n in names])


def contrastive_corpus_similarity(reps, corpus_reps, foil_reps, similarity: str = "cosine") -> jax.Array:
    """Eq. (3) evaluated literally, pairwise: the reference the fast `cocoa` path is tested against.

    Args: reps (..., D); corpus_reps (C, D); foil_reps (F, D). Returns (...). O((C + F) D).
    """
    cosine = _similarity_normalizes(similarity)
    corpus_reps = _check_reps("corpus_reps", corpus_reps, ndim=2, cosine=cosine)
    dim = corpus_reps.shape[-1]
    foil_reps = _check_reps("foil_reps", foil_reps, ndim=2, dim=dim, cosine=cosine)
    reps = _check_reps("reps", reps, dim=dim)

    def mean_similarity(others):
        pairwise = jnp.einsum("...d,nd->...n", reps, others)
        if cosine:
            pairwise = pairwise / (safe_norm(reps)[..., None] * safe_norm(others))
        return jnp.mean(pairwise, axis=-1)

    return mean_similarity(corpus_reps) - mean_similarity(foil_reps)


def foil_size(delta: float, epsilon: float, nonnegative: bool = False) -> int:
    """Smallest foil size m with P(|estimate - true| >= epsilon) <= delta (Prop. C.2).

    m >= 2 log(2/delta) / epsilon^2 (eq. C.1), or log(2/delta) / (2 epsilon^2) (eq. C.3)
    when every representation is non-negative (e.g. after a ReLU), as for ResNets.
    The paper's delta=0.01, epsilon=0.05, non-negative gives 1060 (it used 1500).
    """
    if not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise ValueError(f"`delta` must be in (0, 1), got {delta!r}")
    if not (isinstance(epsilon, (int, float)) and epsilon > 0.0 and math.isfinite(epsilon)):
        raise ValueError(f"`epsilon` must be a positive finite number, got {epsilon!r}")
    log_term = math.log(2.0 / delta)
    bound = log_term / (2.0 * epsilon**2) if nonnegative else 2.0 * log_term / epsilon**2
    # Guard against 1059.9999999 from rounding before taking the ceiling.
    return int(math.ceil(bound - 1e-9))


def explain_fn(encode: Callable[[jax.Array], jax.Array], target: Target) -> Callable[[jax.Array], jax.Array]:
    """Turn a batched encoder and a target into the function attribution methods explain.

    Args:
      encode: maps a batch (N, *input_shape) to representations (N, D). Close over the
        parameters inside a jitted function (pass them as jit arguments, not constants).
      target: a `Target` (single or stacked).
    Returns: f mapping ONE input `input_shape` to a scalar, or (K,) for a stacked target.
      Attribution methods vmap f, so the encoder sees whole batches of perturbed inputs.
      For a target without batch axes, `f.output_shape` is () or (K,).
    """
    if not callable(encode):
        raise TypeError(f"`encode` must be callable, got {type(encode).__name__}")
    if not isinstance(target, Target):
        raise TypeError(f"`target` must be a Target, got {type(target).__name__}")

    def f(x: jax.Array) -> jax.Array:
        reps = encode(x[None])
        if reps.ndim != 2 or reps.shape[0] != 1:
            raise ValueError(f"`encode` must map (N, ...) to (N, D); for N=1 it returned shape {reps.shape}")
        return target(reps[0])

    # What f returns, known from the target: attribution methods read it instead of tracing the
    # whole encoder once more just to learn K (`_common.num_targets`). Only for an unbatched target.
    if jnp.ndim(target.direction) == (1 if target.num_targets is None else 2):
        f.output_shape = () if target.num_targets is None else (target.num_targets,)
    return f
