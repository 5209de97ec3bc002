"""K targets sharing encoder passes in `evaluation.evaluate`, counted: an encode function that counts
the images it is given at run time (`jax.debug.callback`, once per explicand lane and chunk).

Per explicand, with M maps scored against K targets (docs/metrics.md, "Passes shared across
targets"): deletion encodes M (S + 1) images, IROF 1 + M G (G segments), faithfulness correlation
1 + R whatever M. One map per explicand (or K identical maps) is M = 1: each perturbed
input is encoded once and read by the K targets; K different maps are M = K.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import evaluation, targets

H = W = 8
N, K, D = 2, 3, 5
# ROAD, pixel flipping and region perturbation build their inputs through the same `score_steps` as
# IROF (and ROAD compiles slowly): IROF stands for them here.
METRICS = ("deletion", "irof", "faithfulness_correlation")
OPTIONS = {"deletion": {"n_steps": 4}, "irof": {"cell": 4},
           "faithfulness_correlation": {"nr_runs": 5, "subset_size": 8}}
KEY = jax.random.key(3)
_WEIGHTS = jnp.asarray(np.random.default_rng(0).normal(0, 0.5, (H * W, D)), jnp.float32)
_SEEN: list[int] = []


def counting_encode(x):
    """(B, H, W, 1) -> (B, D); adds B to the count each time it runs."""
    jax.debug.callback(lambda rows: _SEEN.append(len(rows)), x[:, 0, 0, 0])
    return jnp.tanh(x.reshape(x.shape[0], -1) @ _WEIGHTS)


def passes_per_explicand(m: int) -> int:
    """Images encoded for one explicand, M maps: the formulas of the module docstring."""
    steps, segments, runs = 4 + 1, (H // 4) * (W // 4), 5
    return m * steps + (1 + m * segments) + (1 + runs)


def run(maps):
    _SEEN.clear()
    target = targets.Target(jnp.asarray(np.random.default_rng(1).normal(size=(K, D)), jnp.float32), (True, False, True))
    images = np.random.default_rng(2).uniform(size=(N, H, W, 1)).astype(np.float32)
    scores = evaluation.evaluate(counting_encode, images, maps, target=target, metrics=METRICS, options=OPTIONS,
                                 key=KEY, baseline="black")
    jax.effects_barrier()
    return scores, sum(_SEEN), len(_SEEN)


@pytest.fixture(scope="module")
def one_map():
    return np.random.default_rng(4).normal(size=(N, H, W)).astype(np.float32)


@pytest.mark.slow  # two compiled programs (M = 1, M = K) of three metrics
def test_one_map_is_encoded_once_for_the_k_targets_and_k_maps_k_times(one_map):
    shared, shared_count, shared_calls = run(one_map)
    assert shared_count == N * passes_per_explicand(1)
    # The same map K times (identical): scored as one map, same program, same passes, same scores.
    same, same_count, _ = run(np.repeat(one_map[:, None], K, axis=1))
    assert same_count == shared_count
    for name in METRICS:
        np.testing.assert_array_equal(same[name], shared[name], err_msg=name)
    # K different maps with the one map's order (positive multiples: same ranks, same Pearson r):
    # K perturbed series, K times the passes (faithfulness correlation excepted), the same scores.
    scaled = one_map[:, None] * np.arange(1, K + 1, dtype=np.float32)[None, :, None, None]
    apart, apart_count, apart_calls = run(scaled)
    assert apart_count == N * passes_per_explicand(K)
    assert apart_calls == shared_calls  # the K maps' inputs of a chunk share one encoder call
    assert passes_per_explicand(K) - passes_per_explicand(1) == (K - 1) * (5 + 4)
    for name in METRICS:
        assert shared[name].shape == (N, K), name
        np.testing.assert_allclose(apart[name], shared[name], rtol=1e-5, atol=1e-6, err_msg=name)


_SMALL = {"max_sensitivity": {"n_samples": 3}}


@pytest.mark.slow  # one program of six metrics (~3 s)
def test_map_only_and_explainer_metrics_score_one_map_as_the_same_map_for_every_target():
    """The metrics that encode no perturbed input of the map (robustness, randomisation, complexity,
    localisation) take M = 1 maps too: the scores equal those of the map repeated K times."""
    from cocoa_jax.evaluation import table

    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.uniform(size=(H, W, 1)), jnp.float32)
    direction = jnp.asarray(rng.normal(size=(K, D)), jnp.float32)

    def explainer(encode, target, image, baseline, key):  # (K, H, W): depends on the image and the target
        del baseline, key
        return jnp.tanh(image[..., 0][None] * 3.0 + target.direction[:, :1, None] + encode(image[None])[0, 0])

    ctx = table.Context(targets.Target(direction, (True,) * K), jnp.zeros_like(x), (),
                        mask=jnp.asarray(rng.uniform(size=(H, W)) > 0.5, jnp.float32),
                        alternative_target=targets.Target(-direction, (True,) * K), randomized_params=((),),
                        encode_fn=lambda params, images: jnp.tanh(images.reshape(len(images), -1) @ _WEIGHTS),
                        explainer=explainer)
    one = jnp.asarray(rng.normal(size=(1, H, W)), jnp.float32)
    # One per code path (avg_sensitivity and smooth_mprt share max_sensitivity's and mprt's).
    checked = [evaluation.get(name) for name in ("max_sensitivity", "mprt", "efficient_mprt", "random_logit",
                                                 "complexity", "relevance_rank_accuracy")]

    @jax.jit
    def scores(ctx, x, one):  # one program for every metric, both layouts
        out = {}
        for record in checked:
            options = record.resolved_options(_SMALL.get(record.name))
            out[record.name] = (record.fn(ctx, x, one, KEY, **options),
                                record.fn(ctx, x, jnp.repeat(one, K, axis=0), KEY, **options))
        return out

    for name, (shared, repeated) in scores(ctx, x, one).items():
        assert repeated.shape == (K,) and shared.shape in ((1,), (K,)), name
        np.testing.assert_allclose(np.broadcast_to(shared, (K,)), repeated, rtol=1e-6, atol=1e-7, err_msg=name)
