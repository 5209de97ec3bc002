"""Sparseness (Gini) and complexity (entropy) against Quantus 0.6 and float64 statements."""
import jax
import numpy as np
import pytest

from cocoa_jax.evaluation import complexity, table
from cocoa_jax.sparsity import gini_index

Q = pytest.importorskip("tests.reference.quantus_metrics_side")
quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def setup():
    x, y = Q.data(6)
    params = Q.jax_params(Q.tiny_net())
    maps = Q.gradient_maps(params, x, y)[:, None]  # (N, K=1, H, W)
    return x, y, params, maps


@pytest.mark.parametrize("name, cls", [("sparseness", "Sparseness"), ("complexity", "Complexity")])
def test_equals_quantus_with_its_defaults(setup, name, cls):
    x, y, params, maps = setup
    ours = Q.run_metric(table.get(name), Q.contexts(params, y, x), x, maps, jax.random.key(0))[:, 0]
    # Quantus's defaults (abs, normalise by max); its 1e-7 offset / 1e-12 log guard move scores by < 1e-6
    theirs = getattr(quantus, cls)(disable_warnings=True)(model=None, x_batch=Q.to_nchw(x), y_batch=y,
                                                          a_batch=maps.copy())
    np.testing.assert_allclose(ours, np.asarray(theirs, np.float64), rtol=0, atol=1e-5)


def test_float64_statements():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 5, 4, 2))
    maps[1] = 0.0
    maps[1, 2, 3, 1] = -2.0  # one-hot: Gini 1 - 1/n, entropy 0
    maps[2] = 0.7  # uniform: Gini 0, entropy log n
    n = maps[0].size
    a = np.sort(np.abs(maps[0]).ravel())
    gini0 = np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * a.sum())
    p = np.abs(maps[0]).ravel() / np.abs(maps[0]).sum()
    np.testing.assert_allclose(np.asarray(complexity.sparseness(maps)), [gini0, 1 - 1 / n, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(complexity.complexity(maps)), [-(p * np.log(p)).sum(), 0.0, np.log(n)],
                               atol=1e-5)
    # the one Gini of the project, and scale invariance
    np.testing.assert_allclose(np.asarray(complexity.sparseness(maps)), np.asarray(gini_index(maps, ndim=3)))
    np.testing.assert_allclose(np.asarray(complexity.complexity(3.0 * maps)), np.asarray(complexity.complexity(maps)),
                               rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(complexity.complexity(np.zeros((1, 4, 4))))))


def test_records():
    assert table.get("sparseness").direction == "higher" and table.get("complexity").direction == "lower"
    assert table.get("sparseness").quantus == "quantus.Sparseness"
