"""cocoa_jax.cost: the preview's pass counts equal the passes actually run (counted), the
estimate's arithmetic, and memory monotone in the batch."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import cost, methods, metrics, pipeline, targets

SHAPE = (12, 12, 2)
RNG = np.random.default_rng(0)
PARAMS = {"w": jnp.asarray(RNG.normal(size=(int(np.prod(SHAPE)), 5)), jnp.float32)}
X = jnp.asarray(RNG.uniform(size=(1, *SHAPE)), jnp.float32)
BASELINE = X * 0.5
# Small option sets covering every method's counting rule (enumerated and sampled KernelSHAP,
# LIME's extra f(x), Occlusion's windows, SmoothGrad-IG's samples x points, riemann rules).
OPTIONS = {
    "integrated_gradients": [{"n_steps": 5, "method": "riemann_trapezoid"}],
    "gradient_shap": [{"n_samples": 6}],
    "rise": [{"n_masks": 13, "grid_size": (2, 2)}],
    "smoothgrad": [{"n_samples": 4}],
    "vanilla_gradients": [{}],
    "kernel_shap": [{"n_samples": 11, "superpixel": 3}, {"n_samples": 40, "superpixel": 6, "efficient": True}],
    "lime": [{"n_samples": 9, "superpixel": 4}],
    "occlusion": [{"window": (4, 5), "stride": (4, 3)}],
    "smooth_integrated_gradients": [{"n_samples": 3, "n_steps": 4}],
}


def counting_encode():
    """A toy encoder whose forward and backward passes count the images they see (host
    callbacks run once per image under vmap, once per chunk under scan)."""
    counts = collections.Counter()

    def tally(kind):
        return lambda rows: counts.update({kind: rows.shape[0] if rows.ndim == 4 else 1})

    @jax.custom_vjp
    def counted(xb):
        jax.debug.callback(tally("forward"), xb)
        return xb

    def fwd(xb):
        jax.debug.callback(tally("forward"), xb)
        return xb, None

    def bwd(_, g):
        jax.debug.callback(tally("backward"), g)
        return (g,)

    counted.defvjp(fwd, bwd)

    def encode_fn(params, xb):
        return jax.nn.softplus(counted(xb).reshape(xb.shape[0], -1) @ params["w"])

    return encode_fn, counts


def test_every_counted_method_is_counted_here():
    # Methods that need a model mode (ViT ports: AttnLRP, Rollout; ResNet ports: LRP) are counted with their models.
    stated = {name for name in methods.METHODS if methods.get(name).passes is not None} - {"attn_lrp", "rollout", "lrp"}
    assert set(OPTIONS) == stated, "a method states a pass count this file does not check"


@pytest.mark.slow  # one small program per method (~2 s each on a quiet 2-core CPU)
@pytest.mark.parametrize("name,options", [(n, o) for n, opts in OPTIONS.items() for o in opts])
def test_preview_passes_equal_the_passes_run(name, options):
    encode_fn, counts = counting_encode()
    k = 2
    target = targets.Target(jnp.asarray(RNG.normal(size=(k, 5)), jnp.float32), (True, False))
    keys = pipeline.method_keys(jax.random.key(1), name, 1)
    maps = pipeline.attribute(encode_fn, PARAMS, X, BASELINE, target, name, keys, options=options, batch_size=4)
    assert np.all(np.isfinite(maps))
    expected = cost.method_passes(name, options, SHAPE)
    # A gradient pass runs the encoder forward once and backward once per target (K vectorised).
    assert counts["forward"] == expected.forward + expected.gradient, (name, counts, expected)
    assert counts["backward"] == k * expected.gradient, (name, counts, expected)


def test_evaluation_passes_equal_the_ablations_run():
    encode_fn, counts = counting_encode()
    attribution = jnp.asarray(RNG.normal(size=(3, *SHAPE[:2])), jnp.float32)  # K = 3 maps
    measures = lambda reps: reps[:, :2]
    metrics.insertion_deletion(lambda xb: encode_fn(PARAMS, xb), measures, X[0], BASELINE[0], attribution,
                               n_steps=6, batch_size=5)
    # 42 ablated inputs in 3 equal chunks of 15: the last one padded with 3 repeats.
    assert counts["forward"] == cost.evaluation_passes(6, kinds=2, maps=3, batch_size=5).forward == 45
    assert cost.evaluation_passes(6, kinds=2, maps=3).forward == 3 * 2 * 7
    assert counts["backward"] == 0


def make_probe(**kw):
    values = dict(batch=4, k=2, forward_s=0.01, gradient_s=0.05, forward_bytes=1000 + 4 * 200,
                  gradient_bytes=1000 + 4 * 900, params_bytes=1000, compile_s=0.0)
    values.update(kw)
    return cost.Probe(**values)


def test_estimate_arithmetic(monkeypatch):
    probe = make_probe()
    passes = {"rise": cost.Passes(100, 0), "integrated_gradients": cost.Passes(0, 16)}
    batch = {"rise": cost.Passes(8, 0), "integrated_gradients": cost.Passes(0, 2)}
    est = cost.estimate(passes, 3, probe, batch=batch, lanes=2, resident_bytes=5000,
                        map_bytes={"rise": 7, "integrated_gradients": 11})
    assert est.seconds["rise"] == pytest.approx(3 * 100 * 0.01 / 2)
    assert est.seconds["integrated_gradients"] == pytest.approx(3 * 16 * 0.05 / 2)
    assert est.total_s == pytest.approx(1.5 + 1.2)
    # Programs: forward 1000 + 8 x 200 = 2600; gradient: one batch of the rolled chunk loop,
    # 1000 + 2 x 900 = 2800 (not the 16 points' 1000 + 16 x 900); two lanes at once.
    assert est.peak_bytes == 5000 + 2 * 2800 + 18
    # The same under either XLA CPU scheduler (an unrolled loop held every chunk under the
    # breadth-first one; the rolled loop does not depend on it).
    from cocoa_jax.attribution_methods import _common

    for flags in (_common.SEQUENTIAL_SCHEDULER_FLAG, "", _common.SCHEDULER_FLAG_NAME + "=true"):
        monkeypatch.setenv("XLA_FLAGS", flags)
        assert cost.estimate(passes, 3, probe, batch=batch, lanes=2, resident_bytes=5000,
                             map_bytes={"rise": 7, "integrated_gradients": 11}).peak_bytes == est.peak_bytes
    assert est.work("integrated_gradients") == pytest.approx(3 * 16 * 5.0)  # gradient = 5 forward
    lines = cost.preview_lines(est, limit_s=1.0, cheaper={"--fewer": cost.estimate(
        {"rise": cost.Passes(10, 0)}, 3, probe, lanes=2)})
    assert lines[0].startswith("cost: RISE: 100 forward passes per explicand x 3")
    assert lines[1].startswith("cost: IG: 16 gradient passes per explicand x 3")
    assert lines[-1] == "cost: --fewer would take ~0 s (18.0x less)"


def test_memory_monotone_in_batch():
    probe = make_probe()
    sizes = [probe.bytes_at(b, gradient=g) for g in (False, True) for b in (1, 2, 4, 8, 64)]
    assert sizes[:5] == sorted(sizes[:5]) and sizes[5:] == sorted(sizes[5:])
    chosen = [cost.default_batch_size(probe, budget_bytes=b, largest=32) for b in (0, 3000, 5000, 10 ** 5, 10 ** 9)]
    assert chosen == sorted(chosen) and chosen[0] == 1 and chosen[-1] == 32
    assert cost.default_batch_size(probe, budget_bytes=1000 + 4 * 900) == 4  # exactly fits at 4
    assert cost.default_batch_size(probe, lanes=2, budget_bytes=2 * (1000 + 4 * 900)) == 4


def test_probe_compiled_memory_grows_with_the_batch():
    encode = lambda params, xb: jnp.tanh(xb.reshape(xb.shape[0], -1) @ params["w"])
    small, large = (cost.probe(encode, PARAMS, SHAPE, batch=b, k=2) for b in (2, 16))
    assert small.params_bytes == large.params_bytes == PARAMS["w"].nbytes
    assert small.gradient_bytes < large.gradient_bytes and small.forward_bytes <= large.forward_bytes
    assert small.forward_s > 0 and small.gradient_s > 0


def test_resource_readers():
    assert cost.available_bytes() is None or cost.available_bytes() > 0
    rss, peak = cost.rss_bytes(), cost.peak_rss_bytes()
    assert rss is None or 0 < rss <= peak


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="n_steps"):
        cost.evaluation_passes(0)
    with pytest.raises(ValueError, match="n_explicands"):
        cost.estimate({}, 0, make_probe())
    with pytest.raises(ValueError, match="unknown attribution method"):
        cost.method_passes("nope", {}, SHAPE)


def test_pass_lines_totals():
    lines = cost.pass_lines({"integrated_gradients": {"n_steps": 3}, "rise": {"n_masks": 10, "grid_size": (2, 2)}},
                            SHAPE, explicands=2, where="in all", eval_steps=4, maps=3, references=1)
    evaluation = 3 * 2 * 5  # 3 maps x 2 kinds x (4 + 1) points
    assert lines[0] == f"cost: IG: 3 gradient passes per explicand, evaluation {evaluation} forward passes"
    assert lines[2] == f"cost: random reference: evaluation {evaluation} forward passes per explicand"
    forward = 2 * (10 + 3 * evaluation)
    assert lines[-1] == f"cost: 2 explicand(s) in all: {forward} forward + {2 * 3} gradient passes"


def _budget_case():
    """A closed-form estimate: seconds = passes x the probe's per-pass times, 2 explicands."""
    probe = make_probe(forward_s=0.01, gradient_s=0.05)
    shape = (16, 16, 1)

    def estimate_of(options):
        passes = {m: cost.method_passes(m, options.get(m), shape) for m in options}
        return cost.estimate(passes, 2, probe)

    options = {"integrated_gradients": {"n_steps": 40}, "rise": {"n_masks": 1000, "centered": True},
               "gradient_shap": {"n_samples": 30, "antithetic": True}, "vanilla_gradients": {}}
    return shape, estimate_of, options


