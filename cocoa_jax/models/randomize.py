"""Model-parameter randomisation for the sanity checks of attributions (Adebayo et al., 2018).

`randomize_params` is the official COCOA `--randomize-model` scheme: every parameter tensor
re-drawn from a normal with that tensor's own mean and standard deviation, truncated to the
tensor's own [min, max]. `cascading_randomizations` randomises the blocks one after another,
from the output down, keeping the earlier randomisations (the cascading test); its last step is
`randomize_params` of the same key. `forward_block_order` reads a model's block order from its
traced forward pass.
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
    the dict order, which for Flax's sorted dicts is NOT the forward order: pass
    `reversed(forward_block_order(...))` for a model's real top-down order).
    Step j (named after its block) has blocks order[0..j] randomised. A randomised tensor is
    the one `randomize_params(params, key)` draws for it (the same key split over ALL leaves),
    so a block's random values are the same in every later step and the last step equals
    `randomize_params(params, key)` exactly (the full randomisation of the same key).
    Returns [(block_name, params), ...], one entry per block.
    """
    blocks, flax_vars = _blocks_of(params)
    if order is None:
        order = blocks[::-1]
    order = list(order)
    if sorted(order) != sorted(blocks) or len(set(order)) != len(order):
        raise ValueError(f"`order` must be a permutation of the blocks {blocks}, got {order}")
    full = randomize_params(params, key)
    current = {name: dict(collection) for name, collection in params.items()} if flax_vars else dict(params)
    steps = []
    for name in order:
        if flax_vars:
            for collection in current:
                if isinstance(current[collection], Mapping) and name in current[collection]:
                    current[collection][name] = full[collection][name]
            snapshot = {collection: dict(values) for collection, values in current.items()}
        else:
            current[name] = full[name]
            snapshot = dict(current)
        steps.append((name, snapshot))
    return steps


def forward_block_order(encode_fn, params: Mapping, example: Any) -> list[str]:
    """The blocks of `params` (as in `cascading_randomizations`) in the order the forward pass
    `encode_fn(params, example)` first uses them: bottom (input) first.

    Read from the traced program (`jax.make_jaxpr`, nested jaxprs followed), so it needs no
    module definition and is right where dict order is not (Flax sorts its dicts:
    "BasicBlock_0" < "Conv_0" although the stem conv runs first). A block the forward pass never
    reads comes last (it cannot change the output); ties keep the dict order.
    """
    from jax.extend import core as jcore

    blocks, flax_vars = _blocks_of(params)
    leaf_block = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(p, "key", None) for p in path]
        leaf_block.append(keys[1] if flax_vars else keys[0])
    closed = jax.make_jaxpr(encode_fn)(params, example)
    n_leaves = len(leaf_block)
    first_use: dict[str, int] = {}
    counter = [0]

    def walk(jaxpr, env):
        for eqn in jaxpr.eqns:
            counter[0] += 1
            used = [env[v] for v in eqn.invars if not isinstance(v, jcore.Literal) and v in env]
            subs = [p for p in eqn.params.values() if isinstance(p, (jcore.Jaxpr, jcore.ClosedJaxpr))]
            sub = subs[0] if len(subs) == 1 else None
            sub = getattr(sub, "jaxpr", sub)
            if sub is not None and len(sub.invars) == len(eqn.invars):
                walk(sub, {inner: env[outer] for inner, outer in zip(sub.invars, eqn.invars)
                           if not isinstance(outer, jcore.Literal) and outer in env})
                continue
            for block in used:
                first_use.setdefault(block, counter[0])

    walk(closed.jaxpr, {var: leaf_block[i] for i, var in enumerate(closed.jaxpr.invars[:n_leaves])})
    return sorted(blocks, key=lambda b: (first_use.get(b, float("inf")), blocks.index(b)))
