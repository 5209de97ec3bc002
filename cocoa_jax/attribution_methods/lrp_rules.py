"""The AttnLRP rules (Achtibat et al., ICML 2024) as `jax.custom_vjp` functions, written once.

Each rule keeps the forward value of the operation it replaces (bit for bit: the forward is the
same JAX operation) and changes only the backward, so that in a network built from them the
gradient of the output times the input IS the LRP relevance ("Gradient x Input framework"):
if the cotangent `g` at an operation's output satisfies relevance_out = g * out, the rule's
cotangent `g_in` at its input satisfies relevance_in = g_in * in.

  epsilon(z, eps)        linear layers (dense, conv, the projection): put it on the layer's
                         OUTPUT z = W x + b; backward g -> g * z / (z + eps sign z), so the
                         linear layer's own gradient then gives R_x = x * W^T (R_z / (z + eps sign z))
                         (the epsilon rule; the bias keeps b * R_z / (z + ...), its share).
                         The ports use eps = LINEAR_EPSILON = 0 (lxt's choice): the plain gradient.
  identity(fn, x)        element-wise activations (GELU, quick-GELU, SiLU): R_in = R_out, i.e.
                         backward g -> g * fn(x) / (x + tiny sign x).
  softmax(x, axis)       the AttnLRP softmax rule R_in = x * (R_out - s * sum R_out), which in
                         gradient form is softmax's own vector-Jacobian product (the relevance
                         the softmax's linearisation bias s - J x takes is not passed on).
  bilinear(spec, a, b)   the uniform rule for a product of two inputs (q.k, attn.v, SwiGLU's
                         gate): each input gets half of the relevance, i.e. half the gradient.
  layer_norm(x, scale, bias, epsilon)
                         the identity rule for LayerNorm's normalisation: the standard
                         deviation is a constant in the backward (x -> (x - mean) / std is then
                         linear and conserves relevance); scale and bias as a linear layer.

Shapes: every rule maps arrays of any shape to the shape its forward gives; axis -1 is the
feature axis of `layer_norm` and the default of `softmax`.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["LINEAR_EPSILON", "ACTIVATION_EPSILON", "epsilon", "identity", "softmax", "bilinear", "layer_norm",
           "LayerNorm", "Ops", "ops"]

# The epsilon the ports' LRP mode gives the linear layers' rule: 0, as lxt 2.1's AttnLRP (its
# Gradient x Input form at eps -> 0 is the layer's plain gradient; no division happens, so
# nothing needs stabilising). An eps > 0 also damps neurons with |z| ~ eps: 1e-6 moved the map of
# a tiny random DINOv2 by 1.5e-3 relative (float64, measured 2026-12-07), more than lxt parity allows.
LINEAR_EPSILON = 0.0
# The stabiliser of the identity rule's fn(x) / x at x = 0 (lxt's 1e-10: relevance, not a prior).
ACTIVATION_EPSILON = 1e-10


def _signed(x, eps):
    """x + eps * sign(x), sign(0) = +1: never 0, same sign as x."""
    return x + jnp.where(x >= 0, eps, -eps).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# epsilon rule (on a linear layer's output)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def epsilon(z: jax.Array, eps: float = LINEAR_EPSILON) -> jax.Array:
    """Identity forward; backward g -> g * z / (z + eps sign z) (g itself at eps = 0, also where
    z = 0). Apply to z = W x + b."""
    return z


def _epsilon_fwd(z, eps):
    return z, z


def _epsilon_bwd(eps, z, g):
    if eps == 0:
        return (g,)
    return (g * (z / _signed(z, eps)),)


epsilon.defvjp(_epsilon_fwd, _epsilon_bwd)


# ---------------------------------------------------------------------------------------------
# identity rule (element-wise activations)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def identity(fn, x: jax.Array) -> jax.Array:
    """fn(x) forward (fn element-wise); backward g -> g * fn(x) / x (relevance passes unchanged)."""
    return fn(x)


def _identity_fwd(fn, x):
    y = fn(x)
    return y, (x, y)


def _identity_bwd(fn, residuals, g):
    x, y = residuals
    return (g * (y / _signed(x, ACTIVATION_EPSILON)),)


identity.defvjp(_identity_fwd, _identity_bwd)


# ---------------------------------------------------------------------------------------------
# softmax rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """jax.nn.softmax(x, axis) forward; backward: the AttnLRP softmax rule, written out
    (g_in = s * (g - sum(s * g)), which makes x * g_in = x * (R_out - s * sum R_out))."""
    return jax.nn.softmax(x, axis=axis)


def _softmax_fwd(x, axis):
    s = jax.nn.softmax(x, axis=axis)
    return s, s


def _softmax_bwd(axis, s, g):
    return (s * (g - jnp.sum(s * g, axis=axis, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


# ---------------------------------------------------------------------------------------------
# uniform rule (products of two inputs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def bilinear(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """jnp.einsum(spec, a, b) forward; backward: half of each input's gradient (uniform rule:
    R_a = R_b = R_out / 2 in the gradient x input sense)."""
    return jnp.einsum(spec, a, b)


def _bilinear_fwd(spec, a, b):
    out, vjp = jax.vjp(lambda u, v: jnp.einsum(spec, u, v), a, b)
    return out, vjp


def _bilinear_bwd(spec, vjp, g):
    ga, gb = vjp(g)
    return 0.5 * ga, 0.5 * gb


bilinear.defvjp(_bilinear_fwd, _bilinear_bwd)


# ---------------------------------------------------------------------------------------------
# LayerNorm (identity rule on the normalisation)


def _stats(x):
    # As flax's nn.LayerNorm(use_fast_variance=False): mean, then the mean of squared deviations.
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """(x - mean) * (rsqrt(var + eps) * scale) + bias over the last axis (flax's order of
    operations); backward with rsqrt(var + eps) held constant (AttnLRP's identity rule)."""
    mean, var = _stats(x)
    return (x - mean) * (jax.lax.rsqrt(var + eps) * scale) + bias


def _layer_norm_fwd(x, scale, bias, eps):
    mean, var = _stats(x)
    inv = jax.lax.rsqrt(var + eps)
    centred = x - mean
    return centred * (inv * scale) + bias, (centred, inv, scale)


def _layer_norm_bwd(eps, residuals, g):
    centred, inv, scale = residuals
    h = g * (inv * scale)
    gx = h - jnp.mean(h, axis=-1, keepdims=True)  # the gradient of x -> x - mean(x)
    batch_axes = tuple(range(g.ndim - 1))
    return gx, jnp.sum(g * centred * inv, axis=batch_axes), jnp.sum(g, axis=batch_axes)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """Drop-in for `nn.LayerNorm(epsilon=..., use_fast_variance=False)` over the last axis (the
    same `scale` / `bias` parameters), with the LayerNorm rule's backward."""

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return layer_norm(x, scale, bias, self.epsilon)


# ---------------------------------------------------------------------------------------------
# What a port calls where the LRP mode changes the backward


@dataclasses.dataclass(frozen=True)
class Ops:
    """The operations a ported transformer calls where LRP mode swaps in a rule. With
    `lrp=False` each is the plain JAX operation the port used before (the same call, so the
    forward is bit for bit unchanged); with `lrp=True` the rule of the same forward value."""

    lrp: bool = False

    def linear(self, z):
        """The output z = W x + b of a linear layer (dense, conv, projection)."""
        return epsilon(z) if self.lrp else z

    def activation(self, fn, x):
        return identity(fn, x) if self.lrp else fn(x)

    def softmax(self, x, axis: int = -1):
        return softmax(x, axis) if self.lrp else jax.nn.softmax(x, axis=axis)

    def einsum(self, spec: str, a, b):
        """A product of two activations (q.k, attn.v)."""
        return bilinear(spec, a, b) if self.lrp else jnp.einsum(spec, a, b)

    def multiply(self, a, b):
        """An element-wise product of two activations (a gate)."""
        return bilinear("...,...->...", a, b) if self.lrp else a * b

    def layer_norm(self, eps: float, name: str | None = None) -> nn.Module:
        if self.lrp:
            return LayerNorm(eps, name=name)
        return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


def ops(lrp: bool) -> Ops:
    """`Ops(lrp)`: the plain operations, or the LRP rules."""
    return Ops(bool(lrp))
