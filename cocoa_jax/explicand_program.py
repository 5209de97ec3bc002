"""The explicand program: how N explicands are encoded and attributed, written once for every
front end (`pipeline.explain_images` / `pipeline.attribute`, localize, augmentations, the sweep,
the benchmarks).

Explicand i's maps are `methods.attribute(method, explain_fn(encode, Target(direction_i,
normalize)), x_i, baseline_i, key_i, batch_size=..., **options)`, vmapped over explicands and
sharded over a mesh's devices (`meshes.ExplicandMap`). What differs between front ends is
passed in as values, so each keeps its numbers:

* the baseline: a rule `x -> baseline` (`GaussianBlur(kernel_size, sigma)`; the paper's is
  `PAPER_BASELINE`), applied inside the program per explicand (the sweep, from its config), or
  baselines given as an argument (explain: the rule applied to the batch beforehand, or the
  user's own);
* the encode chunking: a rule `n -> images per encoder call` (`PowerOfTwoChunks` for explain,
  `DeviceChunks` for the sweep);
* the keys: ONE rule, `method_keys(key, method, n)`; a front end picks the root key (explain:
  the user's key; the sweep: `fold_in(key(seed), class_id)` per unit).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from cocoa_jax import baselines as baselines_mod, batching, meshes, methods as methods_mod, targets as targets_mod
from cocoa_jax.attribution_methods import token_drop


# ---------------------------------------------------------------------------------------------
# Parameters


@dataclasses.dataclass(frozen=True)
class GaussianBlur:
    """The blurred explicand as baseline: `baselines.gaussian_blur(x, kernel_size, sigma)`."""

    kernel_size: int = 21
    sigma: float = 5.0

    def __call__(self, x: jax.Array) -> jax.Array:
        return baselines_mod.gaussian_blur(x, self.kernel_size, self.sigma)


PAPER_BASELINE = GaussianBlur(21, 5.0)  # the paper's GaussianBlur(21, 5)


@dataclasses.dataclass(frozen=True)
class PowerOfTwoChunks:
    """n images in chunks of the next power of two >= n (at least `smallest`), at most `largest`:
    a handful of shapes (compilations) serves every n."""

    largest: int = 256
    smallest: int = 8

    def __call__(self, n: int) -> int:
        size = self.smallest
        while size < n and size < self.largest:
            size *= 2
        return min(size, self.largest)


@dataclasses.dataclass(frozen=True)
class DeviceChunks:
    """n images in equal chunks of at most `largest`, rounded up to a multiple of `quantum` x
    `devices` (to `devices` below one quantum): the padding stays < `quantum` images per device and
    at most largest / (quantum x devices) shapes are compiled."""

    largest: int
    devices: int = 1
    quantum: int = 32

    def __call__(self, n: int) -> int:
        step = self.quantum * self.devices
        n_chunks = -(-n // self.largest)
        size = -(-n // n_chunks)
        return -(-size // step) * step if size > step else -(-size // self.devices) * self.devices


def method_keys(key: jax.Array, method: str, n: int) -> jax.Array:
    """The key rule: explicand i of `method` draws from `split(fold_in(key, stream_id(method)), n)[i]`
    (each method its own stream, `methods.stream_id`: draws depend neither on the chunking, the
    device count nor on which other methods run)."""
    return _method_keys_jit(key, np.uint32(methods_mod.stream_id(method)), n)


@functools.partial(jax.jit, static_argnums=2)
def _method_keys_jit(key, stream, n: int):
    # Threefry is exact integer arithmetic, so jitted or eager give the same bits; one program
    # for every method (the stream id an argument) instead of two eager ones per method.
    return jax.random.split(jax.random.fold_in(key, stream), n)


# ---------------------------------------------------------------------------------------------
# Encoding


@functools.lru_cache(maxsize=None)
def _jit(fn):
    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _encode_map(encode_fn, mesh) -> meshes.ExplicandMap:
    return meshes.ExplicandMap(lambda params, xb: encode_fn(params, xb), mesh, in_axes=(None, 0), vectorized=True)


def encode(encode_fn: Callable, params, images, chunks: Callable[[int], int], *,
           mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
    """(N, H, W, C) -> (N, D) float32 with `encode_fn(params, x)`, `chunks(N)` images per call,
    the last chunk padded (repeating its last image) to the same shape; sharded over `mesh`
    (replicated `params`), or on the default device without one."""
    n = len(images)
    size = chunks(n)
    run = _encode_map(encode_fn, mesh) if mesh is not None else _jit(encode_fn)
    out = []
    for start in range(0, n, size):
        chunk = np.asarray(images[start:start + size], np.float32)
        real = chunk.shape[0]
        chunk, _ = batching.pad_to_multiple(chunk, size)
        # jax.device_put, not jnp.asarray: no `stage` program compiled per shape and dtype.
        out.append(np.asarray(run(params, chunk if mesh is not None else jax.device_put(chunk)))[:real])
    return np.concatenate(out).astype(np.float32)


def apply_baseline(baseline: Callable, images) -> jax.Array:
    """`baseline` of a batch (N, H, W, C) as one compiled program (the same bits as eagerly)."""
    return _jit(baseline)(images)


# ---------------------------------------------------------------------------------------------
# Attribution


def hashable(value):
    """Options as a cache key: lists and dicts to (sorted) tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return value


