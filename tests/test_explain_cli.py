"""`cocoa-jax explain` end to end at tiny sizes, checked against independent computations."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, baselines, targets
from cocoa_jax.cli import main
from cocoa_jax.commands import explain
from cocoa_jax.data.digits import load_digits_split
from cocoa_jax.models.small_resnet import load_digits_encoder

TINY = ["--explicands", "2", "--n-masks", "16", "--n-steps", "4", "--n-samples", "3",
        "--corpus-size", "10", "--foil-size", "30", "--seed", "5", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain")
    assert main(["explain", *TINY, "--out", str(out)]) == 0
    return out


def test_writes_figure_npz_and_settings(run_dir):
    from PIL import Image

    with Image.open(run_dir / "figure.png") as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > im.size[0]  # 13 rows x 2 cols
    z = np.load(run_dir / "attributions.npz")
    k = len(explain.TARGETS)
    assert list(z["target_names"]) == list(explain.TARGETS)
    assert z["ig"].shape == (2, k, 32, 32, 1) and z["gradient_shap"].shape == (2, k, 32, 32, 1)
    assert z["rise"].shape == (2, k, 32, 32) and z["scores"].shape == (2, k) and z["ig_delta"].shape == (2, k)
    for name in ("ig", "gradient_shap", "rise", "scores", "baselines"):
        assert np.all(np.isfinite(z[name])), name
    assert np.abs(z["ig"]).max() > 0 and np.abs(z["rise"]).max() > 0
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["foil_size"] == 30 and len(settings["foil_indices"]) == 30
    assert settings["corpus_size"] == 10 and settings["n_masks"] == 16


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


def test_vmapped_per_explicand_rise_matches_a_single_run(run_dir):
    """RISE for explicand 1, label-free target, recomputed alone (no vmap) with the same key."""
    z = np.load(run_dir / "attributions.npz")
    model = load_digits_encoder()
    x = jnp.asarray(z["explicands"][1])
    target = targets.label_free(model.encode(x[None])[0])
    f = targets.explain_fn(lambda xb: model.encode_fn(model.params, xb), target)
    method_index = list(z["method_names"]).index("rise")
    key = jax.random.split(jax.random.fold_in(jax.random.key(5), method_index), 2)[1]
    alone = attribution.rise(f, x, jnp.asarray(z["baselines"][1]), key, n_masks=16, grid_size=(4, 4))
    j = list(z["target_names"]).index("label_free")
    np.testing.assert_allclose(z["rise"][1, j], np.asarray(alone), rtol=1e-4, atol=1e-5)


def test_subset_of_targets_and_methods(tmp_path):
    assert main(["explain", *TINY, "--targets", "cocoa", "--methods", "ig", "--n-steps", "16",
                 "--out", str(tmp_path)]) == 0
    z = np.load(tmp_path / "attributions.npz")
    assert z["ig"].shape == (2, 1, 32, 32, 1) and "rise" not in z.files
    # IG completeness: attributions sum to f(x) - f(baseline) up to the quadrature error.
    gap = np.abs(z["ig_delta"])
    assert gap.max() < 0.05 * max(np.abs(z["ig"].sum(axis=(2, 3, 4))).max(), 1e-3), gap
    assert (tmp_path / "figure.png").is_file()


@pytest.mark.parametrize("flags, match", [
    (["--targets", "cocoa,relax"], "--targets"),
    (["--methods", "shap"], "--methods"),
    (["--corpus-class", "10"], "--corpus-class"),
    (["--n-masks", "0"], "--n-masks"),
    (["--n-steps", "-1"], "--n-steps"),
    (["--corpus-size", "0"], "--corpus-size"),
    (["--corpus-size", "100000"], "--corpus-size"),
    (["--explicands", "0"], "--explicands"),
    (["--foil-size", "100000"], "--foil-size"),
    (["--similarity", "euclid"], "--similarity"),
    (["--seed", "-1"], "--seed"),
    (["--stdev", "nan"], "--stdev"),
])
def test_bad_flags_raise_value_error_naming_the_flag(tmp_path, flags, match):
    with pytest.raises(ValueError, match=match):
        main(["explain", *TINY, *flags, "--out", str(tmp_path)])
    assert not os.path.exists(tmp_path / "attributions.npz")
