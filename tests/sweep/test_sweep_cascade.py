"""The cascading model-randomisation test in the sweep (randomize_cascade, Adebayo et al., 2018):
rank correlation vs scipy, the block order and the cascade's parameters, a sweep's correlations,
its report, resume, and config checks."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from cocoa_jax.correlation import rankdata, spearman
from cocoa_jax.models.randomize import cascading_randomizations, forward_block_order, randomize_params
from cocoa_jax.sweep import SweepConfig, run_sweep
from cocoa_jax.sweep.store import open_existing

from tests.support.tiny_sweep import tiny_config, tiny_datasets, tiny_encoder
from tests.support.run_hashes import OLD_HASHES


# ----------------------------------------------------------------------------- rank correlation


def test_spearman_matches_scipy_with_ties_and_batches():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(3, 2, 5, 6)).astype(np.float32)  # many ties
    b = rng.normal(size=a.shape) + 0.5 * a
    ours = spearman(a, b, ndim=2)
    assert ours.shape == (3, 2)
    expected = np.array([[scipy.stats.spearmanr(a[i, j].ravel(), b[i, j].ravel()).statistic for j in range(2)]
                         for i in range(3)])
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    signed = rng.normal(size=(4, 7, 7))
    other = signed + rng.normal(size=signed.shape)
    expected_abs = [scipy.stats.spearmanr(np.abs(signed[i]).ravel(), np.abs(other[i]).ravel()).statistic
                    for i in range(4)]
    np.testing.assert_allclose(spearman(signed, other, ndim=2, absolute=True), expected_abs, rtol=1e-12)
    assert not np.allclose(spearman(signed, other, ndim=2, absolute=True), spearman(signed, other, ndim=2))
    np.testing.assert_allclose(rankdata(a, ndim=2),
                               scipy.stats.rankdata(a.reshape(3, 2, -1), axis=-1).reshape(a.shape))
    x = rng.normal(size=20)
    assert spearman(x, x) == 1.0 and spearman(x, -x) == -1.0
    assert spearman(x, np.exp(x)) == 1.0  # monotone maps only change values, not ranks
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))  # constant: undefined, as in scipy


def test_spearman_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`a` and `b`"):
        spearman(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`ndim`"):
        spearman(np.zeros((2, 3)), np.zeros((2, 3)), ndim=3)
    with pytest.raises(ValueError, match="NaN"):
        spearman(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


# ----------------------------------------------------------------------------- the cascade's parameters


def _digits():
    from cocoa_jax import models

    return models.load("digits", None)


def test_forward_block_order_reads_the_traced_forward_pass():
    encoder = _digits()
    example = jnp.zeros((1,) + tuple(encoder.input_shape))
    expected = ["Conv_0", "BatchNorm_0", "BasicBlock_0", "BasicBlock_1", "BasicBlock_2"]
    assert list(encoder.params["params"]) != expected  # Flax sorts its dicts: the order must be traced
    assert forward_block_order(encoder.encode_fn, encoder.params, example) == expected
    assert forward_block_order(jax.jit(encoder.encode_fn), encoder.params, example) == expected  # through jit
    tiny = tiny_encoder()
    assert forward_block_order(tiny.encode_fn, tiny.params, jnp.zeros((1, 16, 16, 1))) == ["Conv_0", "Dense_0"]
    # A plain dict of blocks, one of them never read: last.
    params = {"z_first": jnp.ones(3), "a_second": jnp.ones(3), "unused": jnp.ones(3)}
    order = forward_block_order(lambda p, x: jnp.tanh(x * p["z_first"]) @ p["a_second"], params, jnp.ones(3))
    assert order == ["z_first", "a_second", "unused"]


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_cascade_steps_randomise_from_the_top_and_end_at_full_randomisation():
    encoder = _digits()
    params, key = encoder.params, jax.random.key(5)
    order = forward_block_order(encoder.encode_fn, params, jnp.zeros((1, 32, 32, 1)))[::-1]
    steps = cascading_randomizations(params, key, order)
    assert [name for name, _ in steps] == order
    full = randomize_params(params, key)
    for j, (_, step) in enumerate(steps):
        for collection in params:
            for block in params[collection]:
                same = [np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(step[collection][block]),
                                                             jax.tree_util.tree_leaves(params[collection][block]))]
                drawn = [np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(step[collection][block]),
                                                              jax.tree_util.tree_leaves(full[collection][block]))]
                if block in order[:j + 1]:
                    assert all(drawn), (j, collection, block)
                    assert not all(same), (j, collection, block)
                else:
                    assert all(same), (j, collection, block)
    last = jax.tree_util.tree_leaves(steps[-1][1])
    assert jax.tree_util.tree_structure(steps[-1][1]) == jax.tree_util.tree_structure(full)
    assert all(np.array_equal(a, b) for a, b in zip(last, jax.tree_util.tree_leaves(full)))


# ----------------------------------------------------------------------------- config


def test_config_field_checked_named_and_left_out_of_the_hash():
    assert tiny_config(randomize_cascade=False).config_hash() == OLD_HASHES["tiny"]
    assert "randomize_cascade" not in tiny_config().result_fields()
    assert tiny_config(randomize_cascade=True).config_hash() != OLD_HASHES["tiny"]
    assert tiny_config(randomize_cascade=True).result_fields()["randomize_cascade"] is True
    with pytest.raises(TypeError, match="`randomize_cascade`"):
        tiny_config(randomize_cascade="yes")
    with pytest.raises(TypeError, match="`randomize_cascade`"):
        tiny_config(randomize_cascade=1)
    with pytest.raises(ValueError, match="`randomize_cascade`.*`randomize_model`"):
        tiny_config(randomize_cascade=True, randomize_model=True)
    with pytest.raises(ValueError, match="`randomize_cascade`.*size study"):
        tiny_config(randomize_cascade=True, corpus_size=[4, 5])
    assert SweepConfig.from_dict({"randomize_cascade": True}).randomize_cascade is True
    tiny_config(randomize_cascade=True, probe_dir="anywhere")  # the trained encoder's probe: allowed


# ----------------------------------------------------------------------------- sweeps


def _arrays(run_dir):
    _, store = open_existing(str(run_dir))
    return {uid: store.load_unit(row) for uid, row in store.read_rows(warn=False).items()}


def _run(config, run_dir, **kwargs):
    return run_sweep(config, str(run_dir), encoder=tiny_encoder(), datasets=tiny_datasets(), progress=False,
                     compile_cache=None, **kwargs)


@pytest.mark.slow  # three tiny sweeps
def test_cascade_step0_is_the_trained_map_and_last_step_is_the_randomized_run(tmp_path, shared_sweep):
    seed = 3
    # test_sweep_randomize's config: its plain and randomized runs are shared (conftest shared_sweep).
    config = tiny_config(classes=(1,), explicands_per_class=2, seeds=(seed,),
                         methods={"integrated_gradients": {"n_steps": 3}}, eval_steps=4, explicand_batch=2)
    _run(config.replace(randomize_cascade=True), tmp_path / "cascade")
    uid = f"s{seed}_c1_integrated_gradients"
    cascade = _arrays(tmp_path / "cascade")[uid]
    trained, randomized = (_arrays(shared_sweep(c)[0])[uid] for c in (config, config.replace(randomize_model=True)))
    # The cascade adds arrays; the trained encoder's results are those of the plain run.
    for key in ("attributions", "curves", "aucs"):
        np.testing.assert_array_equal(cascade[key], trained[key], err_msg=key)
    assert list(cascade["cascade_blocks"]) == ["Dense_0", "Conv_0"]
    rho, rho_abs = cascade["cascade_spearman"], cascade["cascade_spearman_abs"]
    assert rho.shape == rho_abs.shape == (2, 3, 4)  # explicands, trained + 2 steps, targets
    # Step 0 recomputes the trained maps through the cascade's path: exactly the same ranks.
    np.testing.assert_array_equal(rho[:, 0], 1.0)
    np.testing.assert_array_equal(rho_abs[:, 0], 1.0)
    # The last step is randomize_model's encoder for this seed (same samples, targets, keys).
    np.testing.assert_allclose(rho[:, -1], spearman(trained["attributions"], randomized["attributions"], ndim=2),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rho_abs[:, -1], spearman(trained["attributions"], randomized["attributions"],
                                                        ndim=2, absolute=True), rtol=1e-9, atol=1e-9)
    assert np.all(rho[:, -1] < 0.9)  # randomising every block changes the maps


@pytest.mark.slow  # digits sweeps (embedded encoder and data)
def test_digits_cascade_sweep_resumes_and_reports(tmp_path):
    from cocoa_jax.sweep import report

    config = SweepConfig(encoder="digits", dataset="digits", classes=(0, 1), explicands_per_class=2,
                         corpus_size=4, foil_size=8, seeds=(0, 1), methods={"integrated_gradients": {"n_steps": 2}},
                         eval_steps=3, explicand_batch=2, eval_batch=64, probe_train_size=200, probe_test_size=50,
                         randomize_cascade=True)
    kwargs = dict(progress=False, compile_cache=None)
    first = run_sweep(config, str(tmp_path / "run"), max_units=3, **kwargs)
    second = run_sweep(config, str(tmp_path / "run"), **kwargs)
    n_units = 2 * 2 * 2  # seeds x classes x (IG, random)
    assert len(first.computed) == 3 and not set(first.computed) & set(second.computed)
    assert sorted(first.computed + second.computed) == sorted(second.skipped + second.computed)
    assert len(first.computed + second.computed) == n_units
    assert run_sweep(config, str(tmp_path / "run"), **kwargs).computed == []
    # Another grouping (two units per group) gives the same correlations: units are independent.
    regrouped = run_sweep(config.replace(explicand_batch=4), str(tmp_path / "regrouped"), **kwargs)
    assert len(regrouped.computed) == n_units
    run, other = _arrays(tmp_path / "run"), _arrays(tmp_path / "regrouped")
    blocks = ["BasicBlock_2", "BasicBlock_1", "BasicBlock_0", "BatchNorm_0", "Conv_0"]
    for uid, arrays in run.items():
        if uid.endswith("_random"):
            assert "cascade_spearman" not in arrays
            continue
        assert list(arrays["cascade_blocks"]) == blocks
        np.testing.assert_array_equal(arrays["cascade_spearman"][:, 0], 1.0)
        np.testing.assert_allclose(arrays["cascade_spearman"], other[uid]["cascade_spearman"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(arrays["cascade_spearman_abs"], other[uid]["cascade_spearman_abs"],
                                   rtol=1e-6, atol=1e-6)
    paths = report.write_report(str(tmp_path / "run"))
    text = open(paths["markdown"]).read()
    assert "### Model randomisation (cascading)" in text and "+BasicBlock_2" in text
    assert os.path.getsize(paths["cascade_plot"]) > 0
    # The report's cells are the stored correlations: mean over seeds of each seed's explicand mean.
    rows = [line for line in open(paths["cascade_csv"]).read().splitlines()[1:]
            if ",integrated_gradients,cocoa,abs," in line]
    assert [r.split(",")[1] for r in rows] == ["trained"] + blocks
    k = list(config.targets).index("cocoa")
    for j, line in enumerate(rows):
        per_seed = [np.mean(np.concatenate([run[f"s{s}_c{c}_integrated_gradients"]["cascade_spearman_abs"][:, j, k]
                                            for c in (0, 1)])) for s in (0, 1)]
        assert float(line.split(",")[5]) == pytest.approx(np.mean(per_seed), rel=1e-5, abs=1e-6)