def attribute_one(encode: Callable[[jax.Array], jax.Array], target: targets_mod.Target, method: str, x, baseline,
                  key, /, *, batch_size: int | None = None, mesh: jax.sharding.Mesh | None = None, **options):
    """The explicand step: `method` on the target's score of the encoding,
    `explain_fn(encode, target)`, at `x` against `baseline` -> (K, H, W[, C]) (no K axis for an
    unstacked target). `encode`: images (M, H, W, C) -> (M, D); mesh: shard the method's perturbed
    batches (one explicand over several devices). Positional-only, so `options` may hold any
    name (IG's `method` option)."""
    return methods_mod.attribute(method, targets_mod.explain_fn(encode, target), x, baseline, key,
                                 batch_size=batch_size, mesh=mesh, **options)


# Which ported models have each mode, for the refusal's hint.
_MODE_MODELS = {"lrp": "the ported ViTs: dino_vit, dinov2_vit, clip_vit, siglip, siglip2_naflex(_vision), digits_vit",
                "relevance": "the ResNets: resnet18..152, simclr_resnet50, simsiam_cifar_resnet18, "
                             "resnet18_classifier, and the digits encoder (digits)"}


def encode_fn_for(encode_fn: Callable, method: str) -> Callable:
    """The encode function `method` runs on: `encode_fn` itself, or, for a method with a
    `model_mode` (AttnLRP: "lrp", LRP: "relevance"), the same model in that mode, `encode_fn.modes[mode]` (set by
    `models.make_loaded` for the architectures that have it). Read once per program."""
    mode = methods_mod.get(method).model_mode
    if mode is None:
        return encode_fn
    modes = getattr(encode_fn, "modes", None) or {}
    if mode not in modes:
        raise ValueError(f"method {method!r} needs an encoder with a {mode!r} mode ({_MODE_MODELS.get(mode, 'see docs/methods.md')}, "
                         f"loaded with cocoa_jax.models); this encoder has {sorted(modes) or 'no modes'}")
    return modes[mode]


def token_access_for(encode_fn: Callable, method: str, options: dict):
    """`encode_fn.token_access` when `method` with `options` reads a ViT's tokens, else None; an
    encoder without token access is refused, naming the method."""
    if not methods_mod.reads_tokens(method, options):
        return None
    access = getattr(encode_fn, "token_access", None)
    if access is None:
        raise ValueError(f"method {method!r} with options {options} needs a ViT encoder with token access (the "
                         f"ported dino_vit, dinov2_vit, clip_vit loaded with cocoa_jax.models); this encoder has none")
    return access


def explicand_fn(encode_fn: Callable, method: str, options: tuple, normalize, batch_size: int | None,
                 baseline: Callable | None) -> Callable:
    """ONE explicand: `(params, x, direction (K, D), key[, b]) -> maps (K, H, W[, C])`. With a
    `baseline` rule the baseline is `baseline(x)`; without, `b` is given. A method whose options
    read the ViT's tokens (`methods.reads_tokens`: token drop, rollout) explains the
    `token_drop.TokenScorer` built from `encode_fn.token_access`."""
    opts = dict(options)
    access = token_access_for(encode_fn, method, opts)

    def one(params, x, direction, key, b=None):
        b = baseline(x) if baseline is not None else b
        if access is not None:
            f = token_drop.token_scorer(access, params, targets_mod.Target(direction, normalize))
            return methods_mod.attribute(method, f, x, b, key, batch_size=batch_size, **opts)
        return attribute_one(lambda xb: encode_fn(params, xb), targets_mod.Target(direction, normalize), method, x, b,
                             key, batch_size=batch_size, **opts)

    return one


@functools.lru_cache(maxsize=128)
def attribution_program(encode_fn: Callable, method: str, options: tuple, normalize, *,
                        batch_size: int | None = None, baseline: Callable | None = None,
                        mesh: jax.sharding.Mesh, lanes_per_device: Any = "default",
                        gather: bool = True) -> meshes.ExplicandMap:
    """The explicand program, compiled per call shape and cached per parameters.

    Called as `program(params, xs (N, H, W, C), directions (N, K, D), keys (N,))` with a
    `baseline` rule, or `program(params, xs, directions, keys, baselines (N, H, W, C))` without;
    returns (N, K, H, W[, C]) maps, replicated (`gather`) or left sharded over `mesh`.

    Args:
      encode_fn: pure `encode_fn(params, x (M, H, W, C)) -> (M, D)` (the same object each time, so
        programs are reused); method, options: a method of `methods.METHODS` and its options as
        `hashable(options)`; normalize: the stacked target's per-column cosine flags.
      batch_size: perturbed inputs per encoder call inside the method.
      baseline: the baseline rule (e.g. `GaussianBlur(...)`), or None for given baselines.
      mesh, lanes_per_device, gather: see `meshes.ExplicandMap`.
    """
    one = explicand_fn(encode_fn_for(encode_fn, method), method, options, normalize, batch_size, baseline)
    in_axes = (None, 0, 0, 0) if baseline is not None else (None, 0, 0, 0, 0)
    return meshes.ExplicandMap(one, mesh, in_axes=in_axes, lanes_per_device=lanes_per_device, gather=gather)
