"""Insertion / deletion curves and their AUC, with the paper's evaluation measures (Section 4.1).

Protocol (Petsiuk et al., 2018, as run by the COCOA paper's code):

* Features are pixels (or `superpixel` x `superpixel` blocks) ranked by the attribution
  averaged over channels, most important first; with `absolute`, by the channel mean of
  |attribution| (absolute value per channel first, as the official evaluation does). Equal
  scores keep pixel order (row-major index: a stable sort), so rankings are deterministic.
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
from cocoa_jax import batching
from cocoa_jax.attribution_methods import token_drop
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
      absolute: rank by the channel mean of |attribution| (|a| per channel, then the mean).
      superpixel: int or (sh, sw); a superpixel's score is its mean pixel score.
    """
    height, width = image_shape[0], image_shape[1]
    sh, sw = _check_superpixel(superpixel, height, width)
    if attribution.ndim == 3:
        if tuple(attribution.shape) != tuple(image_shape):
            raise ValueError(f"`attribution` of rank 3 must have the explicand's shape {tuple(image_shape)}, "
                             f"got {attribution.shape}")
        attribution = jnp.mean(jnp.abs(attribution) if absolute else attribution, axis=-1)
    elif attribution.ndim != 2 or tuple(attribution.shape) != (height, width):
        raise ValueError(f"`attribution` must have shape (H, W) or (H, W, C) = {tuple(image_shape)}, "
                         f"got {attribution.shape}")
    elif absolute:
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


def probe_probability(reps: jax.Array, probe, class_index) -> jax.Array:
    """Softmax probability of class `class_index` under a linear probe, (..., D) -> (...).

    probe: has `weights` (D, C) and `bias` (C,) (a `cocoa_jax.probe.LinearProbe`).
    """
    logits = reps @ probe.weights + probe.bias
    return jnp.take(jax.nn.softmax(logits, axis=-1), jnp.asarray(class_index, jnp.int32), axis=-1)


def representation_shift(reps: jax.Array, reference: jax.Array) -> jax.Array:
    """L2 distance |reps - reference| over the last axis, (..., D) -> (...).

    The official evaluation's RepShift (`measures/rep_shift.py`) is the L2 norm of the
    difference (not its square).
    """
    return jnp.sqrt(jnp.sum(jnp.square(reps - reference), axis=-1))


DIRECTIONS = ("higher", "lower")
ARROWS = {"higher": "↑", "lower": "↓"}


@dataclasses.dataclass(frozen=True)
class Measure:
    """One evaluation measure: `fn(reps (..., D), context) -> (...)`.

    `reads` names the context entries it needs (checked by `make_measures`).
    `insertion` / `deletion`: which AUC is better for that curve, "higher" or "lower". A
    measure of agreement with the target (a similarity, a probability) rises as the
    important pixels are inserted (higher insertion AUC is better) and falls as they are
    deleted (lower deletion AUC is better); a distance from the explicand is the reverse.
    Reports take their arrows, "best" marks and rankings from these fields.
    """

    title: str
    fn: Callable
    reads: tuple[str, ...]
    insertion: str = "higher"
    deletion: str = "lower"

    def __post_init__(self):
        for kind in KINDS:
            if getattr(self, kind) not in DIRECTIONS:
                raise ValueError(f"Measure {self.title!r}: `{kind}` must be one of {DIRECTIONS}, "
                                 f"got {getattr(self, kind)!r}")

    def better(self, kind: str) -> str:
        """Which AUC of the `kind` curve ("insertion" | "deletion") is better: "higher" or "lower"."""
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
        return getattr(self, kind)

    def arrow(self, kind: str) -> str:
        """The `kind` curve's arrow: "↑" (higher is better) or "↓" (lower is better)."""
        return ARROWS[self.better(kind)]


# The measure vocabulary (paper Section 4.1). Adding a measure = one definition + one entry.
MEASURES: dict[str, Measure] = {
    "ccs": Measure("contrastive corpus similarity", lambda reps, c: c["ccs"](reps), ("ccs",)),
    "ccs_resampled_foil": Measure("contrastive corpus similarity (resampled foil)",
                                  lambda reps, c: c["ccs_resampled_foil"](reps), ("ccs_resampled_foil",)),
    "corpus_majority_prob": Measure(
        "corpus majority probability",
        lambda reps, c: probe_probability(reps, c["probe"], c["corpus_majority_class"]),
        ("probe", "corpus_majority_class")),
    "explicand_pred_prob": Measure(
        "explicand predicted probability",
        lambda reps, c: probe_probability(reps, c["probe"], c["explicand_class"]),
        ("probe", "explicand_class")),
    # A distance from the explicand's representation: a good map moves it LEAST while its
    # important pixels are inserted and MOST while they are deleted.
    "rep_shift": Measure("representation shift", lambda reps, c: representation_shift(reps, c["explicand_rep"]),
                         ("explicand_rep",), insertion="lower", deletion="higher"),
}
MEASURE_NAMES = tuple(MEASURES)


