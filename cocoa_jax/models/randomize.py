"""Model-parameter randomisation for the sanity checks of attributions (Adebayo et al., 2018).

`randomize_params` is the official COCOA `--randomize-model` scheme: every parameter tensor
re-drawn from a normal with that tensor's own mean and standard deviation, truncated to the
tensor's own [min, max]. `cascading_randomizations` randomises the blocks one after another,
from the output down, keeping the earlier randomisations (the cascading test).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def randomize_leaf(leaf: jax.Array, key: jax.Array) -> jax.Array:
    """One tensor re-drawn from N(mean, std^2) truncated to [min, max] of the tensor itself.

    std is the unbiased one (ddof 1, torch's `Tensor.std()` default); a constant tensor
    (std 0, including one-element tensors) stays as it is; integer leaves are returned unchanged.
    """
    leaf = jnp.asarray(leaf)
    if not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.size < 2:
        return leaf
    values = leaf.astype(jnp.float32)
    mean, std = jnp.mean(values), jnp.std(values, ddof=1)
    low, high = jnp.min(values), jnp.max(values)
    safe = jnp.where(std > 0, std, 1.0)
    unit = jax.random.truncated_normal(key, (low - mean) / safe, (high - mean) / safe, leaf.shape, jnp.float32)
    drawn = jnp.clip(mean + safe * unit, low, high)  # clip: rounding at the ends only
    return jnp.where(std > 0, drawn, values).astype(leaf.dtype)


def randomize_params(params: Any, key: jax.Array) -> Any:
    """Every floating leaf of `params` re-drawn by `randomize_leaf`; leaf i (in
    `jax.tree_util.tree_leaves` order) uses `jax.random.split(key, n_leaves)[i]`."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if not leaves:
        return params
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [randomize_leaf(leaf, k) for leaf, k in zip(leaves, keys)])


def _blocks_of(params: Mapping) -> tuple[list[str], bool]:
    """Top-level block names in definition order, and whether `params` is a Flax variables dict."""
    if not isinstance(params, Mapping):
        raise TypeError(f"`params` must be a mapping of blocks, got {type(params).__name__}")
    flax_vars = "params" in params and isinstance(params["params"], Mapping)
    blocks = list(params["params"] if flax_vars else params)
    if not blocks:
        raise ValueError("`params` has no blocks to randomise")
    return blocks, flax_vars


def cascading_randomizations(params: Mapping, key: jax.Array, order: Sequence[str] | None = None
                             ) -> list[tuple[str, Any]]:
    """Params with the blocks randomised cumulatively from the top (output) down.

    Blocks are the top-level entries of `params`; for Flax variables ({"params": ...,
    "batch_stats": ...}) the entries of "params", and a block's entries in the other
    collections (e.g. its BatchNorm statistics) are randomised with it.
    order: block names from the top down (a permutation of the blocks; None: the reverse of
    the definition order, i.e. output block first).
    Step j (named after its block) has blocks order[0..j] randomised; block b always uses
    `jax.random.split(key, n_blocks)[i]` with i its index in the definition order, so a
    block's random values are the same in every later step.
    Returns [(block_name, params), ...], one entry per block.
    """
    blocks, flax_vars = _blocks_of(params)
    if order is None:
        order = blocks[::-1]
    order = list(order)
    if sorted(order) != sorted(blocks) or len(set(order)) != len(order):
        raise ValueError(f"`order` must be a permutation of the blocks {blocks}, got {order}")
    block_keys = dict(zip(blocks, jax.random.split(key, len(blocks))))
    current = {name: dict(collection) for name, collection in params.items()} if flax_vars else dict(params)
    steps = []
    for name in order:
        if flax_vars:
            for c, collection in enumerate(sorted(current)):
                if name in current[collection]:
                    sub_key = jax.random.fold_in(block_keys[name], c)
                    current[collection][name] = randomize_params(params[collection][name], sub_key)
            snapshot = {collection: dict(values) for collection, values in current.items()}
        else:
            current[name] = randomize_params(params[name], block_keys[name])
            snapshot = dict(current)
        steps.append((name, snapshot))
    return steps
