"""Quadrature rules on [0, 1] for path methods (Integrated Gradients and its variants).

Captum's rule names; `quadrature(method, n_steps)` builds each rule once (cached, read-only arrays).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np

from cocoa_jax import _checks


class Quadrature(NamedTuple):
    """A quadrature rule on [0, 1]: integral of g ~= sum_i weights[i] * g(alphas[i])."""

    alphas: np.ndarray  # (n,) float64 points in [0, 1]
    weights: np.ndarray  # (n,) float64


def _gauss_legendre(n: int) -> Quadrature:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return Quadrature(0.5 * (nodes + 1.0), 0.5 * weights)


def _riemann(kind: str, n: int) -> Quadrature:
    if n < 2:
        raise ValueError(f"`n_steps` must be >= 2 for riemann rules, got {n}")
    if kind == "trapezoid":
        # Composite trapezoid on n equally spaced points: weights sum to 1. (Captum's
        # riemann_trapezoid uses 1/n with halved ends, i.e. (n-1)/n times these.)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return Quadrature(np.linspace(0.0, 1.0, n), weights)
    alphas = {
        "left": np.linspace(0.0, 1.0 - 1.0 / n, n),
        "right": np.linspace(1.0 / n, 1.0, n),
        "middle": np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n),
    }[kind]
    return Quadrature(alphas, np.full(n, 1.0 / n))


QUADRATURE_RULES: dict[str, Callable[[int], Quadrature]] = {
    "gausslegendre": _gauss_legendre,
    "riemann_left": functools.partial(_riemann, "left"),
    "riemann_right": functools.partial(_riemann, "right"),
    "riemann_middle": functools.partial(_riemann, "middle"),
    "riemann_trapezoid": functools.partial(_riemann, "trapezoid"),
}


def quadrature(method: str, n_steps: int) -> Quadrature:
    """The named rule with `n_steps` points (Captum's names); read-only arrays, cached."""
    _checks.check_choice("method", method, QUADRATURE_RULES)
    return _cached_rule(method, _checks.check_positive_int("n_steps", n_steps))


@functools.lru_cache(maxsize=32)
def _cached_rule(method: str, n_steps: int) -> Quadrature:
    # Gauss-Legendre nodes cost O(n^3) (3 s at n = 1000): the up-front option check
    # (`methods.check_values`) and the run then build each rule once.
    rule = QUADRATURE_RULES[method](n_steps)
    for array in rule:
        array.setflags(write=False)
    return rule
