"""MPRT, smooth MPRT, efficient MPRT and random logit against Quantus 0.6 (its own randomised layers,
noise and off-label draws recorded and fed to cocoa-jax), and float64 statements."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import skimage.metrics

from cocoa_jax.evaluation import randomisation, table

Q = pytest.importorskip("tests.reference.quantus_metrics_side")
quantus = pytest.importorskip("quantus")

N = 4


@pytest.fixture(scope="module")
def setup():
    x, y = Q.data(N, seed=2)
    model = Q.tiny_net(1)
    params = Q.jax_params(model)
    maps = Q.gradient_maps(params, x, y)  # (N, H, W), what Quantus's explain_func returns
    return x, y, model, params, maps


def _ctx(setup, steps, **fields):
    x, y, model, params, maps = setup
    return Q.contexts(params, y, x, explainer=Q.pixel_explainer("vanilla_gradients"),
                      randomized_params=tuple(steps), **fields)


def test_float64_pieces():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 40)), rng.normal(size=(3, 40))
    a[0, :12] = 0.0  # ties get average ranks
    b[1, 3:9] = 1.5
    for i in range(3):
        assert float(randomisation.spearman(a[i], b[i])) == pytest.approx(scipy.stats.spearmanr(a[i], b[i])[0],
                                                                          abs=1e-6)
        data_range = max(a[i].max(), b[i].max()) - min(a[i].min(), b[i].min())
        assert float(randomisation.ssim_1d(a[i], b[i])) == pytest.approx(
            skimage.metrics.structural_similarity(a[i], b[i], data_range=data_range), abs=1e-6)
        counts, _ = np.histogram(a[i], bins=9)
        assert float(randomisation.histogram_entropy(a[i], 9)) == pytest.approx(scipy.stats.entropy(counts), abs=1e-6)
    with pytest.raises(ValueError, match="at least 7 values"):
        randomisation.ssim_1d(a[:, :5], b[:, :5])


@pytest.mark.parametrize("aggregate", ["last", "mean"])
def test_mprt_equals_quantus_on_its_randomised_layers(setup, aggregate):
    x, y, model, params, maps = setup
    theirs = quantus.MPRT(disable_warnings=True)(model=model, x_batch=Q.to_nchw(x), y_batch=y,
                                                 a_batch=maps[:, None].copy(), explain_func=Q.quantus_explain_func(),
                                                 device="cpu")
    layers = [name for name in theirs if name != "original"]
    assert layers == ["fc", "conv"]  # top down
    per_layer = np.asarray([theirs[name] for name in layers], np.float64)  # (L, N)
    expected = per_layer[-1] if aggregate == "last" else per_layer.mean(axis=0)
    steps = [params for _, params in Q.quantus_cascade(model, "top_down")]
    ours = Q.run_metric(table.get("mprt"), _ctx(setup, steps), x, maps[:, None], jax.random.key(0),
                        aggregate=aggregate)[:, 0]
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    # The documented difference: Quantus's return_average_correlation also averages the original model in.
    quantus_mean = quantus.MPRT(disable_warnings=True, return_average_correlation=True)(
        model=model, x_batch=Q.to_nchw(x), y_batch=y, a_batch=maps[:, None].copy(),
        explain_func=Q.quantus_explain_func(), device="cpu")
    original = np.asarray(theirs["original"], np.float64)
    np.testing.assert_allclose(quantus_mean, (original + per_layer.sum(axis=0)) / (len(layers) + 1), atol=1e-6)


def test_smooth_mprt_equals_quantus_with_its_noise(setup, monkeypatch):
    x, y, model, params, maps = setup
    samples = 4
    record = []
    explain = Q.quantus_explain_func(record)
    monkeypatch.setattr(quantus, "explain", lambda model, inputs, targets, **kw: explain(model, inputs, targets))
    np.random.seed(11)
    theirs = quantus.SmoothMPRT(disable_warnings=True, nr_samples=samples, return_last_correlation=True)(
        model=model, x_batch=Q.to_nchw(x), y_batch=y, a_batch=maps[:, None].copy(), explain_func=explain,
        device="cpu")
    # calls: `samples` per step (original, then each layer bottom up); the last step is fully random
    assert len(record) == 3 * samples
    noise = np.stack([inputs - Q.to_nchw(x) for inputs, _ in record[-samples:]], axis=1)  # (N, S, C, H, W)
    noise = noise.transpose(0, 1, 3, 4, 2)
    assert np.all(noise[:, -1] == 0) and noise[:, 0].std() > 0.05
    last = Q.quantus_cascade(model, "bottom_up")[-1][1]
    ctx = _ctx(setup, [last])
    ours = []
    for i in range(N):
        c = dataclasses.replace(ctx, target=jax.tree_util.tree_map(lambda a: a[i], ctx.target), baseline=ctx.baseline[i])
        smooth = randomisation.smoothed(lambda image, k: c.explain(image, k, params=last), jnp.asarray(x[i]),
                                        jnp.asarray(noise[i]), jax.random.key(0))
        ours.append(float(randomisation.correlations_with(jnp.asarray(maps[i][None]), [smooth])[0, 0]))
    np.testing.assert_allclose(ours, np.asarray(theirs, np.float64), atol=1e-5)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_smooth_mprt_metric_is_its_pieces(setup):
    """The registered function = spearman(|a|, |mean_i explain_last(x + eps_i)|), eps from smooth_noise."""
    x, y, model, params, maps = setup
    last = Q.quantus_cascade(model, "bottom_up")[-1][1]
    ctx = _ctx(setup, [params, last])
    key = jax.random.key(4)
    got = Q.run_metric(table.get("smooth_mprt"), ctx, x, maps[:, None], key, n_samples=3)[:, 0]
    for i in range(N):
        noise_key, explain_key = jax.random.split(jax.random.fold_in(key, i))
        noise = np.asarray(randomisation.smooth_noise(noise_key, jnp.asarray(x[i]), 3, 0.1))
        np.testing.assert_array_equal(noise[-1], 0.0)
        assert noise[0].std() == pytest.approx(0.1 * (x[i].max() - x[i].min()), rel=0.25)
        smooth = np.mean([Q.gradient_maps(last, (x[i] + eps)[None], y[i:i + 1])[0] for eps in noise], axis=0)
        assert got[i] == pytest.approx(scipy.stats.spearmanr(np.abs(maps[i]).ravel(), np.abs(smooth).ravel())[0],
                                       abs=1e-5)


def test_efficient_mprt_equals_quantus(setup):
    x, y, model, params, maps = setup
    theirs = quantus.EfficientMPRT(disable_warnings=True, complexity_func_kwargs={"n_bins": 10})(
        model=model, x_batch=Q.to_nchw(x), y_batch=y, a_batch=maps[:, None].copy(),
        explain_func=Q.quantus_explain_func(), device="cpu")
    last = Q.quantus_cascade(model, "bottom_up")[-1][1]
    ours = Q.run_metric(table.get("efficient_mprt"), _ctx(setup, [last]), x, maps[:, None], jax.random.key(0),
                        n_bins=10)[:, 0]
    np.testing.assert_allclose(ours, np.asarray(theirs, np.float64), atol=1e-5)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_the_cascade_is_the_sweeps(setup):
    """cascade_params: the steps of cascading_randomizations in the traced top-down order; the last
    one is randomize_params of the same key."""
    from cocoa_jax.models.randomize import randomize_params

    x, y, model, params, maps = setup
    steps = randomisation.cascade_params(Q.jax_logits, params, jax.random.key(9), jnp.asarray(x[:1]))
    assert len(steps) == 2
    np.testing.assert_array_equal(steps[0]["conv"]["w"], params["conv"]["w"])  # fc (the top) first
    assert not np.allclose(steps[0]["fc"]["w"], params["fc"]["w"])
    full = randomize_params(params, jax.random.key(9))
    for got, want in zip(jax.tree_util.tree_leaves(steps[-1]), jax.tree_util.tree_leaves(full)):
        np.testing.assert_array_equal(got, want)


def test_random_logit_equals_quantus_with_its_off_labels(setup):
    x, y, model, params, maps = setup
    record = []
    np.random.seed(5)
    # Quantus's normalise_by_max defaults to the max over the WHOLE batch (scores depend on the batch);
    # per explicand, as here, with normalise_axes = the map's own axes
    theirs = quantus.RandomLogit(disable_warnings=True, num_classes=Q.CLASSES,
                                 normalise_func_kwargs={"normalise_axes": (1, 2, 3)})(
        model=model, x_batch=Q.to_nchw(x), y_batch=y, a_batch=maps[:, None].copy(),
        explain_func=Q.quantus_explain_func(record), device="cpu")
    off = record[-1][1]  # Quantus's off-label draw: another logit of the same kind
    assert np.all(off != y)
    ctx = _ctx(setup, [], alternative_target=Q.one_hot_targets(off))
    ours = Q.run_metric(table.get("random_logit"), ctx, x, maps[:, None], jax.random.key(0))[:, 0]
    np.testing.assert_allclose(ours, np.asarray(theirs, np.float64), atol=1e-5)


def test_records_and_missing_inputs(setup):
    assert table.get("mprt").direction == "lower" and table.get("efficient_mprt").direction == "higher"
    assert table.get("random_logit").needs_alternative_target and table.get("smooth_mprt").needs_randomized_model
    x, y, model, params, maps = setup
    with pytest.raises(ValueError, match="randomized_params"):
        Q.run_metric(table.get("mprt"), _ctx(setup, []), x, maps[:, None], jax.random.key(0))
    with pytest.raises(ValueError, match="`aggregate` must be one of"):
        Q.run_metric(table.get("mprt"), _ctx(setup, [params]), x, maps[:, None], jax.random.key(0), aggregate="max")


@pytest.mark.slow
def test_evaluate_scores_do_not_depend_on_the_batch(setup):
    """Through `evaluate` (jit, vmap over explicands): explicand n's smooth MPRT (random noise, an
    explainer, a randomised model, an alternative target unused) is the same in a batch of 4 and of 2."""
    import types

    from cocoa_jax import evaluation

    x, y, model, params, maps = setup
    encoder = types.SimpleNamespace(encode_fn=Q.jax_logits, params=params)
    last = randomisation.cascade_params(Q.jax_logits, params, jax.random.key(2), jnp.asarray(x[:1]))[-1]

    def scores(count):
        return evaluation.evaluate(encoder, x[:count], maps[:count], metrics=("smooth_mprt",),
                                   target=Q.one_hot_targets(y[:count]), key=jax.random.key(8), baseline="zeros",
                                   options={"smooth_mprt": {"n_samples": 2}}, explainer=Q.pixel_explainer(),
                                   randomized_params=(last,))["smooth_mprt"]

    full, part = scores(4), scores(2)
    assert full.shape == (4, 1) and np.all(np.abs(full) <= 1)
    np.testing.assert_allclose(part, full[:2], atol=1e-6)
