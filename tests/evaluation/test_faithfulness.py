"""Faithfulness metrics against independent float64 NumPy statements (the Quantus checks are in
test_faithfulness_quantus.py): insertion / deletion by a literal loop, ROAD's imputation by its
defining property, IROF's grid fallback, the LeRF / MoRF orders and pixel flipping's step count."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import evaluation, targets
from cocoa_jax.evaluation import faithfulness

H, W, C, D = 8, 8, 2, 5


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(4)
    w = rng.normal(0, 0.4, (H * W * C, D))
    direction = rng.normal(size=D)
    x = rng.uniform(size=(H, W, C))
    baseline = rng.uniform(size=(H, W, C)) * 0.2
    maps = rng.normal(size=(2, H, W, C))

    def t64(images):  # float64 NumPy target: cos(tanh(flat @ w), direction) / |direction| convention
        reps = np.tanh(images.reshape(len(images), -1) @ w)
        return reps @ direction / np.linalg.norm(reps, axis=-1)

    encode = lambda images: jnp.tanh(images.reshape(images.shape[0], -1) @ jnp.asarray(w, jnp.float32))
    target = targets.stack([targets.Target(jnp.asarray(direction, jnp.float32), True)] * 2)
    ctx = evaluation.Context(target, jnp.asarray(baseline, jnp.float32), encode_fn=lambda p, b: encode(b))
    return dict(x=x, baseline=baseline, maps=maps, t64=t64, ctx=ctx)


def _ranking(m):
    """Pixels most important first by the channel mean, ties by index (float64)."""
    return np.argsort(-m.mean(-1).ravel(), kind="stable")


def test_insertion_and_deletion_equal_a_float64_loop(world):
    x, b, t64 = world["x"], world["baseline"], world["t64"]
    n_steps = 8
    sizes = np.full(n_steps, (H * W) // n_steps)  # 64 pixels, 8 per step
    counts = np.concatenate([[0], np.cumsum(sizes)])
    for name, insert in (("insertion", True), ("deletion", False)):
        fn = jax.jit(lambda c, a, m, fn=getattr(faithfulness, name): fn(c, a, m, None, n_steps=n_steps))
        got = np.asarray(fn(world["ctx"], jnp.asarray(x, jnp.float32), jnp.asarray(world["maps"], jnp.float32)))
        for k in range(2):
            order = _ranking(world["maps"][k])
            images = []
            for c in counts:
                changed = np.zeros(H * W, bool)
                changed[order[:c]] = True
                keep = (changed if insert else ~changed).reshape(H, W, 1)
                images.append(np.where(keep, x, b))
            curve = t64(np.stack(images))
            expected = np.trapezoid(curve, counts / (H * W))
            np.testing.assert_allclose(got[k], expected, rtol=1e-4, atol=1e-5)


def test_linear_imputation_makes_each_removed_pixel_its_neighbours_weighted_mean():
    rng = np.random.default_rng(6)
    x = rng.uniform(size=(9, 7, 3))
    removed = rng.uniform(size=(9, 7)) < 0.5
    v = np.asarray(jax.jit(faithfulness.linear_imputation)(jnp.asarray(x, jnp.float32), jnp.asarray(removed)),
                   np.float64)
    weights = {(1, 1): 1 / 12, (0, 1): 1 / 6, (-1, 1): 1 / 12, (1, -1): 1 / 12, (0, -1): 1 / 6, (-1, -1): 1 / 12,
               (1, 0): 1 / 6, (-1, 0): 1 / 6}
    for i, j in zip(*np.nonzero(removed)):
        total, mass = np.zeros(3), 0.0
        for (di, dj), wt in weights.items():
            if 0 <= i + di < 9 and 0 <= j + dj < 7:
                total += wt * v[i + di, j + dj]
                mass += wt
        np.testing.assert_allclose(v[i, j], total / mass, atol=1e-5)
    np.testing.assert_allclose(v[~removed], x[~removed], atol=1e-7)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_road_lerf_is_morf_on_the_negated_map_and_pixel_flipping_counts_steps(world):
    ctx, x = world["ctx"], jnp.asarray(world["x"], jnp.float32)
    maps = jnp.asarray(world["maps"], jnp.float32)
    key = jax.random.key(3)
    road = jax.jit(lambda c, a, m, k, order: faithfulness.road_curve(c, a, m, k, order=order, percentages=[30, 70]),
                   static_argnames=("order",))  # jitted: one program, not op by op
    lerf = road(ctx, x, maps, key, order="lerf")
    morf = road(ctx, x, -maps, key, order="morf")
    np.testing.assert_allclose(lerf, morf, rtol=1e-6, atol=1e-7)
    curve = jax.jit(lambda c, a, m: faithfulness.pixel_flipping_curve(c, a, m, features_in_step=10))(ctx, x, maps)
    assert curve.shape == (2, 7)  # ceil(64 / 10)
    # The last step has every pixel at the baseline: the target of the baseline itself.
    np.testing.assert_allclose(curve[:, -1], world["t64"](world["baseline"][None])[0], rtol=1e-4)


def test_irof_without_segments_uses_its_grid(world):
    ctx, x = world["ctx"], jnp.asarray(world["x"], jnp.float32)
    maps = jnp.asarray(world["maps"], jnp.float32)
    grid = faithfulness.grid_segments(H, W, 4)
    assert grid.max() + 1 == 4
    with_segments = evaluation.Context(ctx.target, ctx.baseline, segments=jnp.asarray(grid), encode_fn=ctx.encode_fn,
                                       num_segments=4)
    irof = jax.jit(lambda c, a, m: faithfulness.irof(c, a, m, cell=4))
    np.testing.assert_allclose(irof(ctx, x, maps), irof(with_segments, x, maps), rtol=1e-6)