def test_fit_budget_scales_every_count_by_one_factor_down_to_the_budget():
    shape, estimate_of, options = _budget_case()
    full = estimate_of(options).total_s  # 2 x (40 x .05 + 1000 x .01 + 30 x .05 + 1 x .05) = 27.1 s
    assert full == pytest.approx(2 * (40 * 0.05 + 1000 * 0.01 + 30 * 0.05 + 0.05))
    fitted, changed = cost.fit_budget(options, shape, estimate_of, 10.0)
    assert estimate_of(fitted).total_s <= 10.0
    assert set(changed) == {"integrated_gradients", "rise", "gradient_shap"}  # Gradients: a fixed count
    assert fitted["vanilla_gradients"] == {}
    factors = {m: after / before for m, (_, before, after) in changed.items()}
    # One common factor (up to rounding down, and up to an even count for antithetic GradientSHAP):
    # the budget left after the fixed Gradients pass over the scalable seconds, shrunk until it fits.
    ideal = (10.0 - 2 * 0.05) / (full - 2 * 0.05)
    for m, factor in factors.items():
        count = changed[m][1]
        assert ideal * 0.8 - 2 / count <= factor <= ideal + 1e-9, (m, factor, ideal)
    assert fitted["gradient_shap"]["n_samples"] % 2 == 0 and fitted["gradient_shap"]["antithetic"] is True
    assert fitted["rise"]["centered"] is True  # the other options are kept
    # Within reach of the budget: not scaled further than needed (>= 80% of it used).
    assert estimate_of(fitted).total_s >= 0.8 * 10.0
    # A budget that fits: nothing changes; counts are never raised.
    same, none = cost.fit_budget(options, shape, estimate_of, 1000.0)
    assert same == options and none == {}


def test_fit_budget_keeps_each_methods_smallest_accepted_count_and_refuses_the_impossible():
    shape, estimate_of, options = _budget_case()
    # The smallest counts: IG 1 step... but centred RISE needs 2 masks and antithetic GradientSHAP 2
    # samples; their total is the least any budget can get.
    least = 2 * (1 * 0.05 + 2 * 0.01 + 2 * 0.05 + 0.05)
    fitted, _ = cost.fit_budget(options, shape, estimate_of, least + 1e-6)
    assert (fitted["rise"]["n_masks"], fitted["gradient_shap"]["n_samples"]) == (2, 2)
    assert fitted["integrated_gradients"]["n_steps"] == 1
    with pytest.raises(cost.BudgetError, match=r"a budget of 0.1 s cannot be met: the smallest counts take ~0.44 s"):
        cost.fit_budget(options, shape, estimate_of, 0.1)
    with pytest.raises(ValueError, match="`budget_s` must be > 0"):
        cost.fit_budget(options, shape, estimate_of, 0.0)
