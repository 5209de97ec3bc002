"""One explain pipeline for every front end: encode in chunks, then attribute N explicands
against their baselines for K stacked targets with any method of the table.

    reps = encode_in_chunks(model.encode_fn, model.params, images)               # (N, D)
    maps = attribute(model.encode_fn, model.params, xs, baselines, target, "rise", keys)
    result = explain_images(model, xs, corpus=corpus_images, foil=foil_images)   # all of it

`attribute` runs the explicand program (`cocoa_jax.explicand_program`, the one program every
front end uses; compiled once per encoder, method, options, batch size and chunk shape) with this
front end's parameters: given baselines (default: the paper's GaussianBlur(21, 5) of each
explicand, `explicand_program.PAPER_BASELINE`), power-of-two encode chunks
(`explicand_program.PowerOfTwoChunks`) and the key rule `method_keys`. Explicands run in
fixed-size calls (the last one padded), vmapped, sharded over a
mesh's devices when one is given (one device otherwise). On CPU the default is ONE explicand per
device per call (`meshes.default_lanes_per_device`): vmapping explicands over an encoder that
already batches its perturbed inputs made XLA's CPU programs slower (digits encoder: RISE 1.6x, IG and
GradientSHAP 1.3x, and compiles faster; ResNet-18 unchanged; docs/performance.md). Explicand i's
randomness is `method_keys(key, method, n)[i]`, so the draws depend neither on the chunk size
nor on the device count, nor on which other methods run (each method draws from its own
stream, `methods.stream_id`); float32 rounding may differ in the last bits between chunk
sizes (XLA fuses a vmapped program differently).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, explicand_program as program_mod, meshes, methods as methods_mod, targets as targets_mod
from cocoa_jax.explicand_program import method_keys

DEFAULT_TARGETS = ("cocoa", "corpus", "label_free", "contrastive_label_free")
DEFAULT_METHODS = ("integrated_gradients", "gradient_shap", "rise")


# ---------------------------------------------------------------------------------------------
# Encoding


def _device(array: np.ndarray) -> jax.Array:
    """A host array on the default device, as `jnp.asarray` would put it (uncommitted, same
    values), without the small `stage` program `jnp.asarray` compiles per shape and dtype
    (~0.03-0.1 s each on a first run, a cache load on a repeated one)."""
    return jax.device_put(array)


def encode_in_chunks(encode_fn: Callable, params, images, *, chunk_size: int = 256) -> np.ndarray:
    """(N, H, W, C) -> (N, D) float32 with `encode_fn(params, x)`, in padded fixed-size chunks of
    a power of two (`explicand_program.PowerOfTwoChunks(chunk_size)`: memory bounded by
    `chunk_size`; a few compilations for any N)."""
    chunk_size = _checks.check_positive_int("chunk_size", chunk_size)
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"`images` must be a batch (N, H, W, C), got shape {images.shape}")
    n = len(images)
    if n == 0:
        raise ValueError("`images` is empty")
    return program_mod.encode(encode_fn, params, images, program_mod.PowerOfTwoChunks(chunk_size))


# ---------------------------------------------------------------------------------------------
# Attribution


def per_explicand(target: targets_mod.Target, n: int) -> targets_mod.Target:
    """`target` with an explicand axis: direction (K, D) or (D,) shared, or (n, K, D) -> (n, K, D)."""
    direction = jnp.asarray(target.direction)
    if direction.ndim == 1:
        direction = direction[None]
    if direction.ndim == 2:
        direction = jnp.broadcast_to(direction, (n, *direction.shape))
    if direction.ndim != 3 or direction.shape[0] != n:
        raise ValueError(f"`target` direction must be (K, D) or (N={n}, K, D), got {tuple(direction.shape)}")
    return targets_mod.Target(direction, target.normalize)


@functools.lru_cache(maxsize=None)
def _one_device_mesh(device) -> jax.sharding.Mesh:
    return meshes.make_mesh([device])


def attribute(encode_fn: Callable, params, xs, baselines, target: targets_mod.Target, method: str, keys, *,
              options: Mapping[str, Any] | None = None, batch_size: int | None = None,
              chunk_size: int | None = None, mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
    """Attribute N explicands against their baselines for K stacked targets with `method`.

    Args:
      encode_fn: pure `encode_fn(params, x (M, H, W, C)) -> (M, D)` (e.g. `model.encode_fn`;
        keep passing the same function object so its programs are reused).
      xs, baselines: (N, H, W, C).
      target: a stacked `Target`, direction (K, D) shared or (N, K, D) per explicand.
      method: a name of `cocoa_jax.methods.METHODS`; options: its options (defaults: the signature).
      keys: (N,) PRNG keys, one per explicand (e.g. `method_keys(key, method, N)`).
      batch_size: perturbed inputs per encoder call inside the method; None: all at once up to 64 px,
        larger images the batch `cocoa-jax explain` takes (`default_batch`), so memory is set by
        the batch and the model, not by the steps, samples or masks.
      chunk_size: explicands per program call, rounded up to a multiple of the mesh's devices
        (default `meshes.default_lanes_per_device()` per device: 1 on CPU, all N on
        accelerators); the last call is padded.
      mesh: shard each call's explicands over this mesh (`meshes.make_mesh()`; default: one
        device, this process's first).
    Returns: (N, K, H, W, C) for per-channel methods, (N, K, H, W) otherwise, as float32 NumPy.
    """
    methods_mod.get(method)
    options = methods_mod.check_options(method, dict(options or {}))
    xs = xs if isinstance(xs, jax.Array) else _device(np.asarray(xs))
    baselines = baselines if isinstance(baselines, jax.Array) else _device(np.asarray(baselines))
    _checks.check_array("xs", xs, ndim=4)
    _checks.check_same_shape("baselines", baselines, "xs", xs)
    n = xs.shape[0]
    if n == 0:
        raise ValueError("`xs` is empty")
    target = per_explicand(target, n)
    if jnp.shape(keys)[:1] != (n,):
        raise ValueError(f"`keys` must hold one key per explicand ({n}), got shape {jnp.shape(keys)}")
    mesh = _one_device_mesh(jax.local_devices()[0]) if mesh is None else mesh
    lanes = "default"  # ExplicandMap's: meshes.default_lanes_per_device()
    if chunk_size is not None:
        chunk = min(_checks.check_positive_int("chunk_size", chunk_size), n)
        lanes = -(-chunk // mesh.devices.size)
    if batch_size is None and max(xs.shape[1:3]) > 64:
        # Explicands at once: lanes per device (the default: 1 on CPU, all on accelerators) x devices.
        per_device = meshes.default_lanes_per_device() if lanes == "default" else lanes
        at_once = min(n, mesh.devices.size * (per_device or n))
        batch_size = default_batch(encode_fn, params, method, options, tuple(xs.shape[1:]),
                                   k=int(target.direction.shape[1]), lanes=at_once)
    program = program_mod.attribution_program(encode_fn, method, program_mod.hashable(options),
                                              program_mod.hashable(target.normalize),
                                              batch_size=_checks.check_optional_batch_size(batch_size), mesh=mesh,
                                              lanes_per_device=lanes)
    return np.asarray(program(params, xs, target.direction, keys, baselines), np.float32)


_DEFAULT_BATCHES: dict = {}


def default_batch(encode_fn: Callable, params, method: str, options: Mapping[str, Any] | None, image_shape, *,
                  k: int, lanes: int = 1) -> int | None:
    """The batch of `method` on (H, W, C) images for `k` stacked targets when none is given, as
    `cocoa-jax explain` chooses it: a probe of the compiled score / Jacobian of one batch
    (`cost.probe`), then the largest power of two <= 32 whose `lanes` programs fit a quarter of
    the free memory (`cost.default_batch_size`). None for a method with no pass count. Probed
    once per encoder, shape, targets, lanes and kind of pass in this process."""
    from cocoa_jax import cost

    if methods_mod.get(method).passes is None:
        return None
    gradient = cost.method_passes(method, options, image_shape).gradient > 0
    key = (encode_fn, tuple(image_shape), int(k), int(lanes), gradient)
    if key not in _DEFAULT_BATCHES:
        probe = cost.probe(encode_fn, params, image_shape, batch=4, k=k, gradient=gradient)
        _DEFAULT_BATCHES[key] = cost.default_batch_size(probe, lanes=lanes, gradient=gradient)
    return _DEFAULT_BATCHES[key]


# ---------------------------------------------------------------------------------------------
# The whole job


@dataclasses.dataclass
class Explanation:
    """What `explain_images` computed.

    Attributes:
      maps: {method: (N, K, H, W[, C])} attributions, K in `target_names` order.
      scores, baseline_scores: (N, K) target values at the explicands and at their baselines.
      completeness_gaps: {method: (N, K)} sum of attributions - (score - baseline_score), for the
        methods whose attributions are complete (`Method.complete`).
      baselines: (N, H, W, C) the baselines used.
      target_names, method_names: the K axis and the methods run.
      options: {method: options given} (unset ones take the signature defaults).
      seconds: {phase or method: wall seconds}: "targets" = blurring, encoding, targets and scores;
        a method = its compile (when not cached) + compute.
    """

    maps: dict[str, np.ndarray]
    scores: np.ndarray
    baseline_scores: np.ndarray
    completeness_gaps: dict[str, np.ndarray]
    baselines: np.ndarray
    target_names: tuple[str, ...]
    method_names: tuple[str, ...]
    options: dict[str, dict]
    seconds: dict[str, float]


def explain_images(model, images, *, corpus=None, foil=None, corpus_reps=None, foil_reps=None,
                   targets: Sequence[str] = DEFAULT_TARGETS, methods: Sequence[str] = DEFAULT_METHODS,
                   options: Mapping[str, Mapping[str, Any]] | None = None, key: jax.Array | None = None,
                   similarity: str = "cosine", baselines=None, batch_size: int | None = None,
                   chunk_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
                   on_method: Callable[[str, float], None] | None = None) -> Explanation:
    """Explain `images` with COCOA and the other targets, every method, in one call.

    Args:
      model: a `cocoa_jax.models.LoadedModel`, or any object with `encode_fn(params, x)` and
        `params`; images go in as the model expects them (preprocessed: `model.preprocess`).
      images: (N, H, W, C) explicands.
      corpus, foil: (M, H, W, C) images, encoded here; or pass `corpus_reps` / `foil_reps`
        (M, D) directly (e.g. text embeddings of a dual encoder: cross-modal COCOA). Targets
        that need them (cocoa, corpus, contrastive_label_free) refuse to run without.
      targets: names of `cocoa_jax.targets.TARGETS`, stacked into ONE target (every encoder pass
        serves all of them); methods: names of `cocoa_jax.methods.METHODS`.
      options: {method: options}; key: PRNG key of every random method (default key(0)).
      baselines: (N, H, W, C) (default: the paper's GaussianBlur(21, 5) of each explicand).
      batch_size, chunk_size, mesh: see `attribute`.
      on_method: called with (method, seconds) after each method (progress bars).
    """
    encode_fn, params = model.encode_fn, model.params
    images = np.asarray(images, np.float32)
    _checks.check_array("images", images, ndim=4)
    n = len(images)
    if n == 0:
        raise ValueError("`images` is empty")
    names = tuple(dict.fromkeys(methods))
    for name in names:
        methods_mod.get(name)
        program_mod.encode_fn_for(encode_fn, name)  # a model mode the encoder lacks (AttnLRP): refused before work
    for name in (options or {}):
        if name not in names:
            raise ValueError(f"`options` has method {name!r}, which is not in `methods` {list(names)}")
    options = {name: dict((options or {}).get(name, {})) for name in names}
    for name in names:  # token-level options (rollout, token drop) on an encoder without token access
        program_mod.token_access_for(encode_fn, name, options[name])
    key = jax.random.key(0) if key is None else key
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if corpus is not None and corpus_reps is not None:
        raise ValueError("pass `corpus` images or `corpus_reps`, not both")
    if foil is not None and foil_reps is not None:
        raise ValueError("pass `foil` images or `foil_reps`, not both")
    sets = [("explicands", images)]
    sets += [(name, np.asarray(value, np.float32)) for name, value in (("corpus", corpus), ("foil", foil))
             if value is not None]
    for name, value in sets[1:]:
        _checks.check_array(name, value, ndim=4)
        if len(value) == 0:
            raise ValueError(f"`{name}` is empty")
        if value.shape[1:] != images.shape[1:]:
            raise ValueError(f"`{name}` images must have the explicands' shape {images.shape[1:]}, "
                             f"got {value.shape[1:]}")
    if baselines is not None:
        baselines = np.asarray(baselines, np.float32)
        _checks.check_same_shape("baselines", baselines, "images", images)
    if baselines is None:
        # One program (eagerly: one per einsum; the same bits). Not done for the targets and scores:
        # jitted, XLA rewrites x / sqrt(y) as x * rsqrt(y) and their last bits change (measured).
        baselines = np.asarray(program_mod.apply_baseline(program_mod.PAPER_BASELINE, _device(images)))
    # Every image set in ONE encode call: one chunk shape, so one encoder program to trace and
    # compile instead of one per set size (each trace of a Flax encoder costs ~0.1-0.25 s on CPU).
    sets.insert(1, ("baselines", baselines))
    # Chunks bounded by the batch (at least 32 images: forward only) when one is set, so the
    # encoder's memory is set by the batch, never by the corpus or foil size.
    reps = encode_in_chunks(encode_fn, params, np.concatenate([v for _, v in sets]),
                            chunk_size=256 if batch_size is None else max(int(batch_size), 32))
    bounds = np.cumsum([0] + [len(v) for _, v in sets])
    reps = {name: reps[a:b] for (name, _), a, b in zip(sets, bounds[:-1], bounds[1:])}
    explicand_reps, baseline_reps = reps["explicands"], reps["baselines"]
    corpus_reps = reps.get("corpus", corpus_reps)
    foil_reps = reps.get("foil", foil_reps)
    target = per_explicand(targets_mod.build_stacked(tuple(targets), explicand_reps=explicand_reps,
                                                     corpus_reps=corpus_reps, foil_reps=foil_reps,
                                                     similarity=similarity), n)
    score = jax.vmap(lambda r, t: t(r))
    scores = np.asarray(score(_device(explicand_reps), target))
    baseline_scores = np.asarray(score(_device(baseline_reps), target))
    seconds["targets"] = time.perf_counter() - t0
    maps, gaps = {}, {}
    for name in names:
        t0 = time.perf_counter()
        maps[name] = attribute(encode_fn, params, images, baselines, target, name, method_keys(key, name, n),
                               options=options[name], batch_size=batch_size, chunk_size=chunk_size, mesh=mesh)
        if methods_mod.get(name).complete:
            sums = maps[name].reshape(*maps[name].shape[:2], -1).sum(-1)
            gaps[name] = sums - (scores - baseline_scores)
        seconds[name] = time.perf_counter() - t0
        if on_method is not None:
            on_method(name, seconds[name])
    return Explanation(maps, scores, baseline_scores, gaps, baselines, tuple(targets), names, options, seconds)


def explain_texts(model, texts, **kwargs):
    """`explain_images` for sentences: token attributions (`cocoa_jax.text.pipeline.explain_texts`, whose
    docstring lists the arguments); imported on first use so image work never loads the text modules."""
    from cocoa_jax.text.pipeline import explain_texts as explain

    return explain(model, texts, **kwargs)
