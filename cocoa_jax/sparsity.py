"""Sparsity of attribution maps: the Gini index, of |a| (default) or by the official COCOA formula."""
from __future__ import annotations

import jax.numpy as jnp

from cocoa_jax import _checks

# The two Gini formulas reports offer: "absolute" = gini_index(a) (of |a|, in [0, 1)),
# "official" = gini_index(a, absolute=False) (the official raw-value formula).
GINI_MODES = ("absolute", "official")


def gini_index(attributions, ndim: int | None = None, *, absolute: bool = True):
    """Gini index (Hurley & Rickard, 2009) of a map, 0 (uniform) .. 1 - 1/n (one-hot).

    absolute=True (default): with a_(1) <= ... <= a_(n) the sorted ABSOLUTE values,
        G = 1 - 2 sum_k (a_(k) / ||a||_1) (n - k + 1/2) / n,
    in [0, 1 - 1/n] for every map, signed or not: how concentrated the attribution MASS is.
    absolute=False: the OFFICIAL raw-value formula, the official `compute_gini_index`
    (cl-explainability, src/cl_explain/metrics/sparsity.py) exactly: the RAW values sorted
    ascending (no absolute value), G = 2 sum_i i a_(i) / (n sum a) - (n + 1) / n, i = 1..n.
    Use it to reproduce the official numbers. Both are the same expression (expand the first);
    they differ only for maps with negative entries, where the official form divides by the
    signed sum: it can leave [0, 1] by any amount (a signed IG map near zero sum gives values
    like -26) and then does not measure sparsity; a map summing to 0 gives 0 here.
    A map of zeros has no mass to spread: G = 0.

    Args:
      attributions: an array; its last `ndim` axes form one map (None: the whole array).
      absolute: take |attributions| first (True, default) or use the raw values as the official
        code does (False: the official raw-value formula).
    Returns: an array of the leading (batch) shape, float32 (float64 for float64 input with jax x64 on).
    """
    _checks.check_array("attributions", attributions, min_ndim=1)
    a = jnp.asarray(attributions)
    a = jnp.abs(a) if absolute else a
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.float32)
    ndim = a.ndim if ndim is None else _checks.check_positive_int("ndim", ndim)
    if ndim > a.ndim:
        raise ValueError(f"`ndim` must be <= the rank of `attributions` ({a.ndim}), got {ndim}")
    flat = jnp.sort(a.reshape(a.shape[: a.ndim - ndim] + (-1,)), axis=-1)
    n = flat.shape[-1]
    total = jnp.sum(flat, axis=-1, keepdims=True)
    k = jnp.arange(1, n + 1, dtype=flat.dtype)
    if absolute:
        share = flat / jnp.where(total > 0, total, 1.0)
        gini = 1.0 - 2.0 * jnp.sum(share * (n - k + 0.5) / n, axis=-1)
        return jnp.where(total[..., 0] > 0, gini, 0.0)
    nonzero = total != 0
    weighted = jnp.sum(k * flat, axis=-1, keepdims=True)
    gini = 2.0 * weighted / (n * jnp.where(nonzero, total, 1.0)) - (n + 1.0) / n
    return jnp.where(nonzero[..., 0], gini[..., 0], 0.0)
