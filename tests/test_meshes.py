"""Meshes and the explicand map (`cocoa_jax.meshes`), and sharded results equal to single-device results.

The multi-device checks run in ONE subprocess with 8 forced CPU host devices (XLA_FLAGS must
be set before JAX starts, and other tests share this pytest process). The worker is this
file run as a script; it saves single-device and 8-device results side by side and the
test compares them here.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import meshes

REPO = pathlib.Path(__file__).resolve().parents[1]
N_DEVICES = 8


def test_make_mesh_is_auto_and_checks_arguments():
    mesh = meshes.make_mesh()
    assert mesh.axis_names == ("batch",) and mesh.devices.size == jax.device_count()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    with pytest.raises(ValueError, match="devices"):
        meshes.make_mesh([])
    with pytest.raises(ValueError, match="axis_name"):
        meshes.make_mesh(axis_name="")
    with pytest.raises(TypeError, match="mesh"):
        meshes.explicand_sharding("not a mesh")


def test_explicand_map_argument_errors():
    fn = lambda a, b: a + b
    with pytest.raises(ValueError, match="in_axes"):
        meshes.ExplicandMap(fn, in_axes=(0,))(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="at least one argument as batched"):
        meshes.ExplicandMap(fn, in_axes=(None, None))(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="leading"):
        meshes.ExplicandMap(fn)(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="fn"):
        meshes.ExplicandMap(3)


@pytest.mark.parametrize("gather", [True, False])
def test_explicand_map_lanes_per_device_splits_calls(gather):
    # One device: 7 explicands in calls of 1, 2, 3 (the last padded) or all 7 equal a plain loop.
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(7, 5)).astype(np.float32)
    weights = rng.normal(size=(5, 4)).astype(np.float32)
    fn = lambda x, w: {"out": jnp.tanh(x @ w), "norm": jnp.sum(x * x)}
    want = {"out": np.tanh(xs.astype(np.float64) @ weights), "norm": np.sum(xs.astype(np.float64) ** 2, axis=1)}
    calls = []
    for lanes in (1, 2, 3, None):
        mapper = meshes.ExplicandMap(fn, meshes.make_mesh(jax.devices()[:1]), (0, None), gather=gather,
                                       lanes_per_device=lanes)
        program = mapper._jitted((0, None))
        mapper._compiled[(0, None)] = lambda *a: calls.append(a[0].shape[0]) or program(*a)
        got = mapper(xs, weights)
        for name in want:
            assert got[name].shape == want[name].shape
            np.testing.assert_allclose(np.asarray(got[name]), want[name], rtol=1e-5, atol=1e-6)
    assert calls == [1] * 7 + [2] * 4 + [3] * 3 + [7]


def test_explicand_map_lanes_per_device_default_and_errors():
    assert meshes.default_lanes_per_device() == (1 if jax.default_backend() == "cpu" else None)
    assert meshes.ExplicandMap(abs).lanes_per_device == meshes.default_lanes_per_device()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="lanes_per_device"):
            meshes.ExplicandMap(abs, lanes_per_device=bad)


@pytest.mark.parametrize("n", [0, -1, 1.5, True, None])
def test_local_explicand_mesh_rejects_bad_counts(n):
    with pytest.raises(ValueError, match="`n` must be a positive integer"):
        meshes.local_explicand_mesh(n)


def test_local_explicand_mesh_one_device_is_none():
    assert meshes.local_explicand_mesh(1) is None
    assert len(jax.local_devices()) > 1 or meshes.local_explicand_mesh(5) is None


def test_host_device_count_flags_replaces_earlier_count():
    flags = meshes.host_device_count_flags(4, "--foo=1 --xla_force_host_platform_device_count=2")
    assert flags == "--foo=1 --xla_force_host_platform_device_count=4"
    with pytest.raises(ValueError, match="count"):
        meshes.host_device_count_flags(0)


# ----------------------------------------------------------------------------- 8 devices vs 1


def _worker(out_path: str) -> None:
    """Run in a subprocess with 8 host devices: save (single, sharded) result pairs."""
    import jax.numpy as jnp

    from cocoa_jax import attribution, targets

    assert jax.device_count() == N_DEVICES, jax.devices()
    mesh = meshes.make_mesh()
    rng = np.random.default_rng(0)
    h, w, c, d = 8, 8, 3, 6
    weights = jnp.asarray(rng.normal(size=(h * w * c, d)) / 10, jnp.float32)
    encode = lambda xb: jnp.tanh(xb.reshape(xb.shape[0], -1) @ weights)
    corpus = jnp.asarray(rng.normal(size=(4, d)), jnp.float32)
    foil = jnp.asarray(rng.normal(size=(5, d)), jnp.float32)
    target1 = targets.cocoa(corpus, foil)
    target2 = targets.stack([target1, targets.corpus(corpus, similarity="dot")])
    x = jnp.asarray(rng.uniform(size=(h, w, c)), jnp.float32)
    base = jnp.zeros_like(x)
    baselines = jnp.asarray(rng.uniform(size=(3, h, w, c)), jnp.float32)
    key = jax.random.key(3)

    # Work counts that do not divide 8 devices (10 IG steps in batches of 6, 11 samples in
    # batches of 6, 22 masks in batches of 10) and one that does (16 masks, batch 8); K=1
    # (grad) and K=2 stacked targets (jacrev). Few programs: CPU compiles of the RNG are slow.
    k1 = targets.explain_fn(encode, target1)
    k2 = targets.explain_fn(encode, target2)
    cases = {
        "ig_k1": lambda m: attribution.integrated_gradients(k1, x, base, n_steps=10, batch_size=6, mesh=m),
        "ig_k2": lambda m: attribution.integrated_gradients(k2, x, base, n_steps=10, batch_size=6, mesh=m),
        "gradient_shap_k2": lambda m: attribution.gradient_shap(k2, x, baselines, key, n_samples=11,
                                                                batch_size=6, mesh=m),
        "smoothgrad_k1": lambda m: attribution.smoothgrad(k1, x, key, n_samples=11, stdev=0.3,
                                                          batch_size=6, mesh=m),
        "rise_k1": lambda m: attribution.rise(k1, x, base, key, n_masks=22, grid_size=(2, 2),
                                              batch_size=10, mesh=m),
        "rise_k2_divides": lambda m: attribution.rise(k2, x, base, key, n_masks=16, grid_size=(4, 4),
                                                      batch_size=8, mesh=m),
    }
    # The streaming forward sum itself: 11 samples from index 2 in chunks of 5, each padded to 8
    # rows; the count of valid rows (the last entry) must stay 11 on 8 devices.
    from cocoa_jax import batching
    rows_table = jnp.asarray(rng.uniform(size=(13, h, w)), jnp.float32)

    def forward_sum(m):
        def terms(rows, inputs, scores, valid):
            return jnp.concatenate([(scores.T @ rows.reshape(rows.shape[0], -1)).ravel(), jnp.sum(valid)[None]])
        return batching.sum_forward_terms(k2, 13, 5, m, lambda idx: rows_table[idx],
                                          lambda rows: x * rows[..., None], terms, start=2)
    cases["forward_sum_k2"] = forward_sum
    # Insertion/deletion: 2 kinds x 2 targets x 9 steps = 36 ablated inputs in chunks of 10.
    from cocoa_jax import metrics
    attr2 = jnp.asarray(rng.normal(size=(2, h, w)), jnp.float32)
    cases["insdel_k2"] = lambda m: metrics.insertion_deletion(
        encode, target2, x, base + 0.5, attr2, n_steps=8, batch_size=10, mesh=m)[0]
    results = {}
    for name, method in cases.items():
        single = jax.jit(lambda x_: method(None))(x)
        compiled = jax.jit(lambda x_: method(mesh)).lower(x).compile()
        # The sharding constraint really is in the program (the batch is split, then reduced).
        text = compiled.as_text()
        assert "all-reduce" in text or "all-gather" in text or "reduce-scatter" in text, name
        results[f"{name}_single"] = np.asarray(single)
        results[f"{name}_sharded"] = np.asarray(compiled(x))

    # A batch of 5 explicands (does not divide 8): vmapped + sharded vs a plain vmap, with
    # per-explicand keys and a per-explicand label-free target, also with perturbations sharded.
    xs = jnp.asarray(rng.uniform(size=(5, h, w, c)), jnp.float32)
    keys = jax.random.split(jax.random.key(7), 5)

    def explain_one(xi, ki, corpus_reps):
        target = targets.stack([targets.cocoa(corpus_reps, foil), targets.label_free(encode(xi[None])[0])])
        f = targets.explain_fn(encode, target)
        return {
            "rise": attribution.rise(f, xi, jnp.zeros_like(xi), ki, n_masks=12, grid_size=(2, 2),
                                     batch_size=6, mesh=None),
            "ig": attribution.integrated_gradients(f, xi, jnp.zeros_like(xi), n_steps=5),
        }

    plain = jax.jit(jax.vmap(explain_one, in_axes=(0, 0, None)))(xs, keys, corpus)
    mapper = meshes.ExplicandMap(explain_one, mesh, (0, 0, None))
    mapped = mapper(xs, keys, corpus)
    # Another length (3 < 8 devices), result kept sharded over the explicand axis.
    kept = meshes.ExplicandMap(explain_one, mesh, (0, 0, None), gather=False)(xs[:3], keys[:3], corpus)
    assert kept["rise"].shape[0] == 3
    # 13 explicands, one per device per call (the CPU default): two calls of 8 lanes, the last
    # padded, joined on the devices; kept sharded and gathered.
    xs13 = jnp.asarray(rng.uniform(size=(13, h, w, c)), jnp.float32)
    keys13 = jax.random.split(jax.random.key(8), 13)
    plain13 = jax.jit(jax.vmap(explain_one, in_axes=(0, 0, None)))(xs13, keys13, corpus)
    split = meshes.ExplicandMap(explain_one, mesh, (0, 0, None), lanes_per_device=1)
    split_kept = meshes.ExplicandMap(explain_one, mesh, (0, 0, None), gather=False, lanes_per_device=1)
    joined, joined_kept = split(xs13, keys13, corpus), split_kept(xs13, keys13, corpus)
    assert joined["rise"].shape[0] == 13 and joined_kept["ig"].shape[0] == 13
    for name in ("rise", "ig"):
        results[f"explicands13_{name}_single"] = np.asarray(plain13[name])
        results[f"explicands13_{name}_sharded"] = np.asarray(joined[name])
        results[f"explicands13kept_{name}_single"] = np.asarray(plain13[name])
        results[f"explicands13kept_{name}_sharded"] = np.asarray(joined_kept[name])
    for name in ("rise", "ig"):
        results[f"explicands_{name}_single"] = np.asarray(plain[name])
        results[f"explicands_{name}_sharded"] = np.asarray(mapped[name])
        results[f"explicands3_{name}_single"] = np.asarray(plain[name])[:3]
        results[f"explicands3_{name}_sharded"] = np.asarray(kept[name])
    # A command's mesh: one explicand per device, at most the explicand count of devices.
    results["local_mesh_sizes"] = np.array([0 if m is None else m.devices.size for m in
                                            map(meshes.local_explicand_mesh, (1, 2, 3, 8, 20))])
    np.savez(out_path, **results)


@pytest.fixture(scope="module")
def eight_device_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("meshes") / "results.npz"
    env = dict(os.environ, XLA_FLAGS=meshes.host_device_count_flags(N_DEVICES), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__, str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    with np.load(out) as data:
        return dict(data)


CASES = ["ig_k1", "ig_k2", "gradient_shap_k2", "smoothgrad_k1", "rise_k1", "rise_k2_divides", "insdel_k2",
         "forward_sum_k2"] + [
    f"explicands{v}_{m}" for v in ("", "3", "13", "13kept") for m in ("rise", "ig")]


@pytest.mark.slow  # 8-device subprocess (~20 s); sweep-level 8-device test in test_sweep_scale.py
@pytest.mark.parametrize("case", CASES)
def test_eight_devices_equal_one_device(eight_device_results, case):
    single = eight_device_results[f"{case}_single"]
    sharded = eight_device_results[f"{case}_sharded"]
    assert single.shape == sharded.shape
    assert np.all(np.isfinite(single)) and np.abs(single).max() > 0  # a non-trivial result
    scale = np.abs(single).max()
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.slow  # the 8-device subprocess above
def test_forward_sum_counts_no_padded_row_on_eight_devices(eight_device_results):
    assert eight_device_results["forward_sum_k2_sharded"][-1] == 11 == eight_device_results["forward_sum_k2_single"][-1]


@pytest.mark.slow  # the 8-device subprocess above
def test_local_explicand_mesh_sizes_on_eight_devices(eight_device_results):
    np.testing.assert_array_equal(eight_device_results["local_mesh_sizes"], [0, 2, 3, 8, 8])


if __name__ == "__main__":
    _worker(sys.argv[1])
