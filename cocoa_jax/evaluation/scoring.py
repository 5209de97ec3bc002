"""`evaluate`: score attribution maps from anywhere with metrics of the table, N explicands at once.

    scores = evaluate(model, images, maps, metrics=("deletion", "road_morf"), corpus=corpus, foil=foil,
                      targets=("cocoa",), key=jax.random.key(0))
    scores["deletion"]   # (N, K) numpy: explicand n, target k

One program per call: every requested metric of one explicand is traced together, vmapped over
explicands and sharded over the mesh's devices (`meshes.ExplicandMap`). Every encoder pass is
read by all K targets; maps that do not depend on the target (one map per explicand, or K
identical ones: `one_map_for_all_targets`) are scored with M = 1, so each perturbed input is
encoded once for the K targets, not K times (docs/metrics.md, "Passes shared across targets").
Every argument is checked before any work. Explicand n's key is `fold_in(key, n)` (`explicand_keys`), so scores do not depend on
the batch size or the device count.
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, baselines as baselines_mod, meshes, methods as methods_mod, targets as targets_mod
from cocoa_jax.evaluation import localisation, table
from cocoa_jax.pipeline import encode_in_chunks

BASELINES = ("blur", "black", "zeros")
_blur = jax.jit(jax.vmap(baselines_mod.gaussian_blur))


@functools.partial(jax.jit, static_argnums=1)
def _folded_keys(key: jax.Array, n: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def explicand_keys(key: jax.Array, n: int) -> jax.Array:
    """The per-explicand keys of `evaluate`: fold_in(key, i) for i < n, (n,) key array (one
    compiled program per n, not a trace per call)."""
    return _folded_keys(key, n)


def method_explainer(name: str, **options) -> Callable:
    """An explainer for sensitivity / randomisation metrics from a method of `cocoa_jax.methods`:
    (encode, target, x, baseline, key) -> (K, H, W[, C]) maps of x for the K stacked targets."""
    methods_mod.get(name)
    methods_mod.check_options(name, options)

    def explainer(encode, target, x, baseline, key):
        return methods_mod.attribute(name, targets_mod.explain_fn(encode, target), x, baseline, key, **options)

    return explainer


# ----------------------------------------------------------------------------- argument checks


def maps_with_target_axis(maps, image_shape, k: int | None = None, *, allow_zero: bool = False) -> np.ndarray:
    """`maps` as (N, K', H, W[, C]) float32, K' = 1 for one map per explicand (it is then scored
    against every target). Accepted: (N, H, W), (N, H, W, C), (N, K, H, W), (N, K, H, W, C)
    (`cocoa-jax explain`'s attributions.npz arrays), H, W (and C) those of the images. Refuses
    NaN / inf and (unless `allow_zero`) maps that are all zeros, naming the explicand (and map)."""
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
        raise ValueError(f"`maps` must be a real array, got dtype {maps.dtype}")
    n, (height, width, channels) = image_shape[0], image_shape[1:]
    expected = f"(N={n}, H={height}, W={width}), (N, H, W, C={channels}), (N, K, H, W) or (N, K, H, W, C)"
    shape = maps.shape
    if maps.ndim == 3 and shape[1:] == (height, width):
        maps = maps[:, None]
    elif maps.ndim == 4 and shape[1:] == (height, width, channels):
        maps = maps[:, None]
    elif not ((maps.ndim == 4 and shape[2:] == (height, width))
              or (maps.ndim == 5 and shape[2:] == (height, width, channels))):
        raise ValueError(f"`maps` must have shape {expected}, got {shape}")
    if maps.shape[0] != n:
        raise ValueError(f"`maps` has {maps.shape[0]} explicands, `images` has {n}")
    if k is not None and maps.shape[1] not in (1, k):
        raise ValueError(f"`maps` has {maps.shape[1]} maps per explicand; expected 1 or the {k} targets")
    bad = ~np.isfinite(maps)
    if bad.any():
        i, j = np.argwhere(bad)[0][:2]
        raise ValueError(f"`maps` has NaN or inf values (first at explicand {i}, map {j})")
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    zero = ~np.any(flat != 0, axis=-1)
    if zero.any() and not allow_zero:
        i, j = np.argwhere(zero)[0]
        raise ValueError(f"`maps` is all zeros at explicand {i}, map {j}: a constant map ranks nothing")
    return maps.astype(np.float32)


def _check_names(argument: str, kind: str, names, known: list) -> tuple[str, ...]:
    """`names` (one name or several) as a tuple: not empty, each in `known`, no duplicates."""
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise ValueError(f"`{argument}` is empty; give at least one of {known}")
    for name in names:
        if name not in known:
            raise ValueError(f"`{argument}` has unknown {kind} {name!r}; expected one of {known}")
    if len(set(names)) != len(names):
        raise ValueError(f"`{argument}` has duplicates: {list(names)}")
    return names


def check_metrics(names, options=None) -> tuple[tuple[str, ...], dict[str, dict]]:
    """Metric names (known, no duplicates) and their resolved options; errors name the argument."""
    names = _check_names("metrics", "metric", names, sorted(table.METRICS))
    options = dict(options or {})
    for name in options:
        if name not in names:
            raise ValueError(f"`options` has metric {name!r}, which is not in `metrics` {list(names)}")
    return names, {name: table.METRICS[name].resolved_options(options.get(name)) for name in names}


def _baselines(baseline, images: np.ndarray) -> np.ndarray:
    if isinstance(baseline, str):
        _checks.check_choice("baseline", baseline, BASELINES)
        if baseline == "blur":  # the paper's GaussianBlur(21, 5) of each explicand
            if min(images.shape[1:3]) <= 10:  # reflect padding of a 21-pixel kernel
                raise ValueError(f"`baseline`='blur' (GaussianBlur(21, 5)) needs images larger than 10 pixels per "
                                 f"side, `images` are {images.shape[1]} x {images.shape[2]}; use 'black', 'zeros' "
                                 f"or baseline images")
            return np.asarray(_blur(images))
        if baseline == "black":  # Quantus's "black": the explicand's minimum over pixels and channels
            return np.broadcast_to(images.min(axis=(1, 2, 3), keepdims=True), images.shape).astype(np.float32)
        return np.zeros_like(images)
    baseline = np.asarray(baseline, np.float32)
    _checks.check_same_shape("baseline", baseline, "images", images)
    _checks.check_finite("baseline", baseline)
    return baseline


@functools.lru_cache(maxsize=16)
def _params_ignored(encode: Callable) -> Callable:
    """encode(x) as encode_fn(params, x), one wrapper per function (compiled programs are reused)."""
    return lambda params, x: encode(x)


def _encoder(model) -> tuple[Callable, Any]:
    """(encode_fn(params, x), params) of a LoadedModel-like object or of a plain encode(x)."""
    if hasattr(model, "encode_fn") and hasattr(model, "params"):
        return model.encode_fn, model.params
    if callable(model):
        return _params_ignored(model), ()
    raise TypeError(f"`model` must be a LoadedModel (encode_fn and params) or an encode function "
                    f"(B, H, W, C) -> (B, D), got {type(model).__name__}")


_DIMS: dict = {}  # D by (encode_fn, image shape, parameter shapes): the encoder is traced once, not per call


def _representation_dim(encode_fn, params, image_shape) -> int:
    """D of encode_fn(params, images (1, H, W, C)) -> (1, D), read by tracing (nothing is computed);
    kept for later calls with the same function, image shape and parameter structure and shapes."""
    leaves, structure = jax.tree_util.tree_flatten(params)
    cache_key = (encode_fn, tuple(image_shape), structure,
                 tuple((np.shape(leaf), getattr(leaf, "dtype", type(leaf))) for leaf in leaves))
    if cache_key not in _DIMS:
        if len(_DIMS) >= 16:
            _DIMS.pop(next(iter(_DIMS)))
        _DIMS[cache_key] = _traced_representation_dim(encode_fn, params, image_shape)
    return _DIMS[cache_key]


def _traced_representation_dim(encode_fn, params, image_shape) -> int:
    spec = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    try:
        out = jax.eval_shape(encode_fn, params, spec)
    except Exception as err:  # the caller's model: any error is reported against `images`
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"`model` cannot encode `images` of shape {tuple(image_shape)} "
                         f"({type(err).__name__}: {first})") from None
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != 1:
        raise ValueError(f"`model` must map images (B, H, W, C) to representations (B, D), got "
                         f"{getattr(out, 'shape', type(out).__name__)} for one image")
    return int(out.shape[1])


def _given_target(name, target, n, dim, k=None) -> targets_mod.Target:
    """A caller's Target (single, (K, D) stacked or (N, K, D)) as (N, K, D), checked against the
    explicand count, the encoder's D and (for `alternative_target`) the K of `target`."""
    if not isinstance(target, targets_mod.Target):
        raise TypeError(f"`{name}` must be a cocoa_jax.targets.Target, got {type(target).__name__}")
    _checks.check_finite(name, target.direction)
    if target.num_targets is None:
        target = targets_mod.stack([target])
    direction = jnp.asarray(target.direction)
    if direction.ndim == 2:
        direction = jnp.broadcast_to(direction, (n,) + direction.shape)
    if direction.ndim != 3 or direction.shape[0] != n:
        raise ValueError(f"`{name}` direction must be (K, D) or (N={n}, K, D), got {tuple(target.direction.shape)}")
    if direction.shape[-1] != dim:
        raise ValueError(f"`{name}` has representation dimension {direction.shape[-1]}; the model gives {dim}")
    if k is not None and direction.shape[1] != k:
        raise ValueError(f"`{name}` has {direction.shape[1]} targets; `target` has {k}")
    return targets_mod.Target(direction, target.normalize)


def _check_named_targets(names, images, corpus, foil, corpus_reps, foil_reps, similarity, dim) -> tuple[str, ...]:
    """`targets` names, and the corpus / foil (images or representations) they read, before any encoding."""
    names = _check_names("targets", "target", names, list(targets_mod.TARGETS))
    _checks.check_choice("similarity", similarity, targets_mod.SIMILARITIES)
    for name, value in (("corpus", corpus), ("foil", foil)):
        if value is not None:
            _checks.check_array(name, value, ndim=4)
            if np.shape(value)[1:] != images.shape[1:]:
                raise ValueError(f"`{name}` images must have the explicands' shape {images.shape[1:]}, "
                                 f"got {np.shape(value)[1:]}")
            if np.shape(value)[0] == 0:
                raise ValueError(f"`{name}` is empty")
    for name, value in (("corpus_reps", corpus_reps), ("foil_reps", foil_reps)):
        if value is not None:
            _checks.check_array(name, value, ndim=2)
            if np.shape(value)[1] != dim:
                raise ValueError(f"`{name}` has representation dimension {np.shape(value)[1]}; the model gives {dim}")
    given = {"corpus_reps": corpus is not None or corpus_reps is not None,
             "foil_reps": foil is not None or foil_reps is not None}
    for name in names:
        for need in targets_mod.TARGETS[name][1]:
            if need in given and not given[need]:
                images_flag = need.replace("_reps", "")
                raise ValueError(f"target {name!r} needs `{images_flag}` (images) or `{need}`")
    return names


def _named_target(names, n, encode_fn, params, images, corpus, foil, corpus_reps, foil_reps, similarity):
    """The (N, K, D) stacked target of `names`, encoding the explicands, corpus and foil (the work)."""
    encode = lambda batch: encode_in_chunks(encode_fn, params, np.asarray(batch, np.float32))
    reps = dict(explicand_reps=encode(images),
                corpus_reps=corpus_reps if corpus is None else encode(corpus),
                foil_reps=foil_reps if foil is None else encode(foil))
    stacked = targets_mod.build_stacked(tuple(names), similarity=similarity, **reps)
    direction = jnp.asarray(stacked.direction)
    direction = direction if direction.ndim == 3 else jnp.broadcast_to(direction, (n,) + direction.shape)
    return targets_mod.Target(direction, stacked.normalize)


def _check_key(key):
    if key is None:
        return
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and np.shape(key) == ()
    raw = dtype == np.uint32 and np.shape(key) == (2,)
    if not (typed or raw):
        raise ValueError(f"`key` must be one PRNG key (jax.random.key(seed)), got "
                         f"{getattr(dtype, 'name', type(key).__name__)} of shape {np.shape(key)}")


def _check_randomized_params(randomized_params, params) -> tuple:
    """Each randomised model has the model's parameter structure and shapes."""
    steps = tuple(randomized_params)
    reference = jax.tree_util.tree_structure(params)
    shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(params)]
    for i, step in enumerate(steps):
        if jax.tree_util.tree_structure(step) != reference or [np.shape(l) for l in jax.tree_util.tree_leaves(step)] != shapes:
            raise ValueError(f"`randomized_params[{i}]` does not have the model's parameter structure and shapes")
    return steps


def one_map_for_all_targets(maps: np.ndarray) -> np.ndarray:
    """(N, K, ...) maps -> (N, 1, ...) when every explicand's K maps are identical (a map that does
    not depend on the target: one map per explicand, a random or edge map): each perturbed input
    is then encoded once for the K targets instead of K times. Otherwise `maps` unchanged."""
    if maps.shape[1] > 1 and np.array_equal(maps, np.broadcast_to(maps[:, :1], maps.shape)):
        return maps[:, :1]
    return maps


# ----------------------------------------------------------------------------- evaluate

_PROGRAMS: dict = {}  # the last few compiled programs, by everything static in them
_traces: collections.Counter = collections.Counter()  # traces of `evaluate`'s program, by metric names (tests read it)


def _program(encode_fn, explainer, names, resolved, batch_size, num_segments, mesh, given) -> meshes.ExplicandMap:
    """The per-explicand program of `evaluate` over the mesh, kept for the next call with the same
    static parts (the same encoder function object, metrics, options, batch size, mesh); its jit
    compiles once per argument shapes. Metrics that read only the maps (`Metric.reads_model`
    False) run every explicand in one program call (no encoder pass to keep small)."""
    cache_key = (encode_fn, explainer, names, repr(sorted(resolved.items())), batch_size, num_segments, mesh, given)
    if cache_key in _PROGRAMS:
        return _PROGRAMS[cache_key]
    records = [table.METRICS[name] for name in names]

    def one(x, m, explicand_key, t, b, mask, seg, alt, shared_params, random_params):
        _traces[names] += 1  # Python side effect: runs when the program is traced, not when it runs
        ctx = table.Context(t, b, shared_params, mask, seg, alt, tuple(random_params), encode_fn=encode_fn,
                            explainer=explainer, batch_size=batch_size, num_segments=num_segments)
        k = t.num_targets  # a (1,) score of a map-only metric (M = 1) is that map's on every target
        return {record.name: jnp.broadcast_to(record.fn(ctx, x, m, explicand_key, **resolved[record.name]), (k,))
                for record in records}

    axis = lambda is_given: 0 if is_given else None
    lanes = "default" if any(record.reads_model for record in records) else None
    program = meshes.ExplicandMap(one, mesh, in_axes=(0, 0, 0, 0, 0, *map(axis, given), None, None),
                                  lanes_per_device=lanes)
    if len(_PROGRAMS) >= 8:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    _PROGRAMS[cache_key] = program
    return program



def evaluate(model, images, maps, *, metrics: Sequence[str], target: targets_mod.Target | None = None,
             targets: Sequence[str] = ("cocoa",), corpus=None, foil=None, corpus_reps=None, foil_reps=None,
             similarity: str = "cosine", key: jax.Array | None = None, baseline="blur",
             options: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int | None = None,
             mesh: jax.sharding.Mesh | None = None, explainer: Callable | None = None, masks=None,
             segments=None, alternative_target: targets_mod.Target | None = None,
             randomized_params: Sequence[Any] = (), allow_zero_maps: bool = False) -> dict[str, np.ndarray]:
    """Score maps of N explicands with metrics of `table.METRICS`.

    Args:
      model: a `cocoa_jax.models.LoadedModel` (or any object with `encode_fn(params, x)` and
        `params`), or an encode function (B, H, W, C) -> (B, D).
      images: (N, H, W, C) explicands, as the encoder takes them.
      maps: (N, H, W[, C]) one map per explicand (scored against every target) or (N, K, H, W[, C])
        one per target, from any library (`maps_with_target_axis`). One map, or K identical maps,
        are scored once for the K targets (each perturbed input encoded once).
      metrics: names of `table.METRICS`; options: {metric: {option: value}} over the defaults.
      target: a `targets.Target` (single, (K, D) stacked, or (N, K, D) per explicand); or, without
        it, `targets` (names of `targets.TARGETS`) built from corpus / foil images (encoded here) or
        corpus_reps / foil_reps, with `similarity`.
      key: PRNG key (required when a metric draws: `Metric.uses_key`); explicand n uses fold_in(key, n).
      baseline: "blur" (the paper's GaussianBlur(21, 5)), "black" (each image's minimum, Quantus's
        default), "zeros", or (N, H, W, C) images: what removed pixels take.
      batch_size: perturbed images per encoder call per explicand (None: all at once).
      mesh: explicands sharded over its devices (default: one local device per explicand, at most
        all local devices).
      explainer: `explainer(encode, target, x, baseline, key)` for metrics with `needs_explainer`
        (`method_explainer(name, **options)`); masks: (N, H, W) localisation masks (`needs_mask`);
        segments: (N, H, W) int superpixel ids (`needs_segments`; default: the metric's grid);
        alternative_target: a Target like `target` (`needs_alternative_target`);
        randomized_params: parameter pytrees of randomised models (`needs_randomized_model`).
      allow_zero_maps: score all-zero maps instead of refusing them (a method's own output in a
        sweep, e.g. the gradients of a dead encoder: a ranking by pixel order, correlations NaN).
    Returns: {metric: (N, K) float numpy scores}; the table's `direction` says which way is better.
    """
    # Every argument is checked before any work (encoding, compiling): one-line errors naming it.
    names, resolved = check_metrics(metrics, options)
    records = [table.METRICS[name] for name in names]
    encode_fn, params = _encoder(model)
    _checks.check_array("images", images, ndim=4)
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    if n == 0:
        raise ValueError("`images` is empty")
    maps = maps_with_target_axis(maps, images.shape, allow_zero=allow_zero_maps)
    batch_size = _checks.check_optional_batch_size(batch_size)
    _check_key(key)
    if explainer is not None and not callable(explainer):
        raise TypeError(f"`explainer` must be callable (evaluation.method_explainer(name)), got {type(explainer).__name__}")
    randomized_params = _check_randomized_params(randomized_params, params)
    needs = {"uses_key": ("key", key), "needs_explainer": ("explainer", explainer), "needs_mask": ("masks", masks),
             "needs_randomized_model": ("randomized_params", randomized_params or None),
             "needs_alternative_target": ("alternative_target", alternative_target)}
    for record in records:
        for flag, (argument, value) in needs.items():
            if getattr(record, flag) and value is None:
                raise ValueError(f"metric {record.name!r} needs `{argument}`")
    if masks is not None:
        masks = localisation.check_masks(masks, images.shape[1:3], n)
    num_segments = None
    if segments is not None:
        segments = np.asarray(segments)
        if (segments.shape != images.shape[:3] or not np.issubdtype(segments.dtype, np.integer)
                or segments.min() < 0):
            raise ValueError(f"`segments` must be non-negative integer ids of shape (N, H, W) = {images.shape[:3]}, "
                             f"got {segments.dtype} {segments.shape}")
        segments = segments.astype(np.int32)
        num_segments = int(segments.max()) + 1
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh (meshes.make_mesh), got {type(mesh).__name__}")
    dim = _representation_dim(encode_fn, params, images.shape[1:])
    if target is not None:
        for name, value in (("corpus", corpus), ("foil", foil), ("corpus_reps", corpus_reps), ("foil_reps", foil_reps)):
            if value is not None:
                raise ValueError(f"`{name}` is not read when `target` is given: pass `target`, or `targets` names "
                                 f"with their corpus / foil")
        target = _given_target("target", target, n, dim)
    else:
        names_of_targets = _check_named_targets(targets, images, corpus, foil, corpus_reps, foil_reps, similarity, dim)
    k = target.num_targets if target is not None else len(names_of_targets)
    if maps.shape[1] not in (1, k):
        raise ValueError(f"`maps` has {maps.shape[1]} maps per explicand; expected 1 or the {k} targets")
    if alternative_target is not None:
        alternative_target = _given_target("alternative_target", alternative_target, n, dim, k)
    base = _baselines(baseline, images)  # checked, then (blur) computed: the last check

    # The work.
    if target is None:
        target = _named_target(names_of_targets, n, encode_fn, params, images, corpus, foil, corpus_reps, foil_reps,
                               similarity)
    maps = one_map_for_all_targets(maps)  # (N, 1 or K, ...): one map's inputs encoded once for the K targets
    keys = explicand_keys(jax.random.key(0) if key is None else key, n)
    if mesh is None:
        mesh = meshes.local_explicand_mesh(n) or meshes.make_mesh(jax.local_devices()[:1])

    program = _program(encode_fn, explainer, names, resolved, batch_size, num_segments, mesh,
                       tuple(value is not None for value in (masks, segments, alternative_target)))
    if not any(record.reads_model for record in records):  # scores of the maps alone: no parameters to place
        params, randomized_params = (), ()
    out = program(images, maps, keys, target, base, masks, segments, alternative_target, params, randomized_params)
    return {name: np.asarray(out[name]) for name in names}


__all__ = ["BASELINES", "check_metrics", "evaluate", "explicand_keys", "maps_with_target_axis", "method_explainer",
           "one_map_for_all_targets"]
