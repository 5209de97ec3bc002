"""cocoa_jax.explicand_program: the one explicand program and its parameters (baseline rule, encode
chunking, key rule), against hand-computed values, the formulas each front end used before, and
per-explicand calls of the method table."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import baselines, explicand_program as P, meshes, methods, targets
from cocoa_jax.sweep.programs import unit_keys

from test_pipeline import SMALL, XS, Toy, encode_fn


def test_power_of_two_chunks_by_hand():
    rule = P.PowerOfTwoChunks()  # explain's: at least 8, at most 256
    assert [rule(n) for n in (1, 8, 9, 16, 17, 100, 256, 257, 5000)] == [8, 8, 16, 16, 32, 128, 256, 256, 256]
    assert P.PowerOfTwoChunks(12)(10) == 12 and P.PowerOfTwoChunks(5)(3) == 5  # capped by `largest`


def test_device_chunks_by_hand():
    one = P.DeviceChunks(512)  # the sweep's, eval_batch 512 on 1 device
    assert [one(n) for n in (1, 20, 32, 33, 100, 512, 513, 1000)] == [1, 20, 32, 64, 128, 512, 288, 512]
    eight = P.DeviceChunks(512, devices=8)  # quantum 32 x 8 = 256
    assert [eight(n) for n in (1, 20, 256, 257, 600)] == [8, 24, 256, 512, 512]


def test_key_rule_is_the_one_both_front_ends_used():
    key = jax.random.key(7)
    for method in ("rise", "integrated_gradients"):
        stream = methods.stream_id(method)
        want = jax.random.split(jax.random.fold_in(key, stream), 5)  # explain's rule, eagerly
        np.testing.assert_array_equal(jax.random.key_data(P.method_keys(key, method, 5)), jax.random.key_data(want))
        # The sweep's rule before it used the program's: seed, then class, then stream, then split.
        unit = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), 2), stream)
        np.testing.assert_array_equal(jax.random.key_data(unit_keys(3, 2, method, 4)),
                                      jax.random.key_data(jax.random.split(unit, 4)))
    assert not np.array_equal(jax.random.key_data(unit_keys(3, 2, "rise", 4)),
                              jax.random.key_data(unit_keys(3, 1, "rise", 4)))


def test_paper_baseline_and_its_compiled_batch():
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 32, 32, 3)), jnp.float32)
    eager = baselines.gaussian_blur(x, 21, 5.0)
    np.testing.assert_array_equal(P.PAPER_BASELINE(x), eager)
    # explain, localize and augmentations blur a batch in one program: the same bits as eagerly.
    np.testing.assert_array_equal(P.apply_baseline(P.PAPER_BASELINE, x), eager)
    assert P.GaussianBlur(5, 1.0) == P.GaussianBlur(5, 1.0) and hash(P.GaussianBlur(5, 1.0)) == hash(
        P.GaussianBlur(5, 1.0))  # a value: the program cache reuses a sweep's program


def test_encode_with_and_without_a_mesh_equals_one_call():
    x = np.asarray(np.random.default_rng(2).uniform(size=(13, *Toy.input_shape)), np.float32)
    want = np.asarray(encode_fn(Toy.params, jnp.asarray(x)))
    mesh = meshes.make_mesh(jax.local_devices()[:1])
    for chunks in (P.PowerOfTwoChunks(4), P.DeviceChunks(5)):
        np.testing.assert_allclose(P.encode(encode_fn, Toy.params, x, chunks), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(P.encode(encode_fn, Toy.params, x, chunks, mesh=mesh), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("method", ["integrated_gradients", "rise"])
def test_baseline_rule_inside_the_program_equals_per_explicand_calls(method):
    """The sweep's form (blur rule inside, maps left on the devices) == the method table called per
    explicand on its blurred copy, with the given-baselines form (explain's) agreeing too."""
    reps = encode_fn(Toy.params, XS)
    stacked = targets.stack([targets.label_free(reps), targets.label_free(reps[::-1])])
    rule = P.GaussianBlur(5, 1.0)
    keys = P.method_keys(jax.random.key(4), method, len(XS))
    want = []
    for i in range(len(XS)):
        f = targets.explain_fn(lambda xb: encode_fn(Toy.params, xb), targets.Target(stacked.direction[i],
                                                                                     stacked.normalize))
        want.append(np.asarray(methods.attribute(method, f, XS[i], baselines.gaussian_blur(XS[i], 5, 1.0), keys[i],
                                                 **SMALL[method])))
    want = np.stack(want)
    mesh = meshes.make_mesh(jax.local_devices()[:1])
    options = P.hashable(SMALL[method])
    inside = P.attribution_program(encode_fn, method, options, stacked.normalize, baseline=rule, mesh=mesh,
                                   gather=False)
    got = np.asarray(inside(Toy.params, XS, stacked.direction, keys))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    given = P.attribution_program(encode_fn, method, options, stacked.normalize, mesh=mesh)
    np.testing.assert_allclose(np.asarray(given(Toy.params, XS, stacked.direction, keys, jax.vmap(rule)(XS))), got,
                               rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert P.attribution_program(encode_fn, method, options, stacked.normalize, baseline=P.GaussianBlur(5, 1.0),
                                 mesh=mesh, gather=False) is inside  # one program per parameters
