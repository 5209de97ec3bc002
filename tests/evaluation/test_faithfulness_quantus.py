"""The faithfulness metrics against Quantus 0.6 itself (tests/reference/quantus_side.py).

One random network twice (JAX and torch, same weights); Quantus reads the "logit" [target, c] with
softmax=False and label 0, so it scores the same embedding target. Images have one channel (Quantus
ranks the C x H x W elements of a map broadcast over channels; with C = 1 that is the pixel ranking
cocoa-jax uses), maps are continuous (no ties: NumPy's argsort is not stable) and the baseline is
Quantus's "black". All of cocoa-jax's metrics come from ONE `evaluate` call (one program).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

quantus = pytest.importorskip("quantus")
side = pytest.importorskip("tests.reference.quantus_side")

from cocoa_jax import evaluation, targets  # noqa: E402
from cocoa_jax.evaluation import faithfulness  # noqa: E402

N = 3
KEY = jax.random.key(7)
COMMON = dict(normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
OPTIONS = {
    "pixel_flipping": {"features_in_step": 4},
    "region_perturbation_morf": {"patch_size": 4, "regions_evaluation": 10},
    "region_perturbation_lerf": {"patch_size": 4, "regions_evaluation": 10},
    "faithfulness_correlation": {"nr_runs": 20, "subset_size": 40},
}


@pytest.fixture(scope="module")
def setup():
    from skimage.segmentation import slic

    rng = np.random.default_rng(3)
    w = side.weights(0)
    images = rng.uniform(0, 1, (N, side.HEIGHT, side.WIDTH, side.CHANNELS)).astype(np.float32)
    maps = rng.normal(size=(N, side.HEIGHT, side.WIDTH)).astype(np.float32)
    # Quantus's IROF segments (utils.get_superpixel_segments: slic, start_label=0), fed to cocoa-jax.
    segments = np.stack([slic(im.astype("double"), start_label=0) for im in images])
    target = targets.Target(jnp.asarray(w["direction"], jnp.float32), True)
    scores = evaluation.evaluate(side.jax_encode(w), images, maps, target=target, metrics=(*OPTIONS, "irof"),
                                 options=OPTIONS, baseline="black", key=KEY, segments=segments)
    return dict(w=w, images=images, maps=maps, segments=segments, target=target, scores=scores)


def test_pixel_flipping_equals_quantus(setup):
    metric = quantus.PixelFlipping(features_in_step=4, return_auc_per_sample=True, **COMMON)
    expected = side.run(metric, setup["w"], setup["images"], setup["maps"])
    np.testing.assert_allclose(setup["scores"]["pixel_flipping"][:, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_equals_quantus(setup, order):
    metric = quantus.RegionPerturbation(patch_size=4, regions_evaluation=10, order=order, **COMMON)
    curves = np.asarray(side.run(metric, setup["w"], setup["images"], setup["maps"]))  # (N, 10)
    assert curves.shape == (N, 10)
    np.testing.assert_allclose(setup["scores"][f"region_perturbation_{order}"][:, 0], curves.mean(1),
                               rtol=1e-5, atol=1e-6)


def test_irof_equals_quantus_on_the_same_slic_segments(setup):
    """Quantus is called one explicand per batch: IROF's mask perturbation takes "black" as the
    minimum over the whole batch (and pads explicands with fewer segments with zero ratios); cocoa-jax
    scores each explicand with its own minimum (docs/metrics.md)."""
    assert all(len(np.unique(s)) > 2 for s in setup["segments"])
    metric = quantus.IROF(return_aggregate=False, perturb_baseline="black", **COMMON)
    expected = side.run(metric, setup["w"], setup["images"], setup["maps"], batch_size=1)
    np.testing.assert_allclose(setup["scores"]["irof"][:, 0], expected, rtol=1e-5, atol=1e-5)


def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(setup):
    from quantus.metrics.faithfulness import faithfulness_correlation as module

    n_features = side.HEIGHT * side.WIDTH
    keys = evaluation.explicand_keys(KEY, N)
    draws = np.stack([np.asarray(faithfulness.correlation_subsets(k, n_features, 40, 20)) for k in keys])  # (N, R, s)
    replay = draws.transpose(1, 0, 2).reshape(-1, 40)  # Quantus draws run by run, explicand by explicand
    metric = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=40, return_aggregate=False, **COMMON)
    with side.replayed_choice(module, replay):
        expected = side.run(metric, setup["w"], setup["images"], setup["maps"])
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(setup["scores"]["faithfulness_correlation"][:, 0], expected, rtol=1e-4, atol=1e-5)


def test_linear_imputation_equals_quantus():
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(5)
    x = rng.uniform(size=(12, 10, 2)).astype(np.float32)
    removed = rng.uniform(size=(12, 10)) < 0.6
    removed[0, 0] = removed[-1, -1] = True  # corners: fewer in-frame neighbours
    indices = np.flatnonzero(removed)
    expected = noisy_linear_imputation(x.transpose(2, 0, 1).astype(np.float64), indices, noise=0.0)
    got = np.asarray(faithfulness.linear_imputation(jnp.asarray(x), jnp.asarray(removed)))
    np.testing.assert_allclose(got.transpose(2, 0, 1), expected, atol=2e-5)
    np.testing.assert_array_equal(got[~removed], x[~removed])


PERCENTAGES = [5, 25, 50, 75, 95]


@pytest.fixture(scope="module")
def road(setup):
    """cocoa-jax's ROAD curves of the N explicands (noise 0), both orders, each one jitted program."""
    target = targets.stack([setup["target"]])
    encode = side.jax_encode(setup["w"])
    images = jnp.asarray(setup["images"])
    contexts = evaluation.Context(jax.tree_util.tree_map(lambda d: jnp.broadcast_to(d, (N,) + d.shape), target),
                                  jnp.broadcast_to(images.min(axis=(1, 2, 3), keepdims=True), images.shape),
                                  encode_fn=lambda p, b: encode(b))

    @functools.lru_cache(maxsize=None)  # each (order, noise) computed once for the module
    def curves(order, noise=0.0):
        one = lambda ctx, x, m: faithfulness.road_curve(ctx, x, m[None], KEY, order=order, percentages=PERCENTAGES,
                                                        noise=noise)[0]
        return np.asarray(jax.jit(jax.vmap(one))(contexts, images, jnp.asarray(setup["maps"])))  # (N, P)

    return curves


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_accuracy_equals_quantus_at_a_threshold(setup, road, order):
    """ROAD scores a class decision (argmax == label), here an embedding target: the curve's target
    values, thresholded at c, must give Quantus's accuracy per percentage ([target, c] logits).
    LeRF is Quantus's ROAD (MoRF only) on the negated maps. Noise 0 on both sides."""
    curves = road(order)  # (N, P)
    values = np.sort(curves.ravel())
    gaps = np.diff(values)
    middle = len(values) // 2
    i = middle - 2 + int(np.argmax(gaps[middle - 2: middle + 2]))  # the widest gap near the median
    assert gaps[i] > 1e-4
    threshold = 0.5 * (values[i] + values[i + 1])
    metric = quantus.ROAD(noise=0.0, percentages=PERCENTAGES, **COMMON)
    maps = setup["maps"] if order == "morf" else -setup["maps"]
    accuracy = side.run(metric, setup["w"], setup["images"], maps, threshold=threshold)
    expected = np.array([accuracy[p] for p in PERCENTAGES])
    np.testing.assert_array_equal((curves > threshold).mean(0), expected)
    assert 0 < expected.mean() < 1  # the threshold splits the values


