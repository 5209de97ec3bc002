"""`cocoa-jax explain` end to end at tiny sizes, checked against independent computations."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, baselines, methods, targets
from cocoa_jax.cli import main
from cocoa_jax.commands import explain
from cocoa_jax.data.digits import load_digits_split
from cocoa_jax.models import load


def load_digits_encoder():
    return load("digits")


TINY = ["--explicands", "2", "--n-masks", "16", "--n-steps", "4", "--n-samples", "3",
        "--corpus-size", "10", "--foil-size", "30", "--seed", "5", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain")
    assert main(["explain", *TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_writes_figure_npz_and_settings(run_dir):
    from PIL import Image

    with Image.open(run_dir / "figure.png") as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > im.size[0]  # 13 rows x 2 cols
    z = np.load(run_dir / "attributions.npz")
    k = len(explain.DEFAULT_TARGETS)
    assert list(z["target_names"]) == list(explain.DEFAULT_TARGETS)
    assert list(z["method_names"]) == list(explain.DEFAULT_METHODS)
    gap = "integrated_gradients_completeness_gap"
    assert z["integrated_gradients"].shape == (2, k, 32, 32, 1) and z["gradient_shap"].shape == (2, k, 32, 32, 1)
    assert z["rise"].shape == (2, k, 32, 32) and z["scores"].shape == (2, k) and z[gap].shape == (2, k)
    for name in ("integrated_gradients", "gradient_shap", "rise", "scores", "baselines", gap):
        assert np.all(np.isfinite(z[name])), name
    assert np.abs(z["integrated_gradients"]).max() > 0 and np.abs(z["rise"]).max() > 0
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["foil_size"] == 30 and len(z["foil_indices"]) == 30
    assert settings["corpus_size"] == 10 and settings["method_options"]["rise"]["n_masks"] == 16
    # Unset options are the library's defaults (one source of truth: cocoa_jax.methods).
    assert settings["method_options"]["gradient_shap"]["stdev"] == methods.defaults("gradient_shap")["stdev"]
    assert settings["method_options"]["rise"]["grid_size"] == [4, 4]
    # settings.json stays small and documents the npz axis orders.
    assert (run_dir / "settings.json").stat().st_size < 4000
    axes = settings["arrays"]["axes"]
    assert axes["integrated_gradients"] == "(N, K, H, W, C)" and axes["rise"] == "(N, K, H, W)"
    assert set(z.files) - {gap} <= set(axes)
    assert "red" in settings["figure"] and "mean" in settings["figure"]


def test_selection_and_scores_match_a_direct_computation(run_dir):
    """Indices obey the flags, and the stored target scores equal eq. (3) evaluated pairwise."""
    z = np.load(run_dir / "attributions.npz")
    data = load_digits_split(seed=0)
    corpus_idx, foil_idx, expl_idx = z["corpus_indices"], z["foil_indices"], z["explicand_indices"]
    assert np.all(data.y_train[corpus_idx] == 3) and np.all(z["explicand_labels"] == 3)
    assert len(np.intersect1d(corpus_idx, foil_idx)) == 0 and len(np.unique(foil_idx)) == 30
    np.testing.assert_array_equal(z["explicands"], data.x_test[expl_idx])
    model = load_digits_encoder()
    reps = np.asarray(model.encode(data.x_test[expl_idx]), np.float64)
    corpus_reps = np.asarray(model.encode(data.x_train[corpus_idx]), np.float64)
    foil_reps = np.asarray(model.encode(data.x_train[foil_idx]), np.float64)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    expected = {
        "cocoa": (unit(reps) @ unit(corpus_reps).T).mean(1) - (unit(reps) @ unit(foil_reps).T).mean(1),
        "corpus": (unit(reps) @ unit(corpus_reps).T).mean(1),
        "label_free": np.ones(len(reps)),  # cosine of each explicand with itself
        "contrastive_label_free": 1.0 - (unit(reps) @ unit(foil_reps).T).mean(1),
    }
    for j, name in enumerate(z["target_names"]):
        np.testing.assert_allclose(z["scores"][:, j], expected[str(name)], atol=2e-5, err_msg=str(name))
    np.testing.assert_allclose(z["baselines"], np.asarray(baselines.gaussian_blur(z["explicands"], 21, 5.0)),
                               atol=1e-6)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_vmapped_per_explicand_rise_matches_a_single_run(run_dir):
    """RISE for explicand 1, label-free target, recomputed alone (no vmap) with the same key and the
    options the command resolved (the default `fast` profile: centred)."""
    z = np.load(run_dir / "attributions.npz")
    rise_options = json.loads((run_dir / "settings.json").read_text())["method_options"]["rise"]
    assert rise_options["centered"] is True and rise_options["n_masks"] == 16
    model = load_digits_encoder()
    x = jnp.asarray(z["explicands"][1])
    target = targets.label_free(model.encode(x[None])[0])
    f = targets.explain_fn(lambda xb: model.encode_fn(model.params, xb), target)
    key = jax.random.split(jax.random.fold_in(jax.random.key(5), methods.stream_id("rise")), 2)[1]
    alone = attribution.rise(f, x, jnp.asarray(z["baselines"][1]), key, n_masks=16, grid_size=(4, 4), centered=True)
    j = list(z["target_names"]).index("label_free")
    np.testing.assert_allclose(z["rise"][1, j], np.asarray(alone), rtol=1e-4, atol=1e-5)


def test_subset_of_targets_and_methods(tmp_path):
    flags = [f for f in TINY if f not in ("--n-masks", "16", "--n-samples", "3")]
    assert main(["explain", *flags, "--targets", "cocoa", "--methods", "integrated_gradients",
                 "--n-steps", "16", "--out", str(tmp_path)]) == 0
    z = np.load(tmp_path / "attributions.npz")
    ig = z["integrated_gradients"]
    assert ig.shape == (2, 1, 32, 32, 1) and "rise" not in z.files
    # IG completeness: attributions sum to f(x) - f(baseline) up to the quadrature error; the
    # stored gap is recomputed here from the stored scores.
    gap = z["integrated_gradients_completeness_gap"]
    np.testing.assert_allclose(gap, ig.sum(axis=(2, 3, 4)) - (z["scores"] - z["baseline_scores"]), atol=1e-5)
    assert np.abs(gap).max() < 0.05 * max(np.abs(ig.sum(axis=(2, 3, 4))).max(), 1e-3), gap
    assert (tmp_path / "figure.png").is_file()


@pytest.mark.parametrize("flags, match", [
    (["--targets", "cocoa,relax"], "--targets"),
    (["--methods", "shap"], "--methods"),
    (["--corpus-class", "10"], "--corpus-class"),
    (["--n-masks", "0"], "--n-masks"),
    (["--n-steps", "-1"], "--n-steps"),
    (["--grid-size", "64"], "--grid-size"),
    (["--corpus-size", "0"], "--corpus-size"),
    (["--corpus-size", "100000"], "--corpus-size"),
    (["--explicands", "0"], "--explicands"),
    (["--foil-size", "100000"], "--foil-size"),
    (["--similarity", "euclid"], "--similarity"),
    (["--seed", "-1"], "--seed"),
    (["--stdev", "nan"], "--stdev"),
    (["--methods", "rise", "--n-steps", "5"], "--n-steps"),
    (["--weights", "/nonexistent/dir"], "--weights"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, match):
    assert main(["explain", *TINY, *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cocoa-jax explain: error: ") and match in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")
