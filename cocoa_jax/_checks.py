"""Argument checks shared by the public functions.

Shape checks always run (shapes are static under `jit`). Value checks (NaN/inf, zero
norms) run only on concrete arrays: inside a traced computation the values are not
known yet, so those checks happen where data enters (the CLI, the sweep, eager calls).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(array: Any) -> bool:
    """True when `array`'s values are known now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(array, jax.core.Tracer)


def check_array(name: str, array: Any, *, ndim: int | None = None, min_ndim: int | None = None):
    """Check rank and dtype of `array` and, when concrete, that it is finite."""
    shape = np.shape(array)
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"`{name}` must have rank {ndim}, got shape {shape}")
    if min_ndim is not None and len(shape) < min_ndim:
        raise ValueError(f"`{name}` must have rank >= {min_ndim}, got shape {shape}")
    dtype = array.dtype if hasattr(array, "dtype") else np.asarray(array).dtype
    # jnp.issubdtype knows bfloat16 is floating; np.issubdtype does not.
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a real numeric array, got dtype {dtype}")
    check_finite(name, array)


def check_finite(name: str, array: Any) -> None:
    """Raise if a concrete `array` holds NaN or inf (no-op for tracers)."""
    if is_concrete(array):
        values = np.asarray(array)
        if values.dtype == jnp.bfloat16:  # numpy's isfinite has no bfloat16 loop
            values = values.astype(np.float32)
        if values.size and not np.all(np.isfinite(values)):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            raise ValueError(f"`{name}` contains {bad} NaN/inf value(s); inputs must be finite")


def check_same_shape(name: str, array: Any, ref_name: str, ref: Any) -> None:
    if np.shape(array) != np.shape(ref):
        raise ValueError(
            f"`{name}` must have the same shape as `{ref_name}` {np.shape(ref)}, got {np.shape(array)}"
        )


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def check_optional_batch_size(value: Any) -> int | None:
    return None if value is None else check_positive_int("batch_size", value)


def check_choice(name: str, value: Any, choices) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}")
    return value
