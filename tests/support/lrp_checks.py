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


def random_batchnorm_model(arch: str, config: dict, input_shape: tuple, seed: int, *, zero_shift: bool = False):
    """A LoadedModel of `arch` / `config` with random float32 weights that make BatchNorm matter:
    scales in [0.5, 1.5], variances in [0.5, 2], means and shifts N(0, 0.3^2) (0 with `zero_shift`: every
    folded bias is then 0), conv kernels He-scaled so activations neither vanish nor explode."""
    from cocoa_jax.models import architectures, loaded

    spec = architectures.spec_of(arch)
    module = spec.build(config)
    variables = jax.eval_shape(lambda: spec.init(module, config, tuple(input_shape)))
    leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
    rng = np.random.default_rng(seed)
    out = []
    for path, leaf in leaves:
        name = str(path[-1].key)
        if name == "var":
            value = rng.uniform(0.5, 2.0, leaf.shape)
        elif name == "scale":
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif name in ("mean", "bias"):
            value = np.zeros(leaf.shape) if zero_shift else rng.normal(0, 0.3, leaf.shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
        out.append(jnp.asarray(value, jnp.float32))
    return loaded.make_loaded(arch, config, jax.tree_util.tree_unflatten(tree, out), input_shape=tuple(input_shape))