@dataclasses.dataclass(frozen=True)
class Measures:
    """Named measures of `MEASURES`, all read from ONE encoder pass: (..., D) -> (..., M).

    A pytree: `context` holds what the measures read (Targets, a probe, class indices,
    the explicand's representation); per-explicand entries carry a leading batch axis and
    are vmapped with their explicands. `names` is static.
    """

    context: dict
    names: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))

    def __call__(self, reps: jax.Array) -> jax.Array:
        return jnp.stack([MEASURES[name].fn(reps, self.context) for name in self.names], axis=-1)


jax.tree_util.register_dataclass(Measures, data_fields=["context"], meta_fields=["names"])


def make_measures(names, **context) -> Measures:
    """`Measures` for `names` (keys of `MEASURES`), given what they read.

    context entries: ccs / ccs_resampled_foil: single `Target`s (e.g. `targets.cocoa(corpus,
    foil)` and with a resampled foil); probe: a linear probe; corpus_majority_class /
    explicand_class: int class indices; explicand_rep: (D,) the explicand's representation.
    Entries no named measure reads are ignored.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise ValueError("`names` is empty; give at least one measure of " + str(list(MEASURES)))
    for name in names:
        if name not in MEASURES:
            raise ValueError(f"unknown measure {name!r}; expected one of {list(MEASURES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"`names` has duplicates: {list(names)}")
    needed = {key for name in names for key in MEASURES[name].reads}
    missing = sorted(needed - {k for k, v in context.items() if v is not None})
    if missing:
        raise ValueError(f"measures {list(names)} need {missing}")
    for key in ("ccs", "ccs_resampled_foil"):
        if key in needed and (not isinstance(context[key], Target) or context[key].num_targets is not None):
            raise TypeError(f"`{key}` must be a single (unstacked) Target")
    cast = {"corpus_majority_class": jnp.int32, "explicand_class": jnp.int32}
    kept = {k: (jnp.asarray(v, cast[k]) if k in cast else v) for k, v in context.items() if k in needed}
    return Measures(kept, names)


@dataclasses.dataclass(frozen=True)
class StackedMeasures:
    """Z sets of the same measures read from ONE encoder pass: (..., D) -> (..., Z * M), set-major.

    `measures` is a `Measures` whose context leaves carry a leading Z axis (e.g. one set per
    corpus or foil size of a size study: `ccs` with size z's corpus and foil, the majority class
    of size z's corpus). The output is flat (z * M + m) so curves and AUCs keep their (..., M')
    layout; reshape the last axis to (Z, M). A pytree like `Measures`.
    """

    measures: Measures

    def __call__(self, reps: jax.Array) -> jax.Array:
        values = jax.vmap(lambda m: m(reps), out_axes=-2)(self.measures)  # (..., Z, M)
        return values.reshape(values.shape[:-2] + (-1,))


jax.tree_util.register_dataclass(StackedMeasures, data_fields=["measures"], meta_fields=[])


def stack_measures(sets) -> StackedMeasures:
    """`StackedMeasures` of a sequence of `Measures` with the same names (their contexts stacked)."""
    sets = list(sets)
    if not sets:
        raise ValueError("`sets` is empty")
    names = sets[0].names
    if any(m.names != names for m in sets):
        raise ValueError("every set must hold the same measures in the same order")
    return StackedMeasures(jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *sets))


def majority_class(probe_logits: jax.Array, n_classes: int | None = None) -> jax.Array:
    """Most frequent predicted class among corpus samples (ties -> smallest index).

    probe_logits: (C_corpus, n_classes) -> int scalar.
    """
    n_classes = probe_logits.shape[-1] if n_classes is None else n_classes
    votes = jnp.bincount(jnp.argmax(probe_logits, axis=-1), length=n_classes)
    return jnp.argmax(votes)


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
    removal: str = "blend",
    tokens: token_drop.KeptEncoder | None = None,
    token_buckets: int = token_drop.EVAL_BUCKETS,
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
      removal: "blend" (removed pixels take the baseline's values) or "token_drop" (ViTs: removed
        patches' tokens are left out, `tokens` a `token_drop.KeptEncoder`; features are the
        patches, `superpixel`, `baseline` and `mesh` unused; `_token_drop_curves`).
      token_buckets: token drop: the passes' kept-token counts are padded up to at most this many
        lengths, one encoder program each (`token_drop.length_buckets`; default 8, ~10% more
        tokens than exact lengths at 50 steps); at least 2 (n_steps + 1): exact lengths, no padding.
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
    if token_drop.check_removal(removal) == "token_drop":
        values = _token_drop_curves(tokens, measures, x, attributions, kinds, n_steps, absolute, batch_size,
                                    token_buckets)
        return values if stacked else values[0]

    def masks_of(attr):  # -> (len(kinds), S + 1, H, W)
        scores = feature_scores(attr, x.shape, absolute=absolute, superpixel=superpixel)
        return jnp.stack([ablation_masks(scores, x.shape, kind=k, n_steps=n_steps, superpixel=superpixel)
                          for k in kinds])

    masks = jax.vmap(masks_of)(attributions)  # (K, kinds, S + 1, H, W)
    lead = masks.shape[:3]
    inputs = ablated_inputs(x, baseline, masks.reshape((-1,) + masks.shape[3:]))
    evaluate = lambda b: measures(encode(batching.shard_batch(b, mesh)))
    values = batching.map_in_batches(evaluate, inputs, batch_size, multiple=1 if mesh is None else mesh.size)
    values = values.reshape(lead + values.shape[1:])
    return values if stacked else values[0]


def _token_drop_curves(tokens, measures, x, attributions, kinds, n_steps: int, absolute: bool,
                       batch_size: int | None, n_buckets: int) -> jax.Array:
    """(K, kinds, S + 1, M) curves by token drop: step s keeps the c_s most important patches
    (insertion) or all but them (deletion), c_s = feature_counts(P, n_steps)[s], a patch's score
    the mean of its p x p pixels.

    Each pass's kept count is a static shape, so the passes are grouped by
    `token_drop.length_buckets` into at most `n_buckets` padded lengths: a pass keeps its patches
    in increasing order and pads the rest of its bucket with masked slots (`padded_kept`, keys no
    token attends to), so it equals the exact-length pass up to float rounding, and the program
    holds one encoder per bucket instead of one per (kind, step) (50 steps: 8 vs 102). The
    passes of a bucket go through `batching.map_in_batches` (`batch_size` rows per call)."""
    if not isinstance(tokens, token_drop.KeptEncoder):
        raise TypeError(f"`tokens` must be a token_drop.KeptEncoder with removal='token_drop' (a ViT's "
                        f"token_drop.kept_encoder(encode_fn.token_access, params)), got {type(tokens).__name__}")
    p = tokens.patch_size
    grid = token_drop.patch_grid(x.shape[:2], p)
    n_patches = grid[0] * grid[1]
    covered = (grid[0] * p, grid[1] * p) + tuple(x.shape[2:])
    scores = jax.vmap(lambda a: feature_scores(a[:covered[0], :covered[1]], covered, absolute=absolute,
                                               superpixel=p))(attributions)  # (K, P)
    order = jnp.argsort(-scores, axis=-1, stable=True)  # most important first
    rank = jnp.argsort(order, axis=-1)  # (K, P): each patch's place in the order
    counts = feature_counts(n_patches, n_steps)
    # every (kind, step) pass, in output order: (is insertion, c_s, patch tokens it keeps)
    passes = [(kind == "insertion", int(c), int(c) if kind == "insertion" else n_patches - int(c))
              for kind in kinds for c in counts]
    lengths = token_drop.length_buckets([kept for _, _, kept in passes], n_buckets, tokens.prefix)
    bucket_of = np.searchsorted(lengths, [kept for _, _, kept in passes])
    k = attributions.shape[0]
    values, placed = [], []
    for b, length in enumerate(lengths):
        members = np.flatnonzero(bucket_of == b)
        inserting = jnp.asarray([passes[i][0] for i in members])[None, :, None]
        changed = jnp.asarray([passes[i][1] for i in members])[None, :, None]
        kept = jnp.where(inserting, rank[:, None] < changed, rank[:, None] >= changed)  # (K, n, P)
        keep, valid = token_drop.padded_kept(kept.reshape(-1, n_patches), int(length))
        exact = all(passes[i][2] == length for i in members)  # no padding slot: the plain program

        def evaluate(rows, exact=exact):  # rows (B, 2, length): kept indices, valid flags
            xs = jnp.broadcast_to(x, (rows.shape[0],) + x.shape)
            return measures(tokens.encode(xs, rows[:, 0], None if exact else rows[:, 1] > 0))

        rows = jnp.stack([keep, valid.astype(jnp.int32)], axis=1)
        values.append(batching.map_in_batches(evaluate, rows, batch_size).reshape(k, len(members), -1))
        placed.extend(members.tolist())
    where = np.argsort(np.asarray(placed))  # column of each pass in the concatenation
    out = jnp.concatenate(values, axis=1)[:, where]  # (K, kinds (S + 1), M)
    return out.reshape(k, len(kinds), len(counts), -1)


def insertion_deletion(encode, measures, x, baseline, attribution, *, n_steps: int = 50,
                       absolute: bool = False, superpixel=1, batch_size: int | None = None,
                       mesh: jax.sharding.Mesh | None = None, removal: str = "blend",
                       tokens: token_drop.KeptEncoder | None = None, token_buckets: int = token_drop.EVAL_BUCKETS):
    """Curves and AUCs for both kinds (arguments: `ablation_curves`).

    Returns (curves, aucs): curves ([K,] 2, n_steps + 1, M) with kind 0 = insertion and
    1 = deletion; aucs ([K,] 2, M), trapezoid over the fraction of features.
    """
    curves = ablation_curves(encode, measures, x, baseline, attribution, kinds=KINDS, n_steps=n_steps,
                             absolute=absolute, superpixel=superpixel, batch_size=batch_size, mesh=mesh,
                             removal=removal, tokens=tokens, token_buckets=token_buckets)
    height, width = x.shape[0], x.shape[1]
    if removal == "token_drop":  # the features are the patches
        grid = token_drop.patch_grid((height, width), tokens.patch_size)
        fractions = feature_fractions(grid[0] * grid[1], n_steps)
        return curves, auc(curves, fractions)
    sh, sw = _check_superpixel(superpixel, height, width)
    fractions = feature_fractions((height // sh) * (width // sw), n_steps)
    return curves, auc(curves, fractions)


def insertion_deletion_batch(encode, measures, xs, baselines, attributions, *, n_steps: int = 50,
                             absolute: bool = False, superpixel=1, batch_size: int | None = None,
                             removal: str = "blend", tokens: token_drop.KeptEncoder | None = None,
                             token_buckets: int = token_drop.EVAL_BUCKETS):
    """`insertion_deletion` for a batch of N explicands, as one program (jit- and shard-ready).

    Args:
      encode: batch (B, H, W, C) -> (B, D).
      measures: per-explicand measures, vmapped over N: a `Measures` (or any pytree
        callable) every leaf of which carries a leading N axis (broadcast shared entries
        such as the probe).
      xs, baselines: (N, H, W, C); attributions: (N, [K,] H, W[, C]).
      batch_size: ablated inputs per encoder call over the whole batch (None: all at once);
        each call holds the same step chunk of every explicand.
      removal, tokens, token_buckets: see `ablation_curves` (token drop: `tokens` shared by the
        explicands).
    Returns (curves (N, [K,] 2, n_steps + 1, M), aucs (N, [K,] 2, M)).
    """
    xs = jnp.asarray(xs)
    if xs.ndim != 4:
        raise ValueError(f"`xs` must be a batch of images (N, H, W, C), got shape {xs.shape}")
    n = xs.shape[0]
    per_explicand = None if batch_size is None else max(1, _checks.check_positive_int("batch_size", batch_size) // n)
    one = lambda x, b, a, m: insertion_deletion(encode, m, x, b, a, n_steps=n_steps, absolute=absolute,
                                                superpixel=superpixel, batch_size=per_explicand, removal=removal,
                                                tokens=tokens, token_buckets=token_buckets)
    return jax.vmap(one)(xs, baselines, attributions, measures)


def random_attribution(key: jax.Array, image_shape) -> jax.Array:
    """The random-attribution benchmark: i.i.d. U[0, 1) pixel scores, (H, W)."""
    return jax.random.uniform(key, tuple(image_shape[:2]))


# ----------------------------------------------------------------------------- reference maps


@dataclasses.dataclass(frozen=True)
class ReferenceMap:
    """A reference map generator of the evaluation: maps that explain no target and never call the
    encoder, against which the attribution methods' insertion / deletion AUCs are read (a row of
    every sweep table, the dashed grey curve of its figures). Not an attribution method
    (`cocoa_jax.methods`): one map per explicand whatever the targets.

    Attributes:
      name: the sweep's row, unit and stream name ("random").
      title: its name in tables and figures.
      description: how the report's header describes it.
      fn: (key, image_shape (H, W, C)) -> an (H, W) map.
    """

    name: str
    title: str
    description: str
    fn: Callable[[jax.Array, tuple], jax.Array]


RANDOM_REFERENCE = ReferenceMap("random", "Random", "the random attribution (i.i.d. U[0, 1) pixel scores)",
                                random_attribution)


__all__ = [
    "ARROWS", "DIRECTIONS", "KINDS", "Measures", "ablated_inputs", "ablation_curves", "ablation_masks", "auc",
    "feature_counts", "feature_fractions", "feature_scores", "insertion_deletion", "insertion_deletion_batch",
    "MEASURES", "MEASURE_NAMES", "Measure", "majority_class", "make_measures", "probe_probability",
    "random_attribution", "RANDOM_REFERENCE", "ReferenceMap", "representation_shift", "StackedMeasures", "stack_measures", "step_sizes",
]
