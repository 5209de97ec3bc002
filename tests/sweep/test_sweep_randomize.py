"""Model randomisation in the sweep (randomize_model) and the official (raw-value) Gini formula."""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from cocoa_jax.models.randomize import randomize_params
from cocoa_jax.sparsity import gini_index
from cocoa_jax.sweep import run_sweep
from cocoa_jax.sweep.store import open_existing

from tests.support.tiny_sweep import TinyEncoder, tiny_config, tiny_datasets, tiny_encoder


def official_gini(a):
    """The official `compute_gini_index` restated in float64 NumPy: RAW values sorted ascending,
    2 * sum_i i * a_(i) / (n * sum a) - (n + 1) / n, i = 1..n."""
    a = np.sort(np.asarray(a, np.float64).ravel())
    n = a.size
    i = np.arange(1, n + 1, dtype=np.float64)
    return 2.0 * np.sum(i * a) / (n * np.sum(a)) - (n + 1.0) / n


def test_gini_raw_values_is_the_official_formula():
    rng = np.random.default_rng(3)
    maps = rng.normal(0.3, 1.0, size=(4, 3, 6, 5)) ** 3  # mixed signs, heavy tails, sum != 0
    ours = np.asarray(gini_index(maps, ndim=2, absolute=False))  # float32 arithmetic unless jax x64 is on
    expected = np.array([[official_gini(maps[i, j]) for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=2e-6)
    # With negative entries the raw form differs from the |a| form; for a >= 0 they agree.
    assert not np.allclose(ours, np.asarray(gini_index(maps, ndim=2)))
    positive = np.abs(maps)
    np.testing.assert_allclose(np.asarray(gini_index(positive, ndim=2, absolute=False)),
                               np.asarray(gini_index(positive, ndim=2)), rtol=1e-5, atol=1e-6)
    assert float(gini_index(np.zeros(6), absolute=False)) == 0.0
    np.testing.assert_allclose(float(gini_index(np.eye(7)[2], absolute=False)), 1 - 1 / 7, rtol=1e-6)


def _arrays(run_dir):
    _, store = open_existing(str(run_dir))
    return {uid: store.load_unit(row) for uid, row in store.read_rows(warn=False).items()}


def _run(config, run_dir, encoder):
    run_sweep(config, str(run_dir), encoder=encoder, datasets=tiny_datasets(), progress=False, compile_cache=None)
    return _arrays(run_dir)


@pytest.mark.slow  # two tiny sweeps
def test_randomized_run_equals_a_run_of_the_randomized_encoder(tmp_path, shared_sweep):
    """randomize_model: seed s explains randomize_params(params, key(s)), sampling, attribution,
    evaluation and the probe included: the same numbers as a plain run given that encoder."""
    seed = 3
    config = tiny_config(classes=(1,), explicands_per_class=2, seeds=(seed,),
                         methods={"integrated_gradients": {"n_steps": 3}}, eval_steps=4, explicand_batch=2)
    # The plain and the randomized runs are shared with test_sweep_cascade (conftest shared_sweep).
    randomized_dir, trained_dir = (shared_sweep(c)[0] for c in (config.replace(randomize_model=True), config))
    randomized, trained = _arrays(randomized_dir), _arrays(trained_dir)
    assert os.path.exists(randomized_dir / f"probe_s{seed}.npz")
    by_hand = TinyEncoder()
    by_hand.params = randomize_params(tiny_encoder().params, jax.random.key(seed))
    reference = _run(config, tmp_path / "by_hand", by_hand)
    for uid in ("s3_c1_integrated_gradients", "s3_c1_random"):
        for key in ("attributions", "curves", "aucs"):
            np.testing.assert_allclose(randomized[uid][key], reference[uid][key], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{uid} {key}")
    assert not np.allclose(randomized["s3_c1_integrated_gradients"]["attributions"],
                           trained["s3_c1_integrated_gradients"]["attributions"])
    from cocoa_jax.sweep import report

    paths = report.write_report(str(randomized_dir))
    text = open(paths["markdown"]).read()
    # After the header (which says so too), the randomisation section comes first.
    assert text.startswith("# Sweep report\n") and "model randomisation (per seed)" in text
    assert text[text.index("### "):].startswith("### Model randomisation") and "randomize_params" in text
    assert "Model randomisation" not in open(report.write_report(str(trained_dir))["markdown"]).read()


def test_each_seed_gets_its_own_randomized_encoder():
    from cocoa_jax.sweep.programs import SweepPrograms, local_mesh
    from cocoa_jax.sweep.inputs import resolve_encoder

    spec = resolve_encoder(tiny_config(), tiny_encoder())
    programs = SweepPrograms(spec, tiny_config(randomize_model=True), local_mesh(1))
    x = np.asarray(tiny_datasets()["test"].images(np.arange(4)), np.float32)
    trained = programs.encode(programs.trained, x)
    seed0 = programs.encode(programs.seed_params(0), x)
    seed1 = programs.encode(programs.seed_params(1), x)
    assert not np.allclose(seed0, trained) and not np.allclose(seed0, seed1)
    expected = np.asarray(spec.encode_fn(randomize_params(spec.params, jax.random.key(1)), x))
    np.testing.assert_allclose(seed1, expected, rtol=1e-5, atol=1e-6)
    # No state: asking for seed 1 changed nothing of what seed 0 or the trained encoder give.
    np.testing.assert_array_equal(programs.encode(programs.seed_params(0), x), seed0)
    np.testing.assert_array_equal(programs.encode(programs.trained, x), trained)
    plain = SweepPrograms(spec, tiny_config(), local_mesh(1))
    assert plain.seed_params(1) is plain.trained  # the trained encoder without randomize_model
    np.testing.assert_allclose(plain.encode(plain.seed_params(1), x), trained, rtol=1e-6, atol=1e-7)
