"""AttnLRP (Achtibat et al., ICML 2024): relevance of each input pixel in one forward and one
backward pass, for a transformer whose operations follow the LRP rules of
`cocoa_jax.attribution_methods.lrp_rules` (the ported ViTs in LRP mode: `encode_fn.modes["lrp"]`).

With the rules in place, the relevance IS gradient x input of the modified backward:
R(x) = x * d f / d x. The pixel input is treated like any other input of a linear layer (the
epsilon rule of the patch embedding, after the model's mean/std normalisation, which is an
affine map whose shift is a bias): no z^B or flat rule for the first layer.

Relevance is conserved (sums to f(x)) up to what the rules leave to biases: the biases of linear
layers, LayerNorm shifts, the positional embedding, class and register tokens, the mean/std
normalisation's shift, the epsilon of the linear layers, and the bias of the softmax rule's
linearisation (s - J x). f must be built from the encoder IN LRP MODE; on a plain f this
function returns gradient x input, nothing more (the explicand program picks the mode from
`Method.model_mode`, so front ends never pass a plain f).
"""
from __future__ import annotations

from typing import Callable

import jax

from cocoa_jax.attribution_methods._common import check_input, jacobian, num_targets


def attn_lrp(f: Callable, x: jax.Array) -> jax.Array:
    """Relevance x * grad f(x) under the LRP rules: x.shape, or (K, *x.shape) when f returns (K,)
    (one forward linearisation shared by the K backward passes)."""
    x = check_input(x)
    return jacobian(f, num_targets(f, x))(x) * x
