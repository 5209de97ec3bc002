"""Shared pieces of every attribution method: argument checks, target counting, batched gradient sums.

Each method explains `f`, a function of ONE input `x` (e.g. (H, W, C)) returning a scalar or a
(K,) vector of K targets; `num_targets` tells which (None or K) and checks the rest.

Gradient sums, memory and speed (measured on XLA CPU, docs/performance.md): `sum_gradient_terms`
runs its chunks in a rolled `lax.fori_loop`, so a gradient method's program holds one chunk's
gradient whatever the number of steps or samples. Unrolled at trace time (as until 2026-12-07)
the program, its compile and its code grew by a chunk per chunk (CLIP ViT-B/16 at 224 px, one
point per chunk: ~0.15 GB of peak RSS per chunk, 2.8 GB at 8 samples, >= 7.1 GiB for explain's
defaults). A rolled loop used to be 3x slower on ResNets: XLA CPU puts a convolution whose kernel
is laid out (spatial, out, in), as JAX's input-gradient rule makes it, into the form its fast
kernels take (`ConvCanonicalization`) only in the entry computation, and ran the ones inside a
loop body as naive loops. `canonical_conv_gradients` writes those gradients with the kernel
transposed as data instead, so the loop runs as fast as the unrolled sum (ResNet-18) or faster.

`SEQUENTIAL_SCHEDULER_FLAG` (XLA CPU's depth-first memory scheduler) was what kept unrolled
chunks from all being live at once; the rolled loop no longer needs it, and it is kept for the
other programs (same bits, same speed measured): this module adds it to XLA_FLAGS when imported
before JAX's backends start (every `cocoa-jax` command), a flag the user set is kept. XLA reads
the flag once per process (jaxlib 0.10.2).
"""
from __future__ import annotations

import functools
import os
from typing import Callable, MutableMapping

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, batching

DEFAULT_RISE_BATCH_SIZE = 100  # masks per forward batch; 64-200 measured flat on CPU
SCHEDULER_FLAG_NAME = "--xla_cpu_enable_concurrency_optimized_scheduler"
SEQUENTIAL_SCHEDULER_FLAG = SCHEDULER_FLAG_NAME + "=false"  # XLA CPU's depth-first memory scheduler


def with_sequential_scheduler(flags: str) -> str:
    """XLA_FLAGS `flags` with `SEQUENTIAL_SCHEDULER_FLAG` added, unless they already choose a scheduler."""
    if any(f.split("=")[0] == SCHEDULER_FLAG_NAME for f in flags.split()):
        return flags
    return " ".join(flags.split() + [SEQUENTIAL_SCHEDULER_FLAG])


def use_sequential_scheduler(environ: MutableMapping[str, str] | None = None) -> bool:
    """Put `SEQUENTIAL_SCHEDULER_FLAG` in XLA_FLAGS (the depth-first scheduler, kept for every
    program: module docstring) while JAX's backends have not started; True if XLA_FLAGS now selects it
    (a scheduler the user chose is kept). Acts for this process and the processes it starts."""
    from jax._src import xla_bridge

    environ = os.environ if environ is None else environ
    if environ is os.environ and xla_bridge.backends_are_initialized():
        return SEQUENTIAL_SCHEDULER_FLAG in os.environ.get("XLA_FLAGS", "").split()
    environ["XLA_FLAGS"] = with_sequential_scheduler(environ.get("XLA_FLAGS", ""))
    return SEQUENTIAL_SCHEDULER_FLAG in environ["XLA_FLAGS"].split()


use_sequential_scheduler()


# ----------------------------------------------------------------------------- checks


