"""Rank correlation of attribution maps (the model-randomisation sanity check, Adebayo et al., 2018).

Float64 NumPy on the host: it reads finished maps, never runs inside a compiled program.
"""
from __future__ import annotations

import numpy as np


def _flatten(x, ndim, name):
    x = np.asarray(x, np.float64)
    if ndim is None:
        ndim = x.ndim
    if isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= max(x.ndim, 1):
        raise ValueError(f"`ndim` must be an integer in 1..{max(x.ndim, 1)} for `{name}` of shape {x.shape}, "
                         f"got {ndim!r}")
    if x.ndim == 0:
        raise ValueError(f"`{name}` must have at least one axis, got a scalar")
    if not np.isfinite(x).all():
        raise ValueError(f"`{name}` holds NaN or infinite values")
    lead = x.shape[:x.ndim - ndim]
    return x.reshape(lead + (-1,)), lead


def rankdata(x, ndim: int | None = None) -> np.ndarray:
    """Ranks 1..n over the last `ndim` axes (None: all), ties given their average rank
    (`scipy.stats.rankdata(method="average")`), batched over the leading axes; float64, x's shape."""
    flat, lead = _flatten(x, ndim, "x")
    rows = flat.reshape(-1, flat.shape[-1])
    n = rows.shape[1]
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    position = np.broadcast_to(np.arange(n), rows.shape)
    differs = ordered[:, 1:] != ordered[:, :-1]
    is_first = np.concatenate([np.ones((rows.shape[0], 1), bool), differs], axis=1)
    is_last = np.concatenate([differs, np.ones((rows.shape[0], 1), bool)], axis=1)
    first = np.maximum.accumulate(np.where(is_first, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(is_last, position, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty_like(rows)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks.reshape(np.shape(x))


def spearman(a, b, ndim: int | None = None, *, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation of `a` and `b` over their last `ndim` axes (None: all), batched
    over the leading axes: the Pearson correlation of their average ranks (`scipy.stats.spearmanr`).

    absolute: correlate |a| and |b| (Adebayo et al. report both the signed and the absolute form).
    Returns float64 of the leading shape (a float for ndim None); NaN where a or b is constant
    over the compared axes (the correlation is undefined there, as in scipy).
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"`a` and `b` must have one shape, got {a64.shape} and {b64.shape}")
    if absolute:
        a64, b64 = np.abs(a64), np.abs(b64)
    ra, lead = _flatten(rankdata(a64, ndim), ndim, "a")
    rb, _ = _flatten(rankdata(b64, ndim), ndim, "b")
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=-1) * (rb * rb).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denominator > 0, (ra * rb).sum(axis=-1) / np.where(denominator > 0, denominator, 1.0),
                       np.nan)
    out = np.clip(out, -1.0, 1.0)
    return float(out) if not lead else out.reshape(lead)
