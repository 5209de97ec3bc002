"""One check shared by the LRP tests of the ResNet ports and of the digits encoder."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import attribution, pipeline, targets


def assert_k_targets_equal_one_at_a_time(model, xs) -> None:
    """`pipeline.attribute(..., "lrp")` with 2 stacked targets (one cosine, one dot) on the explicands
    `xs` (2, H, W, C) equals `attribution.lrp` of each target's score alone on the model's relevance
    mode, and differs from the same on the plain encoder (the plain input gradient)."""
    directions = jnp.asarray(np.random.default_rng(5).normal(size=(2, model.representation_dim)), jnp.float32)
    target = targets.Target(directions, (True, False))
    keys = jax.random.split(jax.random.key(0), 2)
    maps = pipeline.attribute(model.encode_fn, model.params, xs, xs, target, "lrp", keys)
    assert maps.shape == (2, 2, *xs.shape[1:])

    @jax.jit
    def reference(xs):
        def one(x, encode, k):
            single = targets.Target(directions[k:k + 1], (target.normalize[k],))
            return attribution.lrp(lambda v: targets.explain_fn(lambda xb: encode(model.params, xb), single)(v)[0], x)

        modes = (model.encode_fn.modes["relevance"], model.encode_fn)
        return [jnp.stack([jax.vmap(lambda x: one(x, encode, k))(xs) for k in range(2)], axis=1) for encode in modes]

    expected, plain = (np.asarray(a) for a in reference(xs))
    atol = 1e-6 * np.abs(expected).max()
    np.testing.assert_allclose(maps, expected, rtol=2e-4, atol=atol)
    assert not np.allclose(maps, plain, rtol=1e-2, atol=atol)