def test_road_noise_is_normal_with_its_scale_on_the_removed_pixels(setup, road):
    """With noise, a percentage's input is the noiseless imputation plus noise * N(0, 1) drawn from
    fold_in(key, percentage index) on the removed pixels: the target there equals a direct score."""
    noisy, clean = road("morf", 0.05), road("morf")
    assert np.all(noisy != clean)
    w, image = setup["w"], setup["images"][0]
    x = jnp.asarray(image)
    ranks = np.argsort(np.argsort(-np.asarray(setup["maps"][0]).ravel(), kind="stable"), kind="stable")
    removed = jnp.asarray((ranks < int(side.HEIGHT * side.WIDTH * 25 / 100)).reshape(side.HEIGHT, side.WIDTH))
    draw = 0.05 * jax.random.normal(jax.random.fold_in(KEY, 1), x.shape)
    assert 0.035 < float(np.asarray(draw)[np.asarray(removed)].std()) < 0.065
    imputed = jax.jit(faithfulness.linear_imputation)(x, removed)
    target = targets.stack([setup["target"]])
    expected = float(target(side.jax_encode(w)(jnp.where(removed[..., None], imputed + draw, x)[None]))[0, 0])
    np.testing.assert_allclose(noisy[0, 1], expected, rtol=1e-5, atol=1e-5)
