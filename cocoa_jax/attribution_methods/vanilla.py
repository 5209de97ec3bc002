"""Vanilla gradients: the gradient of f at x."""
from __future__ import annotations

from typing import Callable

import jax

from cocoa_jax.attribution_methods._common import check_input, jacobian, num_targets


def vanilla_gradients(f: Callable, x: jax.Array) -> jax.Array:
    """Gradient of f at x: x.shape, or (K, *x.shape) when f returns (K,)."""
    x = check_input(x)
    return jacobian(f, num_targets(f, x))(x)
