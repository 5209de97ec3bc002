"""LRP of a convolutional network (zennit's `EpsilonPlusFlat` composite: flat rule on the first
conv, z+ on the other convs with their BatchNorm folded in, epsilon on dense layers, the `Norm`
rule on residual sums and average pooling) in one forward and one backward pass.

`f` must be built from an encoder in its "relevance" model mode (the ported ResNets:
`encode_fn.modes["relevance"]`, rules in `attribution_methods.lrp_conv_rules`). Below the flat
first layer the gradient IS the relevance, so the map is the plain input gradient of that `f`
(not x times it, as in `attn_lrp`: the flat rule's relevance does not depend on x, and a
zero-valued pixel still gets its share). The input normalisation passes relevance unchanged
(`lrp_conv_rules.pass_relevance`), so pixel relevance = relevance at the network's input.

Relevance sums to f(x) up to what the rules give biases: the positive part b+ of every folded
conv's bias under z+ (the negative part and the flat layer's bias get none) and the stabilisers
(1e-6 in the denominators of every conv, sum and pooling rule). On a plain f (not the mode)
this returns the vanilla gradient; the explicand program picks the mode from `Method.model_mode`.
"""
from __future__ import annotations

from typing import Callable

import jax

from cocoa_jax.attribution_methods._common import check_input, jacobian, num_targets


def lrp(f: Callable, x: jax.Array) -> jax.Array:
    """Relevance = grad f(x) under the LRP rules: x.shape, or (K, *x.shape) when f returns (K,)
    (one forward shared by the K backward passes)."""
    x = check_input(x)
    return jacobian(f, num_targets(f, x))(x)
