"""Memory of the gradient sums (`_common.sum_gradient_terms`) is set by the batch, not by the steps.

The chunks run in a rolled loop, so the compiled program holds one chunk whatever the sample
count: checked on XLA's compiled memory analysis (temporaries) and on the size of the optimized
program (what grew with the chunks when they were unrolled: CLIP ViT-B/16 at 224 px took ~0.15 GB
of compile and code per chunk), not on wall time or RSS. `canonical_conv_gradients`, which keeps
the loop fast on XLA CPU, against JAX's own convolution gradient.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import explicand_program
from cocoa_jax.attribution_methods import _common

DN = ("NHWC", "HWIO", "NHWC")
WIDTH = 32  # activations (32 x 32 x WIDTH per point) well above an input (32 x 32 x 3)


def encode(params, x):  # (M, 32, 32, 3) -> (M, WIDTH): conv, relu, 3x3/2 max pool, strided conv, mean
    h = jax.nn.relu(jax.lax.conv_general_dilated(x, params["w1"], (1, 1), "SAME", dimension_numbers=DN))
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    h = jax.lax.conv_general_dilated(h, params["w2"], (2, 2), "SAME", dimension_numbers=DN)
    return jnp.mean(jax.nn.relu(h), axis=(1, 2))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    params = {"w1": jnp.asarray(rng.normal(size=(3, 3, 3, WIDTH)) / 3, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(3, 3, WIDTH, WIDTH)) / 12, jnp.float32)}
    x = jnp.asarray(rng.uniform(size=(32, 32, 3)), jnp.float32)
    directions = jnp.asarray(rng.normal(size=(4, WIDTH)), jnp.float32)  # K = 4 targets
    return params, x, directions


def _compiled(inputs, method, options):
    # The explicand program explain runs for one explicand (baseline given), chunks of 4 points.
    params, x, directions = inputs
    one = explicand_program.explicand_fn(encode, method, explicand_program.hashable(options), (True,) * 4, 4, None)
    return jax.jit(one).lower(params, x, directions, jax.random.key(0), x * 0.5).compile()


@pytest.mark.parametrize("method, count", [("gradient_shap", "n_samples"), ("integrated_gradients", "n_steps")])
def test_gradient_program_does_not_grow_with_the_sample_count(inputs, method, count):
    small, large = (_compiled(inputs, method, {count: n}) for n in (8, 64))
    temp = [c.memory_analysis().temp_size_in_bytes for c in (small, large)]
    # What may grow: the 56 more points and multipliers made before the loop (input-sized, 2 x 12 KB
    # each), never a chunk's activations (a chunk here: 4 points x 4 targets x 32 KB-128 KB maps).
    inputs_bytes = 2 * (64 - 8) * inputs[1].size * 4
    assert temp[1] - temp[0] <= inputs_bytes + 64 * 1024, temp
    # The optimized program is one chunk's whatever the count (unrolled: 8x the instructions).
    sizes = [len(re.findall(r"\bconvolution\(", c.as_text())) for c in (small, large)]
    assert sizes[0] == sizes[1] > 0, sizes
    lines = [len(c.as_text().splitlines()) for c in (small, large)]
    assert lines[1] <= 1.05 * lines[0], lines


CONVS = [  # window strides, padding, lhs dilation, rhs dilation, kernel (H, W, I, O)
    ((1, 1), "SAME", (1, 1), (1, 1), (3, 3, 3, 5)),
    ((2, 2), ((3, 3), (3, 3)), (1, 1), (1, 1), (7, 7, 3, 4)),
    ((2, 1), "VALID", (1, 1), (2, 2), (3, 2, 3, 5)),
    ((1, 1), ((1, 2), (0, 1)), (2, 2), (1, 1), (3, 3, 3, 2)),
    ((4, 4), "VALID", (1, 1), (1, 1), (4, 4, 3, 6)),  # patch embedding
]


@pytest.mark.parametrize("strides, padding, lhs_dilation, rhs_dilation, kernel", CONVS)
def test_canonical_conv_gradients_equal_jax_gradients(strides, padding, lhs_dilation, rhs_dilation, kernel):
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(16, 20, 3)))
        w = jnp.asarray(rng.normal(size=kernel))
        v = jnp.asarray(rng.normal(size=(2,)))

        def f(x):  # (16, 20, 3) -> (2,): the conv inside a nested jit, as a model may have it
            conv = jax.jit(lambda a: jax.lax.conv_general_dilated(a[None], w, strides, padding, lhs_dilation,
                                                                  rhs_dilation, dimension_numbers=DN))
            y = conv(x)
            return jnp.stack([jnp.sum(jnp.sin(y)), jnp.sum(y ** 2) * v[0]]) * v

        g = _common.canonical_conv_gradients(f)
        np.testing.assert_array_equal(g(x), f(x))
        points = jnp.stack([x, 2 * x])
        expected = jax.vmap(jax.jacrev(f))(points)
        np.testing.assert_allclose(jax.jit(jax.vmap(jax.jacrev(g)))(points), expected, rtol=1e-12, atol=1e-12)


def test_grouped_convolutions_and_plain_functions_keep_jax_gradients():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(1, 9, 9, 4)))
        w = jnp.asarray(rng.normal(size=(3, 3, 2, 6)))
        grouped = lambda x: jnp.sum(jnp.tanh(jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=DN, feature_group_count=2)))
        plain = lambda x: jnp.sum(jnp.sin(x) * x)
        for f in (grouped, plain):
            np.testing.assert_allclose(jax.grad(_common.canonical_conv_gradients(f))(x), jax.grad(f)(x), rtol=1e-12)


def test_gradient_convolutions_in_the_loop_are_in_the_fast_form(inputs):
    # XLA CPU runs a convolution fast only with its kernel as (spatial..., in, out) ("01io");
    # JAX's input-gradient rule gives "01oi", which XLA rewrites in the entry computation but
    # not inside a loop, where it ran 3x slower. The same loop with JAX's rule shows it.
    params, x, directions = inputs
    f = lambda xi: encode(params, xi[None])[0] @ directions.T

    def looped(grad_of):
        step = lambda i, total: total + jax.vmap(jax.jacrev(grad_of))(x[None] * (i + 1.0)).sum(0)
        hlo = jax.jit(lambda: jax.lax.fori_loop(0, 2, step, jnp.zeros((4,) + x.shape))).lower().compile().as_text()
        return re.findall(r"dim_labels=(\w+)_(\w+)->", hlo)

    canonical, jax_rule = looped(_common.canonical_conv_gradients(f)), looped(f)
    assert canonical and all(kernel.endswith("io") for _, kernel in canonical), canonical
    assert any(kernel.endswith("oi") for _, kernel in jax_rule), jax_rule


def test_the_flag_is_added_once_and_a_user_choice_is_kept():
    assert _common.with_sequential_scheduler("") == _common.SEQUENTIAL_SCHEDULER_FLAG
    assert _common.with_sequential_scheduler("--a=1") == "--a=1 " + _common.SEQUENTIAL_SCHEDULER_FLAG
    chosen = "--a=1 " + _common.SCHEDULER_FLAG_NAME + "=true"
    assert _common.with_sequential_scheduler(chosen) == chosen
    once = _common.with_sequential_scheduler("--a=1")
    assert _common.with_sequential_scheduler(once) == once
    env = {"XLA_FLAGS": "--b=2"}
    assert _common.use_sequential_scheduler(env) is True
    assert env["XLA_FLAGS"] == "--b=2 " + _common.SEQUENTIAL_SCHEDULER_FLAG
    env = {"XLA_FLAGS": chosen}
    assert _common.use_sequential_scheduler(env) is False and env["XLA_FLAGS"] == chosen


def test_pipeline_attribute_takes_the_probed_batch_on_large_images(monkeypatch):
    # No batch given: images over 64 px get the batch explain chooses (probe + free memory), smaller
    # ones and a given batch are passed on unchanged. The program is replaced: only its batch is read.
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cocoa_jax import cost, pipeline, targets

    def encode(params, x):  # (N, H, W, 1) -> (N, 3)
        return jnp.tanh(jnp.mean(x, axis=(1, 2)) * params["w"])

    params = {"w": jnp.asarray([1.0, -2.0, 0.5])}
    seen = []

    def fake_program(encode_fn, method, options, normalize, *, batch_size, mesh, lanes_per_device):
        seen.append(batch_size)
        return lambda params, xs, directions, keys, baselines: np.zeros(xs.shape[:1] + (2,) + xs.shape[1:3])

    monkeypatch.setattr(pipeline.program_mod, "attribution_program", fake_program)
    target = targets.Target(jnp.asarray(np.eye(2, 3), jnp.float32), (True, True))
    for size, given in ((72, None), (72, 3), (32, None)):
        xs = np.full((1, size, size, 1), 0.5, np.float32)
        pipeline.attribute(encode, params, xs, xs * 0, target, "integrated_gradients", jax.random.split(jax.random.key(0), 1),
                           options={"n_steps": 8}, batch_size=given)
    probe = cost.probe(encode, params, (72, 72, 1), batch=4, k=2)
    assert seen == [cost.default_batch_size(probe, lanes=1), 3, None]