def num_targets(f: Callable, x: jax.Array) -> int | None:
    """K if f(x) is (K,), None if it is a scalar; anything else is an error.

    An f that states its `output_shape` (`targets.explain_fn` does) is taken at its word: tracing
    f here would trace the whole encoder once more per method (~0.1-0.5 s on CPU each time)."""
    if not callable(f):
        raise TypeError(f"`f` must be callable, got {type(f).__name__}")
    stated = getattr(f, "output_shape", None)
    if isinstance(stated, tuple) and len(stated) <= 1:
        return stated[0] if stated else None
    out = jax.eval_shape(f, x)
    if not hasattr(out, "shape") or out.ndim > 1:
        raise ValueError(
            f"`f` must map one input {tuple(x.shape)} to a scalar or a (K,) vector, got "
            f"{getattr(out, 'shape', type(out).__name__)}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"`f` must return floating values, got dtype {out.dtype}")
    return None if out.ndim == 0 else out.shape[0]


def check_input(x, *, rank: int | None = None) -> jax.Array:
    _checks.check_array("x", x, ndim=rank)
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def check_baseline(name: str, baseline, x: jax.Array) -> jax.Array:
    _checks.check_array(name, baseline)
    _checks.check_same_shape(name, baseline, "x", x)
    return jnp.asarray(baseline, x.dtype)


def antithetic_draws(name: str, n: int, antithetic) -> int:
    """Independent draws behind n samples: n, or n // 2 antithetic pairs (n must then be even)."""
    if not isinstance(antithetic, (bool, np.bool_)):
        raise TypeError(f"`antithetic` must be a bool, got {type(antithetic).__name__}")
    if antithetic and n % 2:
        raise ValueError(f"`{name}` must be even with antithetic=True (samples come in pairs), got {n}")
    return n // 2 if antithetic else n


def check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return bool(value)


def check_stdev(stdev) -> float:
    if (isinstance(stdev, bool) or not isinstance(stdev, (int, float, np.integer, np.floating))
            or not np.isfinite(stdev) or stdev < 0):
        raise ValueError(f"`stdev` must be a finite number >= 0, got {stdev!r}")
    return float(stdev)


# ----------------------------------------------------------------------------- gradient sums


def jacobian(f: Callable, k: int | None) -> Callable:
    """Gradient of f at one input: x.shape, or (K, *x.shape) for K targets.

    For K targets, reverse mode runs one forward pass and K vectorised backward passes.
    """
    return jax.grad(f) if k is None else jax.jacrev(f)


def sum_gradient_terms(f, k, n, batch_size, mesh, make_chunk, *, squares: bool = False):
    """sum_i multiplier_i * grad f(point_i) over i in range(n), in chunks of `batch_size` points.

    make_chunk(start, stop) -> (points (B, *x.shape), multipliers broadcastable to
    (B, *x.shape)). Returns x.shape, or (K, *x.shape); with `squares`, also the sum of the
    squared terms (the running moments of `adaptive`): a pair.

    The chunks of `batch_size` points run in a rolled `lax.fori_loop` (a shorter last chunk once
    after it), summed in chunk order: the program holds one chunk's gradient whatever n is, so
    its memory and compile are set by the batch and the model (module docstring). f's
    convolutions are differentiated with `canonical_conv_gradients` (fast inside the loop).
    """
    ranges = batching.chunk_ranges(n, batch_size)
    size = ranges[0][1] - ranges[0][0]
    n_full = sum(stop - start == size for start, stop in ranges)
    step = _chunk_step(canonical_conv_gradients(f), k, mesh, squares)
    total = None
    if n_full > 1:
        total = _rolled_sum(step, make_chunk, n_full, size)
        ranges = ranges[n_full:]  # a shorter last chunk, once
    for start, stop in ranges:
        term = step(*make_chunk(start, stop))
        total = term if total is None else jax.tree.map(jnp.add, total, term)
    return total if squares else total[0]


def _chunk_step(f, k, mesh, squares):
    """(points (B, ...), multipliers) -> (sum of the B terms, sum of their squares or None)."""
    batched_jacobian = jax.vmap(jacobian(f, k))

    def step(points, multipliers):
        b = points.shape[0]
        pad = batching.padding_for(mesh, b)
        multipliers = jnp.broadcast_to(multipliers, (b,) + multipliers.shape[1:])
        points, multipliers = batching.pad_rows(points, pad), batching.pad_rows(multipliers, pad, 0.0)
        grads = batched_jacobian(batching.shard_batch(points, mesh))  # (B, [K,] *x.shape)
        if k is not None:
            multipliers = jnp.expand_dims(multipliers, 1)
        terms = grads * multipliers
        return jnp.sum(terms, axis=0), (jnp.sum(terms ** 2, axis=0) if squares else None)

    return step


def _rolled_sum(step, make_chunk, n_chunks, size):
    """The first n_chunks chunks of `size` points summed in a rolled loop, in chunk order (the
    unrolled sum's order). Their points are made at once (n_chunks x size inputs, no activations)."""
    points, multipliers = make_chunk(0, n_chunks * size)
    multipliers = jnp.broadcast_to(multipliers, points.shape[:1] + multipliers.shape[1:])
    points = points.reshape((n_chunks, size) + points.shape[1:])
    multipliers = multipliers.reshape((n_chunks, size) + multipliers.shape[1:])
    first = jax.eval_shape(step, points[0], multipliers[0])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    return jax.lax.fori_loop(0, n_chunks, lambda i, total: jax.tree.map(
        jnp.add, total, step(points[i], multipliers[i])), zeros)


# ----------------------------------------------------------------------------- convolution gradients


def canonical_conv_gradients(f: Callable) -> Callable:
    """f with the same values, whose convolutions' input gradients are convolutions in the form
    XLA CPU's fast kernels take: the flipped kernel is transposed (in <-> out features) as data
    and the gradient convolution keeps the forward's dimension layout (NHWC / HWIO / NHWC for
    Flax), instead of JAX's rule, which swaps the kernel's feature axes in the dimension numbers.
    XLA CPU brings such swapped convolutions to its fast form (`ConvCanonicalization`) only in
    the program's entry computation; inside a loop body they ran as naive loops, 3x slower
    (docs/performance.md). Kernel gradients (unused here: only d/dx is taken) keep JAX's rule.
    f without convolutions is returned as is."""
    def has_conv(jaxpr) -> bool:
        return any(eqn.primitive is jax.lax.conv_general_dilated_p
                   or any(map(has_conv, jax.extend.core.jaxprs_in_params(eqn.params))) for eqn in jaxpr.eqns)

    def wrapped(x):
        closed, out_shape = jax.make_jaxpr(f, return_shape=True)(x)
        if not has_conv(closed.jaxpr):
            return f(x)
        out = _eval_with_canonical_convs(closed.jaxpr, closed.consts, [x])
        return jax.tree.unflatten(jax.tree.structure(out_shape), out)

    return wrapped


_INLINED_CALLS = ("pjit", "jit", "closed_call", "core_call")


def _eval_with_canonical_convs(jaxpr, consts, args):
    """`jax.core.eval_jaxpr` with each conv_general_dilated replaced by `_canonical_conv` and
    nested jit calls inlined (their convolutions too); other primitives bound as they are."""
    env = {}
    read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if eqn.primitive is jax.lax.conv_general_dilated_p:
            outs = [_canonical_conv(_ConvParams(eqn.params))(*invals)]
        elif eqn.primitive.name in _INLINED_CALLS and isinstance(eqn.params.get("jaxpr"), jax.extend.core.ClosedJaxpr):
            inner = eqn.params["jaxpr"]
            outs = _eval_with_canonical_convs(inner.jaxpr, inner.consts, invals)
        else:
            outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


class _ConvParams:
    """A conv_general_dilated equation's parameters, hashable (one custom_vjp per kind of conv)."""

    def __init__(self, params):
        self.params = dict(params)
        self.key = tuple(sorted((k, repr(v)) for k, v in self.params.items()))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _ConvParams) and self.key == other.key


