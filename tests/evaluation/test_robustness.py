"""Max- and average-sensitivity against Quantus 0.6 with the same noise draws, and float64 statements."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax.evaluation import robustness, table

Q = pytest.importorskip("tests.reference.quantus_metrics_side")
quantus = pytest.importorskip("quantus")

N, SAMPLES, RADIUS = 4, 6, 0.2


@pytest.fixture(scope="module")
def setup():
    x, y = Q.data(N)
    model = Q.tiny_net()
    params = Q.jax_params(model)
    maps = Q.gradient_maps(params, x, y)  # (N, H, W): Quantus's explain_func maps, channel means
    ctx = Q.contexts(params, y, x, explainer=Q.pixel_explainer("vanilla_gradients"))
    return x, y, model, params, maps, ctx


def _quantus_noise(seed):
    """The draws Quantus's batch_uniform_noise makes after np.random.seed(seed): (N, S, H, W, C)."""
    np.random.seed(seed)
    steps = [np.random.uniform(-RADIUS, RADIUS, (N, Q.CHANNELS * Q.HEIGHT * Q.WIDTH)) for _ in range(SAMPLES)]
    noise = np.stack(steps, axis=1).reshape(N, SAMPLES, Q.CHANNELS, Q.HEIGHT, Q.WIDTH)
    return noise.transpose(0, 1, 3, 4, 2).astype(np.float32)


@pytest.mark.parametrize("cls, reduce", [("MaxSensitivity", np.max), ("AvgSensitivity", np.mean)])
def test_equals_quantus_with_the_same_noise(setup, cls, reduce):
    x, y, model, params, maps, ctx = setup
    metric = getattr(quantus, cls)(nr_samples=SAMPLES, lower_bound=RADIUS, disable_warnings=True)
    np.random.seed(7)
    theirs = np.asarray(metric(model=model, x_batch=Q.to_nchw(x), y_batch=y, a_batch=maps[:, None].copy(),
                               explain_func=Q.quantus_explain_func(), device="cpu"), np.float64)
    noise = _quantus_noise(7)
    ours = []
    for i in range(N):
        c = dataclasses.replace(ctx, target=jax.tree_util.tree_map(lambda a: a[i], ctx.target),
                                baseline=ctx.baseline[i])
        ratios = robustness.sensitivity_ratios(lambda image, k: c.explain(image, k), jnp.asarray(x[i]),
                                               jnp.asarray(maps[i][None]), jnp.asarray(noise[i]))
        ours.append(reduce(np.asarray(ratios, np.float64)[:, 0]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_metric_functions_float64_statement(setup):
    """The registered functions: ratio_s = ||a - explain(x + eps_s)|| / ||a|| with eps from the key's
    uniform draws, recomputed here in float64 from the gradient maps of the perturbed inputs."""
    x, y, model, params, maps, ctx = setup
    key = jax.random.key(3)
    got_max = Q.run_metric(table.get("max_sensitivity"), ctx, x, maps[:, None], key, n_samples=3, radius=0.1)
    got_avg = Q.run_metric(table.get("avg_sensitivity"), ctx, x, maps[:, None], key, n_samples=3, radius=0.1)
    for i in range(N):
        noise_key, _ = jax.random.split(jax.random.fold_in(key, i))
        noise = np.asarray(robustness.uniform_noise(noise_key, 3, x.shape[1:], 0.1))
        assert np.all(np.abs(noise) <= 0.1) and noise.std() > 0.03
        perturbed = Q.gradient_maps(params, x[i] + noise, np.full(3, y[i])).astype(np.float64)
        ratios = np.linalg.norm((maps[i] - perturbed).reshape(3, -1), axis=1) / np.linalg.norm(maps[i])
        np.testing.assert_allclose([got_max[i, 0], got_avg[i, 0]], [ratios.max(), ratios.mean()], rtol=1e-4)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_batched_equals_one_explicand_alone(setup):
    """Explicand i scored in a vmapped, jitted batch = scored alone with key fold_in(key, i)."""
    x, y, model, params, maps, ctx = setup
    key = jax.random.key(5)
    batched = Q.run_metric(table.get("avg_sensitivity"), ctx, x, maps[:, None], key, n_samples=2)
    i = 2
    alone = dataclasses.replace(ctx, target=jax.tree_util.tree_map(lambda a: a[i], ctx.target),
                                baseline=ctx.baseline[i])
    single = robustness.avg_sensitivity(alone, jnp.asarray(x[i]), jnp.asarray(maps[i][None]),
                                        jax.random.fold_in(key, i), n_samples=2)
    np.testing.assert_allclose(batched[i], np.asarray(single), rtol=1e-5)
    assert np.all(batched > 0) and np.all(np.isfinite(batched))


def test_records():
    for name in ("max_sensitivity", "avg_sensitivity"):
        record = table.get(name)
        assert record.direction == "lower" and record.needs_explainer and record.uses_key
        assert record.options == {"n_samples": 200, "radius": 0.2}  # Quantus's defaults


def test_per_channel_explainer_against_per_pixel_maps():
    """An explainer with (K, H, W, C) maps scoring (K, H, W) maps: compared as channel means."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(4, 4, 3)).astype(np.float32)
    maps = rng.normal(size=(2, 4, 4)).astype(np.float32)
    weights = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    noise = rng.uniform(-0.1, 0.1, size=(3, 4, 4, 3)).astype(np.float32)
    got = np.asarray(robustness.sensitivity_ratios(lambda image, k: weights * image, x, maps, noise))
    for s in range(3):
        moved = (weights * (x + noise[s])).mean(axis=-1).astype(np.float64)
        want = np.linalg.norm((maps - moved).reshape(2, -1), axis=1) / np.linalg.norm(maps.reshape(2, -1), axis=1)
        np.testing.assert_allclose(got[s], want, rtol=1e-5)
