"""Linear probe: accuracy on separable data, save/load round trip, bad inputs."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from cocoa_jax import probe as probe_mod


def separable_data(seed, n_per_class=40, dim=6, n_classes=4):
    """Gaussian blobs around well-separated class means (linearly separable)."""
    rng = np.random.default_rng(seed)
    means = 6.0 * rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    reps = means[labels] + 0.5 * rng.normal(size=(labels.size, dim))
    # Shifted, non-negative-ish, badly scaled dimensions, as real representations are.
    return (reps + 10.0) * np.linspace(0.1, 5.0, dim), labels


def test_probe_separates_separable_data_and_generalises():
    train_reps, train_labels = separable_data(0)
    test_reps, test_labels = separable_data(0, n_per_class=20)  # same means, new noise draws
    rng = np.random.default_rng(1)
    test_reps = test_reps + 0.01 * rng.normal(size=test_reps.shape)
    probe = probe_mod.fit_probe(train_reps, train_labels, n_classes=4, key=jax.random.key(0), n_epochs=300)
    assert probe_mod.accuracy(probe, train_reps, train_labels) == 1.0
    assert probe_mod.accuracy(probe, test_reps, test_labels) >= 0.95
    # Chance-level on shuffled labels: the accuracy measures something.
    shuffled = np.random.default_rng(2).permutation(train_labels)
    assert probe_mod.accuracy(probe, train_reps, shuffled) < 0.5
    probs = np.asarray(probe.probabilities(train_reps))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_probe_save_load_roundtrip(tmp_path):
    reps, labels = separable_data(3)
    probe = probe_mod.fit_probe(reps, labels, n_classes=4, n_epochs=50)
    path = probe_mod.save_probe(probe, str(tmp_path / "probe"), metadata={"accuracy": 1.0})
    loaded = probe_mod.load_probe(path)
    np.testing.assert_array_equal(np.asarray(loaded.weights), np.asarray(probe.weights))
    np.testing.assert_array_equal(np.asarray(loaded.bias), np.asarray(probe.bias))
    assert (tmp_path / "probe.json").exists()
    with pytest.raises(FileNotFoundError):
        probe_mod.load_probe(str(tmp_path / "missing"))


def test_probe_bad_inputs():
    reps, labels = separable_data(4)
    with pytest.raises(ValueError, match="labels"):
        probe_mod.fit_probe(reps, labels[:-1], n_classes=4)
    with pytest.raises(ValueError, match="labels"):
        probe_mod.fit_probe(reps, labels, n_classes=3)
    with pytest.raises(TypeError, match="labels"):
        probe_mod.fit_probe(reps, labels.astype(float), n_classes=4)
    with pytest.raises(ValueError, match="reps"):
        probe_mod.fit_probe(reps[0], labels, n_classes=4)
    with pytest.raises(ValueError, match="n_classes"):
        probe_mod.fit_probe(reps, labels, n_classes=0)