@functools.lru_cache(maxsize=256)
def _canonical_conv(conv: _ConvParams) -> Callable:
    """(lhs, rhs) -> the convolution of `conv`'s parameters, with the input gradient above."""
    params = conv.params
    forward = lambda lhs, rhs: jax.lax.conv_general_dilated_p.bind(lhs, rhs, **params)

    @jax.custom_vjp
    def convolve(lhs, rhs):
        return forward(lhs, rhs)

    def fwd(lhs, rhs):
        return forward(lhs, rhs), (lhs, rhs)

    def bwd(residuals, g):
        lhs, rhs = residuals
        if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
            return jax.vjp(forward, lhs, rhs)[1](g)  # grouped: JAX's own rule for both
        _, kernel_vjp = jax.vjp(lambda w: forward(lhs, w), rhs)
        return _input_gradient(g, lhs, rhs, params), kernel_vjp(g)[0]

    convolve.defvjp(fwd, bwd)
    return convolve


def _input_gradient(g, lhs, rhs, params):
    """d(conv)/d(lhs) applied to g, as a convolution of g with the flipped, feature-transposed
    kernel in the forward's own dimension layout (ungrouped convolutions)."""
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    spatial = lambda spec: spec[2:]
    in_sizes = [lhs.shape[d] for d in spatial(lhs_spec)]
    window = [rhs.shape[d] for d in spatial(rhs_spec)]
    out_sizes = [g.shape[d] for d in spatial(out_spec)]
    strides, lhs_dil, rhs_dil = params["window_strides"], params["lhs_dilation"], params["rhs_dilation"]
    dilated = lambda size, factor: 0 if size == 0 else (size - 1) * factor + 1
    padding = []
    for i, (low, _) in enumerate(params["padding"]):
        before = dilated(window[i], rhs_dil[i]) - low - 1
        after = dilated(in_sizes[i], lhs_dil[i]) + dilated(window[i], rhs_dil[i]) - 1 - dilated(out_sizes[i], strides[i]) - before
        padding.append((before, after))
    kernel = jax.lax.rev(rhs, tuple(spatial(rhs_spec)))
    perm = list(range(rhs.ndim))
    perm[rhs_spec[0]], perm[rhs_spec[1]] = rhs_spec[1], rhs_spec[0]
    kernel = jnp.transpose(kernel, perm).astype(g.dtype)
    out = jax.lax.conv_general_dilated(
        g, kernel, window_strides=lhs_dil, padding=padding, lhs_dilation=strides, rhs_dilation=rhs_dil,
        dimension_numbers=jax.lax.ConvDimensionNumbers(out_spec, rhs_spec, lhs_spec),
        precision=params["precision"], preferred_element_type=params["preferred_element_type"])
    return out.astype(lhs.dtype)


def broadcast_to_rank(values: jax.Array, rank: int) -> jax.Array:
    """(B,) -> (B, 1, ..., 1) with `rank` trailing singleton axes."""
    return values.reshape(values.shape + (1,) * rank)
