"""LRP rules for convolutional networks (zennit's `EpsilonPlusFlat` composite) as `jax.custom_vjp`.

Conventions (those of `lrp_rules`): a rule keeps its layer's forward value and changes only the
backward; inside the network the cotangent g at an activation a carries the relevance
R(a) = g * a ("gradient x input"). Each rule here is an identity on the layer's output y that
also takes the layer's input x: its backward sends NO cotangent through the plain layer
(y's own path gets zero) and gives x the rule's cotangent instead, so the forward is the plain
layer's, bit for bit (the rule returns y itself).

  zplus(spec, eps, y, x, kernel, bias)
        z+ rule (zennit `ZPlus`) for a conv whose BatchNorm is folded into (kernel, bias)
        (`fold_batch_norm`): with z = conv(x+, W+) + b+ + conv(x-, W-) and R = g * y,
        R(x) = x+ * conv^T_{W+}(R / (z + eps)) + x- * conv^T_{W-}(R / (z + eps)). The positive
        bias b+ keeps its share, the rest of the bias none (zennit: bias clamped into the first
        term, zeroed in the second).
  flat(spec, eps, y, x, kernel)
        flat rule (zennit `Flat`) for the FIRST layer: R(x) = conv^T_1(R / (conv(1, 1) + eps)),
        relevance spread evenly over each receptive field (padding excluded), independent of x.
        The cotangent it gives x is R(x) ITSELF, not R(x) / x (which would divide by zero-valued
        pixels): below a flat layer the gradient is the relevance (the "relevance" model mode,
        read out by `attribution_methods.lrp.lrp` as the plain input gradient).
  pass_relevance(fn, x)
        fn(x) forward (the input normalisation, element-wise); backward g -> g: the relevance at
        the network's input passes unchanged to the pixels (in the convention below `flat`).

Reused from `lrp_rules`: `epsilon(z, STABILIZER)` on a residual sum's and on the average pool's
output is zennit's `Norm` rule (R_k = a_k R / (sum + eps sign)), on a dense layer's output its
`Epsilon` rule. ReLU and max-pool keep their plain gradient, which in this convention is zennit's
`Pass` (ReLU) and its gradient routing (max-pool).

Parameter cotangents of `zplus` / `flat` are zero: a model in LRP mode is for input relevance.
Shapes: x (N, H, W, Cin), y (N, H', W', Cout), kernel (kh, kw, Cin, Cout) (flax HWIO), bias (Cout,).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from cocoa_jax.attribution_methods.lrp_rules import _signed

__all__ = ["STABILIZER", "ConvSpec", "fold_batch_norm", "zplus", "flat", "pass_relevance"]

# zennit's default for `EpsilonPlusFlat` (its epsilon and its rules' stabilizer): 1e-6, added with
# the sign of the denominator (+ for 0).
STABILIZER = 1e-6


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A bias-free 2-d convolution as flax's `nn.Conv` runs it: NHWC inputs, HWIO kernels,
    `strides`, explicit `padding` ((top, bottom), (left, right))."""

    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]

    def __call__(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(x, kernel, self.strides, self.padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fold_batch_norm(kernel, scale, bias, mean, var, eps: float):
    """(kernel', bias') of the conv followed by an inference BatchNorm, as one conv with bias
    (zennit's `MergeBatchNorm`): kernel * s, bias - mean * s, s = scale / sqrt(var + eps).
    kernel (..., Cout), the BatchNorm's arrays (Cout,)."""
    s = scale / jnp.sqrt(var + eps)
    return kernel * s, bias - mean * s


# ---------------------------------------------------------------------------------------------
# z+ rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def zplus(spec: ConvSpec, eps: float, y, x, kernel, bias):
    """y forward; backward: the z+ rule of the conv (kernel, bias) from x to y (module docstring)."""
    return y


def _zplus_fwd(spec, eps, y, x, kernel, bias):
    return y, (y, x, kernel, bias)


def _zplus_bwd(spec, eps, residuals, g):
    y, x, kernel, bias = residuals
    # As flax's Conv: inputs and weights promoted to one dtype (y's); x's cotangent in x's dtype.
    dtype = y.dtype
    x_dtype, x, kernel, bias = x.dtype, x.astype(dtype), kernel.astype(dtype), bias.astype(dtype)
    w_pos, w_neg = jnp.maximum(kernel, 0), jnp.minimum(kernel, 0)
    z, vjp = jax.vjp(lambda a, b: spec(a, w_pos) + spec(b, w_neg), jnp.maximum(x, 0), jnp.minimum(x, 0))
    s = (g * y) / _signed(z + jnp.maximum(bias, 0), eps)
    g_pos, g_neg = vjp(s)
    # R(x) = x+ g_pos + x- g_neg, so the cotangent (R / x) is g_pos where x > 0, g_neg where x < 0.
    gx = jnp.where(x > 0, g_pos, jnp.where(x < 0, g_neg, jnp.zeros_like(g_pos)))
    return None, gx.astype(x_dtype), None, None


zplus.defvjp(_zplus_fwd, _zplus_bwd)


# ---------------------------------------------------------------------------------------------
# flat rule (first layer)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def flat(spec: ConvSpec, eps: float, y, x, kernel):
    """y forward; backward: the flat rule of the conv from x to y; x's cotangent IS its relevance."""
    return y


def _flat_fwd(spec, eps, y, x, kernel):
    return y, (y, x, kernel)


def _flat_bwd(spec, eps, residuals, g):
    y, x, kernel = residuals
    count, vjp = jax.vjp(lambda a: spec(a, jnp.ones(kernel.shape, y.dtype)), jnp.ones(x.shape, y.dtype))
    (relevance,) = vjp((g * y) / _signed(count, eps))
    return None, relevance.astype(x.dtype), None


flat.defvjp(_flat_fwd, _flat_bwd)


# ---------------------------------------------------------------------------------------------
# the input normalisation below a flat layer


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def pass_relevance(fn: Callable, x):
    """fn(x) forward; backward g -> g (relevance passes through the element-wise map unchanged)."""
    return fn(x)


def _pass_fwd(fn, x):
    return fn(x), None


def _pass_bwd(fn, residuals, g):
    return (g,)


pass_relevance.defvjp(_pass_fwd, _pass_bwd)
