"""`evaluate`'s per-call costs: compiled programs and the encoder's output size kept across calls
(checked by trace counters, not timings), map-only metrics in one program call, sensitivity noise
samples explained in vmapped chunks with the same ratios as one at a time."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import evaluation, meshes, targets
from cocoa_jax.evaluation import complexity, localisation, robustness, scoring, table

H = W = 8
C = 2
TRACES = collections.Counter()


def _weights():
    return jnp.asarray(np.random.default_rng(0).normal(0, 0.3, (H * W * C, 4)), jnp.float32)


def encode(x):
    TRACES["encode"] += 1  # Python side effect: counts traces of the encoder, not runs
    return jnp.tanh(x.reshape(x.shape[0], -1) @ _weights())


def _data(seed, n=3):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(n, H, W, C)).astype(np.float32)
    maps = rng.normal(size=(n, H, W)).astype(np.float32)
    target = targets.Target(jnp.asarray(rng.normal(size=(4,)).astype(np.float32)), True)
    return images, maps, target


def test_a_second_call_with_the_same_shapes_traces_nothing_again():
    names = ("pixel_flipping", "sparseness")
    run = lambda seed, step=16: evaluation.evaluate(encode, *_data(seed)[:2], target=_data(seed)[2], metrics=names,
                                                    options={"pixel_flipping": {"features_in_step": step}},
                                                    baseline="zeros")
    first = run(0)
    programs, encodes = scoring._traces[names], TRACES["encode"]
    assert programs >= 1 and encodes >= 1
    second = run(1)  # new data, same shapes: the kept program and the kept representation size
    assert scoring._traces[names] == programs and TRACES["encode"] == encodes
    program = next(p for key, p in scoring._PROGRAMS.items() if key[2] == names)
    assert program.lanes_per_device == meshes.default_lanes_per_device()  # encoder passes: the per-device default
    assert not np.allclose(first["pixel_flipping"], second["pixel_flipping"])  # it did run on the new data
    images, maps, target = _data(1)
    np.testing.assert_allclose(second["sparseness"][:, 0], np.asarray(complexity.sparseness(maps)), rtol=1e-6)
    run(2, step=32)  # another option value is another program: traced once (the counter sees traces)
    assert scoring._traces[names] == programs + 1


def test_map_only_metrics_run_every_explicand_in_one_call_without_the_model():
    assert {name for name, record in table.METRICS.items() if not record.reads_model} == {
        "sparseness", "complexity", "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy"}
    images, maps, target = _data(3, n=5)
    masks = np.zeros((5, H, W), bool)
    masks[:, 2:5, 1:6] = True
    names = ("complexity", "relevance_mass_accuracy")
    got = evaluation.evaluate(encode, images, maps, target=target, metrics=names, masks=masks, baseline="zeros")
    program = next(p for key, p in scoring._PROGRAMS.items() if key[2] == names)
    assert program.lanes_per_device is None  # all five explicands in one program call
    np.testing.assert_allclose(got["complexity"][:, 0], np.asarray(complexity.complexity(maps)), rtol=1e-6)
    mass = np.stack([np.asarray(localisation.relevance_mass_accuracy(maps[i:i + 1], masks[i]))[0] for i in range(5)])
    np.testing.assert_allclose(got["relevance_mass_accuracy"][:, 0], mass, rtol=1e-5)  # float32 sums


def test_sensitivity_samples_explained_in_chunks_equal_one_at_a_time():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(size=(H, W, C)).astype(np.float32))
    maps = jnp.asarray(rng.normal(size=(2, H, W)).astype(np.float32))
    weights = jnp.asarray(rng.normal(size=(2, H, W, C)).astype(np.float32))
    noise = jnp.asarray(rng.uniform(-0.1, 0.1, size=(5, H, W, C)).astype(np.float32))
    # reads its key too (sample s must get fold_in(key, s) in every layout); key bits, not a draw: cheap to compile
    explain = lambda image, key: jnp.tanh(weights * image) + 1e-3 * (jax.random.key_data(key)[-1] % 7).astype(jnp.float32)

    @jax.jit
    def layouts():  # 1: one at a time (lax.map); 2: chunks, the last one padded; 8: more than S, one vmapped call
        return [robustness.sensitivity_ratios(explain, x, maps, noise, jax.random.key(2), samples_per_call=per_call)
                for per_call in (1, 2, 8)]

    one, *chunked = (np.asarray(r) for r in layouts())
    assert one.shape == (5, 2) and np.all(one > 0)
    for got in chunked:
        np.testing.assert_allclose(got, one, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="`samples_per_call` must be a positive integer, got 0"):
        robustness.sensitivity_ratios(explain, x, maps, noise, samples_per_call=0)
