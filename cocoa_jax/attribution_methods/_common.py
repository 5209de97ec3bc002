"""Shared pieces of every attribution method: argument checks, target counting, batched gradient sums.

Each method explains `f`, a function of ONE input `x` (e.g. (H, W, C)) returning a scalar or a
(K,) vector of K targets; `num_targets` tells which (None or K) and checks the rest.

Performance note (measured on XLA CPU, docs/performance.md): a gradient inside a rolled `lax.scan`
ran 2.5-3.5x slower than the same work unrolled (XLA's CPU pass that puts convolutions in the form
its fast kernels take, `ConvCanonicalization`, walks only the entry computation, so a transposed
convolution in a loop body is emitted as a naive loop), so `sum_gradient_terms` unrolls its chunks
at trace time (forward-only chunks, `batching.sum_forward_terms`, are a rolled scan, which costs
nothing).

Memory of the unrolled chunks: XLA CPU's default scheduler is breadth-first ("concurrency
optimized"); it starts every operand-free instruction first, e.g. the index arrays XLA builds for
each chunk's max-pool gradient (select-and-scatter), so each unrolled chunk added ~0.37 GB that
stayed live from the start (ResNet-18 at 224 px, 4 images x 4 targets per chunk): memory grew
with the number of steps/samples. Its depth-first memory scheduler runs the chunks one after
the other: the same bits, the same speed (measured), XLA's temporaries close to one chunk's
(same model: 0.45 / 0.56 / 0.67 GB at 1 / 4 / 16 chunks, was 1.65 GB at 4); what still grows
with the chunks (their inputs, the program's size) is in docs/performance.md.
`SEQUENTIAL_SCHEDULER_FLAG` selects it: this module adds it to XLA_FLAGS when imported before
JAX's backends start (every `cocoa-jax` command, and a script that imports cocoa_jax before
computing); a flag the user set is kept. XLA reads the flag once per process, and a per-program
compiler option does not reach it (measured on jaxlib 0.10.2).
"""
from __future__ import annotations

import os
from typing import Callable, MutableMapping

import jax
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


def sequential_scheduler_in_effect(environ: MutableMapping[str, str] | None = None) -> bool:
    """True if XLA_FLAGS (of `environ`, default this process) select the depth-first scheduler:
    then a gradient sum's unrolled chunks hold about one chunk's memory, not every chunk's."""
    environ = os.environ if environ is None else environ
    return SEQUENTIAL_SCHEDULER_FLAG in environ.get("XLA_FLAGS", "").split()


def use_sequential_scheduler(environ: MutableMapping[str, str] | None = None) -> bool:
    """Put `SEQUENTIAL_SCHEDULER_FLAG` in XLA_FLAGS (bounded memory of unrolled gradient chunks,
    module docstring) while JAX's backends have not started; True if XLA_FLAGS now selects it
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
    """K if f(x) is (K,), None if it is a scalar; anything else is an error."""
    if not callable(f):
        raise TypeError(f"`f` must be callable, got {type(f).__name__}")
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
    """sum_i multiplier_i * grad f(point_i) over i in range(n), in unrolled chunks.

    make_chunk(start, stop) -> (points (B, *x.shape), multipliers broadcastable to
    (B, *x.shape)). Returns x.shape, or (K, *x.shape); with `squares`, also the sum of the
    squared terms (the running moments of `adaptive`): a pair.
    """
    batched_jacobian = jax.vmap(jacobian(f, k))
    total = None
    total_sq = None
    # Unrolled on purpose: a gradient inside a rolled scan is 2.5-3.5x slower on XLA CPU; memory is
    # one chunk's with the depth-first scheduler (`SEQUENTIAL_SCHEDULER_FLAG`, module docstring).
    for start, stop in batching.chunk_ranges(n, batch_size):
        points, multipliers = make_chunk(start, stop)
        pad = batching.padding_for(mesh, stop - start)
        multipliers = jnp.broadcast_to(multipliers, (stop - start,) + multipliers.shape[1:])
        points, multipliers = batching.pad_rows(points, pad), batching.pad_rows(multipliers, pad, 0.0)
        grads = batched_jacobian(batching.shard_batch(points, mesh))  # (B, [K,] *x.shape)
        if k is not None:
            multipliers = jnp.expand_dims(multipliers, 1)
        term = jnp.sum(grads * multipliers, axis=0)
        total = term if total is None else total + term
        if squares:
            square = jnp.sum((grads * multipliers) ** 2, axis=0)
            total_sq = square if total_sq is None else total_sq + square
    return (total, total_sq) if squares else total


def broadcast_to_rank(values: jax.Array, rank: int) -> jax.Array:
    """(B,) -> (B, 1, ..., 1) with `rank` trailing singleton axes."""
    return values.reshape(values.shape + (1,) * rank)
