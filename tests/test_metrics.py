"""Insertion/deletion metrics against an independent float64 NumPy reference."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import metrics, targets
from cocoa_jax.probe import LinearProbe

H, W, C, D = 8, 6, 2, 5


def tiny_model(seed=0):
    """A tiny nonlinear encoder (N, H, W, C) -> (N, D), in JAX and in float64 NumPy."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(H * W * C, 7)) / 6
    w2 = rng.normal(size=(7, D)) / 2

    def encode_jax(x):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.asarray(w1, x.dtype))
        return jax.nn.softplus(h @ jnp.asarray(w2, x.dtype))

    def encode_np(x):
        h = np.tanh(x.reshape(x.shape[0], -1) @ w1)
        return np.logaddexp(0.0, h @ w2)

    return encode_jax, encode_np


def reference_curves(encode_np, measure_np, x, baseline, attribution, n_steps, kind, absolute=False, superpixel=1):
    """Straightforward loop, as in the paper's code: sort, then flip features step by step."""
    # The official evaluation: |a| per channel first, then the channel mean.
    scores = np.abs(attribution) if absolute else attribution
    scores = scores.mean(axis=-1) if scores.ndim == 3 else scores
    sh = sw = superpixel
    scores = scores.reshape(H // sh, sh, W // sw, sw).mean(axis=(1, 3)).reshape(-1)
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    base, rem = divmod(n, n_steps)
    sizes = [0] + [base + (1 if i < rem else 0) for i in range(n_steps)]
    flat_mask = np.zeros(n) if kind == "insertion" else np.ones(n)
    fill = 1.0 if kind == "insertion" else 0.0
    values, counts, done = [], [], 0
    for size in sizes:
        done += size
        flat_mask[order[:done]] = fill
        mask = np.kron(flat_mask.reshape(H // sh, W // sw), np.ones((sh, sw)))[..., None]
        image = x * mask + baseline * (1 - mask)
        values.append(measure_np(encode_np(image[None]))[0])
        counts.append(done)
    values = np.array(values)
    fractions = np.array(counts) / n
    area = np.trapezoid(values, fractions, axis=0)
    return values, area


@pytest.mark.parametrize("n_features,n_steps", [(48, 50 // 2), (48, 48), (50, 7), (10, 1)])
def test_step_sizes_spread_remainder_over_first_steps(n_features, n_steps):
    sizes = metrics.step_sizes(n_features, n_steps)
    assert sizes[0] == 0 and sizes.sum() == n_features and len(sizes) == n_steps + 1
    base, rem = divmod(n_features, n_steps)
    assert list(sizes[1:rem + 1]) == [base + 1] * rem and list(sizes[rem + 1:]) == [base] * (n_steps - rem)
    assert metrics.feature_fractions(n_features, n_steps)[-1] == 1.0


@pytest.mark.parametrize("absolute,superpixel,n_steps", [pytest.param(False, 1, 10, marks=pytest.mark.slow), (True, 1, 7),
                                                        pytest.param(False, 2, 5, marks=pytest.mark.slow)])
def test_curves_and_auc_match_numpy_reference(absolute, superpixel, n_steps):
    encode_jax, encode_np = tiny_model()
    rng = np.random.default_rng(1)
    x = rng.random((H, W, C))
    baseline = rng.random((H, W, C)) * 0.2
    attribution = rng.normal(size=(H, W, C))  # channel-averaged for ranking
    corpus_reps, foil_reps = rng.random((6, D)), rng.random((9, D))
    probe = LinearProbe(jnp.asarray(rng.normal(size=(D, 3)), jnp.float32), jnp.asarray(rng.normal(size=3), jnp.float32))
    explicand_rep = encode_np(x[None])[0]
    measures = metrics.make_measures(
        ("ccs", "explicand_pred_prob", "rep_shift"), ccs=targets.cocoa(corpus_reps, foil_reps),
        probe=probe, explicand_class=2, explicand_rep=explicand_rep)

    def measure_np(reps):
        unit = lambda r: r / np.linalg.norm(r, axis=-1, keepdims=True)
        ccs = (unit(reps) @ unit(corpus_reps).T).mean(-1) - (unit(reps) @ unit(foil_reps).T).mean(-1)
        logits = reps @ np.asarray(probe.weights, np.float64) + np.asarray(probe.bias, np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        shift = np.sqrt(((reps - explicand_rep) ** 2).sum(-1))  # L2, as measures/rep_shift.py
        return np.stack([ccs, p[:, 2], shift], axis=-1)

    curves, aucs = metrics.insertion_deletion(encode_jax, measures, jnp.asarray(x, jnp.float32),
                                              jnp.asarray(baseline, jnp.float32), jnp.asarray(attribution, jnp.float32),
                                              n_steps=n_steps, absolute=absolute, superpixel=superpixel, batch_size=4)
    assert curves.shape == (2, n_steps + 1, 3) and aucs.shape == (2, 3)
    for i, kind in enumerate(metrics.KINDS):
        ref_curve, ref_auc = reference_curves(encode_np, measure_np, x, baseline, attribution, n_steps, kind,
                                              absolute, superpixel)
        np.testing.assert_allclose(np.asarray(curves[i]), ref_curve, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(np.asarray(aucs[i]), ref_auc, rtol=2e-5, atol=2e-5)
    # Insertion ends at the explicand and deletion at the baseline (all features changed).
    full = measure_np(encode_np(x[None]))[0]
    np.testing.assert_allclose(np.asarray(curves[0, -1]), full, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(curves[1, 0]), full, rtol=2e-5, atol=2e-5)


@pytest.mark.slow  # ~20 s
def test_one_encoder_pass_per_step_for_all_measures_and_stacked_attributions():
    encode_jax, _ = tiny_model()
    calls = []

    def counting_encode(batch):
        calls.append(batch.shape[0])
        return encode_jax(batch)

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.random((H, W, C)), jnp.float32)
    measures = metrics.make_measures(("ccs", "ccs_resampled_foil", "rep_shift"),
                                     ccs=targets.corpus(rng.random((3, D))),
                                     ccs_resampled_foil=targets.cocoa(rng.random((3, D)), rng.random((4, D))),
                                     explicand_rep=jnp.zeros(D))
    attrs = jnp.asarray(rng.normal(size=(3, H, W)), jnp.float32)  # K=3 attributions
    curves = metrics.ablation_curves(counting_encode, measures, x, 0 * x, attrs, n_steps=6)
    assert curves.shape == (3, 2, 7, 3)
    assert calls == [3 * 2 * 7]  # one batched pass: K x kinds x steps inputs, every measure from it
    # Stacked attributions give the same curves as one at a time.
    for k in range(3):
        single = metrics.ablation_curves(encode_jax, measures, x, 0 * x, attrs[k], n_steps=6)
        np.testing.assert_allclose(np.asarray(curves[k]), np.asarray(single), rtol=1e-6, atol=1e-6)


def test_jit_and_vmap_over_explicands_and_measures():
    encode_jax, _ = tiny_model()
    rng = np.random.default_rng(3)
    xs = jnp.asarray(rng.random((4, H, W, C)), jnp.float32)
    attrs = jnp.asarray(rng.normal(size=(4, H, W)), jnp.float32)
    refs = encode_jax(xs)
    measures = metrics.make_measures(("ccs", "rep_shift"), ccs=targets.label_free(refs), explicand_rep=refs)

    @jax.jit
    def run(xs, attrs, measures):
        return jax.vmap(lambda x, a, m: metrics.insertion_deletion(encode_jax, m, x, 0.5 * x, a, n_steps=5)[1])(
            xs, attrs, measures)

    batched = run(xs, attrs, measures)
    for i in range(4):
        mi = jax.tree_util.tree_map(lambda leaf: leaf[i], measures)
        one = metrics.insertion_deletion(encode_jax, mi, xs[i], 0.5 * xs[i], attrs[i], n_steps=5)[1]
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(one), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~11 s
def test_perfect_attribution_beats_random_for_a_linear_model():
    """For f(x) = <w, x>, the exact pixel importance is w * (x - baseline)."""
    rng = np.random.default_rng(4)
    w = jnp.asarray(rng.normal(size=(H, W, 1)), jnp.float32)
    x = jnp.asarray(rng.random((H, W, 1)), jnp.float32)
    baseline = jnp.zeros_like(x)
    encode = lambda batch: jnp.sum(batch * w, axis=(1, 2, 3))[:, None]  # 1-D "representation"
    measures = metrics.make_measures("ccs", ccs=targets.Target(jnp.ones(1), False))
    perfect = (w * (x - baseline))[..., 0]
    _, perfect_auc = metrics.insertion_deletion(encode, measures, x, baseline, perfect, n_steps=12)
    random_aucs = np.stack([
        np.asarray(metrics.insertion_deletion(encode, measures, x, baseline,
                                              metrics.random_attribution(k, x.shape), n_steps=12)[1])
        for k in jax.random.split(jax.random.key(0), 20)])
    # Insertion: higher is better; deletion: lower is better; against every random draw.
    assert float(perfect_auc[0, 0]) > random_aucs[:, 0, 0].max()
    assert float(perfect_auc[1, 0]) < random_aucs[:, 1, 0].min()
    # The reversed ranking is the worst: it swaps the roles.
    _, worst_auc = metrics.insertion_deletion(encode, measures, x, baseline, -perfect, n_steps=12)
    assert float(worst_auc[0, 0]) < random_aucs[:, 0, 0].min()


def test_majority_class_and_bad_inputs():
    logits = jnp.asarray([[0, 5, 0], [0, 0, 9], [0, 3, 0]], jnp.float32)
    assert int(metrics.majority_class(logits)) == 1
    x = jnp.zeros((H, W, C))
    encode, _ = tiny_model()
    measures = metrics.make_measures("rep_shift", explicand_rep=jnp.zeros(D))
    with pytest.raises(ValueError, match="kinds"):
        metrics.ablation_curves(encode, measures, x, x, jnp.zeros((H, W)), kinds=("sideways",))
    with pytest.raises(ValueError, match="superpixel"):
        metrics.ablation_curves(encode, measures, x, x, jnp.zeros((H, W)), superpixel=5)
    with pytest.raises(ValueError, match="baseline"):
        metrics.ablation_curves(encode, measures, x, jnp.zeros((H, W, 1)), jnp.zeros((H, W)))
    with pytest.raises(ValueError, match="n_steps"):
        metrics.step_sizes(10, 11)
    with pytest.raises(ValueError, match="attribution"):
        metrics.feature_scores(jnp.zeros((H + 1, W)), x.shape)
    with pytest.raises(ValueError, match="probe"):
        metrics.make_measures("corpus_majority_prob", corpus_majority_class=0)
    with pytest.raises(ValueError, match="unknown measure 'bogus'"):
        metrics.make_measures("bogus")


@pytest.mark.slow  # many compilations
def test_batched_form_equals_one_explicand_at_a_time_and_absolute_is_per_channel():
    encode_jax, _ = tiny_model()
    rng = np.random.default_rng(5)
    n = 3
    xs = jnp.asarray(rng.random((n, H, W, C)), jnp.float32)
    bases = 0.3 * xs
    attrs = jnp.asarray(rng.normal(size=(n, 2, H, W, C)), jnp.float32)  # K=2, per channel
    refs = encode_jax(xs)
    probe = LinearProbe(jnp.asarray(rng.normal(size=(D, 3)), jnp.float32), jnp.zeros(3, jnp.float32))
    batched_probe = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), probe)
    measures = metrics.make_measures(("ccs", "corpus_majority_prob", "rep_shift"), ccs=targets.label_free(refs),
                                     probe=batched_probe, corpus_majority_class=jnp.asarray([0, 1, 2]),
                                     explicand_rep=refs)
    curves, aucs = jax.jit(lambda m, *a: metrics.insertion_deletion_batch(encode_jax, m, *a, n_steps=4, absolute=True,
                                                                          batch_size=7))(measures, xs, bases, attrs)
    assert curves.shape == (n, 2, 2, 5, 3) and aucs.shape == (n, 2, 2, 3)
    for i in range(n):
        mi = jax.tree_util.tree_map(lambda leaf: leaf[i], measures)
        c1, a1 = metrics.insertion_deletion(encode_jax, mi, xs[i], bases[i], attrs[i], n_steps=4, absolute=True)
        np.testing.assert_allclose(np.asarray(curves[i]), np.asarray(c1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(aucs[i]), np.asarray(a1), rtol=1e-5, atol=1e-6)
    # |a| per channel then the mean differs from |channel mean| when channels disagree in sign.
    a = jnp.asarray(np.stack([np.ones((H, W)), -np.ones((H, W)) * 3], axis=-1), jnp.float32)
    np.testing.assert_allclose(np.asarray(metrics.feature_scores(a, (H, W, C), absolute=True)), 2.0)
    np.testing.assert_allclose(np.asarray(metrics.feature_scores(a, (H, W, C), absolute=False)), -1.0)


def test_each_measure_states_its_direction():
    """Written out here, not read from the table: similarities and probabilities rise with inserted
    evidence (higher insertion, lower deletion AUC is better); representation shift, a distance
    from the explicand, is the reverse."""
    from cocoa_jax.metrics import MEASURES, Measure

    expected = {"ccs": ("higher", "lower"), "ccs_resampled_foil": ("higher", "lower"),
                "corpus_majority_prob": ("higher", "lower"), "explicand_pred_prob": ("higher", "lower"),
                "rep_shift": ("lower", "higher")}
    assert {name: (m.better("insertion"), m.better("deletion")) for name, m in MEASURES.items()} == expected
    assert (MEASURES["rep_shift"].arrow("insertion"), MEASURES["rep_shift"].arrow("deletion")) == ("↓", "↑")
    assert (MEASURES["ccs"].arrow("insertion"), MEASURES["ccs"].arrow("deletion")) == ("↑", "↓")
    with pytest.raises(ValueError, match="kind"):
        MEASURES["ccs"].better("sideways")
    with pytest.raises(ValueError, match="insertion"):
        Measure("t", lambda reps, c: reps, (), insertion="up")
