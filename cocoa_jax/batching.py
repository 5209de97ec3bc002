"""Padding, chunking and streaming sums of perturbation batches: the ground floor of every method.

Pure JAX, nothing that touches devices of other processes or the network: attribution
methods, `metrics` and the explicand map (`meshes`) build on it.

* `pad_to_multiple`, `pad_rows`, `padding_for`: make a batch split evenly over a mesh.
* `chunk_ranges`, `map_in_batches`: bounded-memory passes over a batch.
* `shard_batch`: split a batch of perturbed inputs over a mesh inside a program.
* `sum_forward_terms`: the one streaming sum of forward-only methods (RISE, Occlusion,
  KernelSHAP, LIME); gradient methods share `attribution_methods._common.sum_gradient_terms`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "pad_to_multiple",
    "pad_rows",
    "padding_for",
    "chunk_ranges",
    "shard_batch",
    "map_in_batches",
    "sum_forward_terms",
]


def pad_to_multiple(array, multiple: int, axis: int = 0):
    """Pad `array` along `axis` to a multiple of `multiple` by repeating its last entry.

    Repeating a real entry (rather than zeros) keeps padded explicands valid inputs: no
    zero image whose representation has no direction, no NaN in a padded lane.
    Returns (padded, original_length).
    """
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple <= 0:
        raise ValueError(f"`multiple` must be a positive integer, got {multiple!r}")
    shape = tuple(array.shape) if hasattr(array, "shape") else np.shape(array)
    if not shape:
        raise ValueError("`array` must have at least one axis to pad, got a scalar")
    axis = axis % len(shape)
    n = shape[axis]
    if n == 0:
        raise ValueError(f"`array` must not be empty along axis {axis}, got shape {shape}")
    extra = (-n) % multiple
    if not extra:
        return array, n
    index = np.concatenate([np.arange(n), np.full(extra, n - 1)])
    if isinstance(array, jax.Array):
        return jnp.take(array, jnp.asarray(index), axis=axis), n
    return np.take(np.asarray(array), index, axis=axis), n


def pad_rows(array: jax.Array, count: int, value: float | None = None) -> jax.Array:
    """Append `count` rows along axis 0: copies of the last row, or `value`."""
    if count == 0:
        return array
    extra = jnp.repeat(array[-1:], count, axis=0)
    return jnp.concatenate([array, extra if value is None else jnp.full_like(extra, value)])


def padding_for(mesh: Mesh | None, batch: int) -> int:
    """Rows to add so `batch` splits evenly over the mesh (padded rows get zero weight)."""
    return 0 if mesh is None else -batch % mesh.size


def chunk_ranges(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    """Static (start, stop) index ranges covering range(n) in chunks of batch_size."""
    size = n if batch_size is None else min(batch_size, n)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def shard_batch(batch: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Split a batch of perturbed inputs along its leading axis over every device of `mesh`.

    The constraint is a hint to the partitioner (an Auto-axes view of `mesh`, whatever axis
    types it was made with): the encoder's batch axis is split, and sums over samples
    become all-reduces. None: unchanged.
    """
    if mesh is None:
        return batch
    auto = Mesh(mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))
    return jax.lax.with_sharding_constraint(batch, NamedSharding(auto, PartitionSpec(tuple(mesh.axis_names))))


def map_in_batches(fn, inputs: jax.Array, batch_size: int | None, multiple: int = 1) -> jax.Array:
    """fn over the leading axis of inputs in equal chunks of at most batch_size.

    The chunk size is ceil(n / n_chunks) rounded up to `multiple` (the device count when
    sharded), so padding (repeats of the last input, dropped from the output) stays small.
    Chunks run in a rolled `lax.map` (cheap for forward-only work).
    """
    n = inputs.shape[0]
    n_chunks = 1 if batch_size is None or batch_size >= n else -(-n // batch_size)
    size = -(-n // n_chunks)
    size = -(-size // multiple) * multiple
    padded = pad_rows(inputs, n_chunks * size - n)
    if n_chunks == 1:
        return fn(padded)[:n]
    out = jax.lax.map(fn, padded.reshape((n_chunks, size) + inputs.shape[1:]))
    return out.reshape((n_chunks * size,) + out.shape[2:])[:n]


def sum_forward_terms(f: Callable, n: int, batch_size: int, mesh: Mesh | None, rows_of: Callable,
                      inputs_of: Callable, terms: Callable, *, start: int = 0):
    """Sum over samples start..n-1 of `terms` of f's scores on perturbed inputs, chunk by chunk.

    The streaming loop of every forward-only method: nothing of size n is held in memory.
    rows_of(indices (B,) int) -> (B, ...) what defines each sample (a mask, a coalition); the
      chunk is padded with all-zero rows to a multiple of the mesh size.
    inputs_of(rows) -> (B', *x.shape) perturbed inputs, evaluated by `jax.vmap(f)` with the
      batch split over `mesh` (`shard_batch`).
    terms(rows (B', ...), inputs, scores (B',) or (B', K), valid (B',) bool) -> a pytree of
      sums over the chunk; padded rows have valid False (and all-zero rows).
    Chunks of min(batch_size, n - start) samples run in a rolled `lax.scan` (forward only, so
    rolling costs nothing on XLA CPU, unlike gradients), a shorter remainder once.
    """

    def chunk(indices):
        b = indices.shape[0]
        rows = pad_rows(rows_of(indices), padding_for(mesh, b), 0.0)
        inputs = inputs_of(rows)
        scores = jax.vmap(f)(shard_batch(inputs, mesh))
        return terms(rows, inputs, scores, jnp.arange(rows.shape[0]) < b)

    count = n - start
    size = min(count, batch_size)
    n_full = count // size
    full = start + jnp.arange(n_full * size).reshape(n_full, size)
    shapes = jax.eval_shape(chunk, full[0])
    zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
    totals, _ = jax.lax.scan(lambda acc, idx: (add(acc, chunk(idx)), None), zeros, full)
    if count % size:
        totals = add(totals, chunk(jnp.arange(start + n_full * size, n)))
    return totals
