"""Padding, chunking and the streaming forward sum (`cocoa_jax.batching`); the layer rule.

`sum_forward_terms` is checked against a float64 NumPy loop here, and through every
forward-only method against Captum / NumPy in their own tests; over 8 devices (padded
chunks) in tests/test_meshes.py.
"""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import batching


@pytest.mark.parametrize("use_jax", [False, True])
def test_pad_to_multiple_repeats_last_entry(use_jax):
    data = np.arange(10.0).reshape(5, 2)
    data = jax.numpy.asarray(data) if use_jax else data
    padded, n = batching.pad_to_multiple(data, 4)
    assert n == 5 and padded.shape == (8, 2)
    np.testing.assert_array_equal(np.asarray(padded)[:5], np.asarray(data))
    np.testing.assert_array_equal(np.asarray(padded)[5:], np.tile(np.asarray(data)[-1:], (3, 1)))
    same, n = batching.pad_to_multiple(data, 5)
    assert n == 5 and same.shape == (5, 2)


def test_pad_to_multiple_typed_keys():
    keys = jax.random.split(jax.random.key(0), 3)
    padded, n = batching.pad_to_multiple(keys, 4)
    assert n == 3 and padded.shape == (4,)
    np.testing.assert_array_equal(jax.random.key_data(padded[3]), jax.random.key_data(keys[2]))


def test_pad_to_multiple_errors():
    with pytest.raises(ValueError, match="multiple"):
        batching.pad_to_multiple(np.zeros(3), 0)
    with pytest.raises(ValueError, match="scalar"):
        batching.pad_to_multiple(np.float32(1.0), 2)
    with pytest.raises(ValueError, match="empty"):
        batching.pad_to_multiple(np.zeros((0, 2)), 2)


def _forward_problem(n=13, m=4, c=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, c))
    table = rng.uniform(size=(n, m))  # row i defines sample i (like a mask)
    weights = rng.normal(size=(m * c, k))
    return x, table, weights


@pytest.mark.parametrize("batch_size, start", [(1, 0), (4, 0), (5, 3), (13, 0), (100, 2)])
def test_sum_forward_terms_equals_numpy_loop(batch_size, start):
    x, table, weights = _forward_problem()
    n = table.shape[0]
    f = lambda v: jnp.tanh(v.reshape(-1) @ jnp.asarray(weights, jnp.float32))  # (K,)

    def terms(rows, inputs, scores, valid):
        return {"weighted": scores.T @ rows, "count": jnp.sum(valid), "input_sum": jnp.sum(inputs, axis=0)}

    got = batching.sum_forward_terms(f, n, batch_size, None, lambda idx: jnp.asarray(table, jnp.float32)[idx],
                                     lambda rows: rows[:, :, None] * jnp.asarray(x, jnp.float32), terms,
                                     start=start)
    inputs = table[start:, :, None] * x  # float64 reference, one sample at a time
    scores = np.stack([np.tanh(v.reshape(-1) @ weights) for v in inputs])
    np.testing.assert_allclose(np.asarray(got["weighted"]), scores.T @ table[start:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got["input_sum"]), inputs.sum(0), rtol=1e-5, atol=1e-5)
    assert int(got["count"]) == n - start


def test_sum_forward_terms_scalar_f_under_jit():
    x, table, _ = _forward_problem(n=9)
    f = lambda v: jnp.sum(jnp.sin(v))  # scalar scores (B,)
    run = jax.jit(lambda t: batching.sum_forward_terms(f, 9, 4, None, lambda idx: t[idx],
                                                       lambda rows: rows[:, :, None] * jnp.asarray(x, jnp.float32),
                                                       lambda rows, inputs, scores, valid: scores @ rows))
    got = run(jnp.asarray(table, jnp.float32))
    scores = np.sin(table[:, :, None] * x).sum(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(got), scores @ table, rtol=1e-5, atol=1e-5)


def test_attribution_imports_nothing_that_touches_the_network():
    # Layers: methods sit on `batching`; only the sweep loads `distributed` (sockets).
    # JAX itself imports `socket`, so the check is that no cocoa_jax module imports it.
    code = """
import sys, types
import cocoa_jax.attribution, cocoa_jax.attribution_methods, cocoa_jax.batching, cocoa_jax.meshes, cocoa_jax.metrics
import socket
loaded = sorted(m for m in sys.modules if m.startswith("cocoa_jax"))
assert "cocoa_jax.attribution_methods.rise" in loaded and "cocoa_jax.batching" in loaded, loaded
assert "cocoa_jax.distributed" not in loaded, loaded
users = [m for m in loaded if any(v is socket for v in vars(sys.modules[m]).values())]
assert not users, users
print("ok", len(loaded))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout + proc.stderr[-3000:]


def test_the_socket_check_sees_distributed():
    # The check above can fail: importing `distributed` puts `socket` in a cocoa_jax module.
    from cocoa_jax import distributed
    import socket

    assert any(v is socket for v in vars(distributed).values())
