"""Two local processes under `jax.distributed` (CPU, 127.0.0.1) give one process's result.

Each worker process (this file run as a script) joins a 2-process cluster, builds a mesh over
the devices of both processes and computes (a) Integrated Gradients and RISE of one explicand
with the perturbations split over both processes and (b) RISE for a batch of 3 explicands
sharded over both processes (padded to 4), and (c) the library path of a user's own
`jax.distributed` program: `models.load("digits")` from its directory in each process (no
collective restore), then RISE with a COCOA target for 3 digits sharded over the global mesh.
The test computes the same in this process, on one device, and compares; it also checks that
both processes got the full result and the same weights, and that `units_for_process` gives
each process a disjoint share of a sweep's units.
"""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.support.xla import child_flags

pytestmark = pytest.mark.slow  # two jax.distributed processes (~20 s)

REPO = pathlib.Path(__file__).resolve().parents[1]
N_PROCESSES = 2
N_UNITS = 7


def _problem():
    import jax
    import jax.numpy as jnp

    from cocoa_jax import attribution, targets

    rng = np.random.default_rng(1)
    h, w, c, d = 8, 8, 3, 5
    weights = jnp.asarray(rng.normal(size=(h * w * c, d)) / 10, jnp.float32)
    encode = lambda xb: jnp.tanh(xb.reshape(xb.shape[0], -1) @ weights)
    corpus = jnp.asarray(rng.normal(size=(4, d)), jnp.float32)
    foil = jnp.asarray(rng.normal(size=(6, d)), jnp.float32)
    f = targets.explain_fn(encode, targets.stack([targets.cocoa(corpus, foil), targets.corpus(corpus)]))
    xs = rng.uniform(size=(3, h, w, c)).astype(np.float32)
    key = jax.random.key(5)

    def one_explicand(x, mesh):
        return {
            "ig": attribution.integrated_gradients(f, x, jnp.zeros_like(x), n_steps=7, batch_size=4, mesh=mesh),
            "rise": attribution.rise(f, x, jnp.zeros_like(x), key, n_masks=10, grid_size=(2, 2), batch_size=5,
                                     mesh=mesh),
        }

    def rise_one(x, k):
        return attribution.rise(f, x, jnp.zeros_like(x), k, n_masks=6, grid_size=(2, 2))

    keys = jax.random.split(jax.random.key(9), len(xs))
    return xs, keys, one_explicand, rise_one


def _digits_problem():
    """models.load("digits") from its directory, 3 test digits, and RISE toward a COCOA target."""
    import jax
    import jax.numpy as jnp

    from cocoa_jax import attribution, models, targets
    from cocoa_jax.data.digits import load_digits_split

    model = models.load("digits")
    split = load_digits_split()
    xs = split.x_test[:3]
    corpus = model.encode(split.x_train[split.y_train == 3][:4])  # host-local, the same in every process
    foil = model.encode(split.x_train[:6])
    target = targets.cocoa(corpus, foil)

    def rise_one(x, key, params):
        f = targets.explain_fn(lambda xb: model.encode_fn(params, xb), target)
        return attribution.rise(f, x, jnp.zeros_like(x), key, n_masks=8, grid_size=(2, 2))

    keys = jax.random.split(jax.random.key(3), len(xs))
    return model, xs, keys, rise_one


def _worker(process_id: int, port: int, out_path: str) -> None:
    from cocoa_jax import distributed, meshes

    distributed.initialize_distributed(f"127.0.0.1:{port}", N_PROCESSES, process_id)
    import jax

    assert jax.process_count() == N_PROCESSES and jax.device_count() == N_PROCESSES * jax.local_device_count()
    mesh = meshes.make_mesh()
    xs, keys, one_explicand, rise_one = _problem()
    replicated = meshes.replicated_sharding(mesh)
    x = meshes.global_array(xs[0], replicated)
    single = jax.jit(lambda x_: one_explicand(x_, mesh), out_shardings=replicated)(x)
    batch = meshes.ExplicandMap(rise_one, mesh)(xs, keys)
    units = distributed.units_for_process([f"unit{i}" for i in range(N_UNITS)])
    from cocoa_jax.sweep.inputs import fingerprint_params

    model, digits, digit_keys, rise_digit = _digits_problem()
    digits_rise = meshes.ExplicandMap(rise_digit, mesh, in_axes=(0, 0, None))(digits, digit_keys, model.params)
    np.savez(out_path, ig=np.asarray(single["ig"]), rise=np.asarray(single["rise"]), batch=np.asarray(batch),
             digits_rise=np.asarray(digits_rise), weights=fingerprint_params(model.params),
             units=np.array(units, dtype=object), n_devices=jax.device_count(), allow_pickle=True)
    jax.distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = child_flags()  # one CPU device per process
    procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(tmp / f"p{i}.npz")], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(N_PROCESSES)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-6000:]
    out = []
    for i in range(N_PROCESSES):
        with np.load(tmp / f"p{i}.npz", allow_pickle=True) as data:
            out.append({k: data[k] for k in data.files})
    return out


@pytest.fixture(scope="module")
def one_process_result():
    import jax

    xs, keys, one_explicand, rise_one = _problem()
    single = jax.jit(lambda x_: one_explicand(x_, None))(xs[0])
    batch = jax.jit(jax.vmap(rise_one))(xs, keys)
    from cocoa_jax.sweep.inputs import fingerprint_params

    model, digits, digit_keys, rise_digit = _digits_problem()
    digits_rise = jax.jit(jax.vmap(rise_digit, in_axes=(0, 0, None)))(digits, digit_keys, model.params)
    return {"ig": np.asarray(single["ig"]), "rise": np.asarray(single["rise"]), "batch": np.asarray(batch),
            "digits_rise": np.asarray(digits_rise), "weights": fingerprint_params(model.params)}


def test_cluster_spans_both_processes(process_results):
    assert [int(r["n_devices"]) for r in process_results] == [N_PROCESSES] * N_PROCESSES


@pytest.mark.parametrize("name", ["ig", "rise", "batch", "digits_rise"])
def test_two_processes_equal_one_process(process_results, one_process_result, name):
    reference = one_process_result[name]
    assert np.abs(reference).max() > 0
    for result in process_results:  # every process holds the full, equal result
        assert result[name].shape == reference.shape
        np.testing.assert_allclose(result[name], reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())


def test_each_process_loads_the_model_directory_to_the_same_weights(process_results, one_process_result):
    # models.load("digits") inside a jax.distributed job: host-local, no collective restore.
    assert [str(r["weights"]) for r in process_results] == [one_process_result["weights"]] * N_PROCESSES


def test_each_process_owns_distinct_units(process_results):
    owned = [list(r["units"]) for r in process_results]
    assert all(owned)
    assert sorted(u for units in owned for u in units) == sorted(f"unit{i}" for i in range(N_UNITS))


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
