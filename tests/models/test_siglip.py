"""`siglip` against `transformers`' SiglipModel with random weights (tests/reference/siglip_side.py),
converted with `cocoa-jax convert siglip DIR OUT`: image features and their pixel gradients, text
features and their token-embedding gradients, to 1e-5 relative."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cocoa_jax import models  # noqa: E402
from cocoa_jax.cli import main  # noqa: E402
from tests.reference import siglip_side  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
torch.set_num_threads(2)
TOL = 1e-5


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("siglip")
    reference = siglip_side.save_random_siglip(str(root / "hf"), seed=3)
    assert main(["convert", "siglip", str(root / "hf"), str(root / "out")]) == 0
    return reference, models.load("siglip", str(root / "out"))


def test_config_read_off_the_weights(pair):
    _, model = pair
    assert {k: model.config[k] for k in siglip_side.SMALL} == siglip_side.SMALL
    assert model.representation_dim == 32 and model.input_shape == (32, 32, 3)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_image_features_and_pixel_gradients_match(pair):
    reference, model = pair
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    direction = rng.normal(size=(2, 32)).astype(np.float32)
    normalised = np.asarray(model.preprocess.normalize(x))
    ref, ref_grad = siglip_side.image_features_and_grad(reference, normalised, direction)
    reps = np.asarray(jax.jit(model.network_fn)(model.params, normalised))
    grad = np.asarray(jax.jit(jax.grad(lambda v: jnp.sum(model.network_fn(model.params, v) * direction)))(
        jnp.asarray(normalised)))
    assert _rel(reps, ref) < TOL and _rel(grad, ref_grad) < TOL, (_rel(reps, ref), _rel(grad, ref_grad))
    np.testing.assert_allclose(np.asarray(model.encode(x)), ref, rtol=1e-5, atol=1e-6)  # [0, 1] pixels


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_text_features_and_embedding_gradients_match(pair):
    reference, model = pair
    rng = np.random.default_rng(1)
    ids = rng.integers(2, 60, size=(3, 12)).astype(np.int32)
    ids[0, 7:] = 1  # padded with the pad token, as SigLIP is trained
    direction = rng.normal(size=(3, 24)).astype(np.float32)
    ref, ref_grad = siglip_side.text_features_and_grad(reference, ids, direction)
    words = model.embed_tokens_fn(model.params, ids)
    ones = np.ones(ids.shape, np.int32)
    grad = np.asarray(jax.jit(jax.grad(lambda w: jnp.sum(model.encode_embeddings_fn(model.params, w, ones)
                                                             * direction)))(words))
    assert _rel(model.encode_text(ids), ref) < TOL and _rel(grad, ref_grad) < TOL, _rel(grad, ref_grad)
    with pytest.raises(ValueError, match="no tokenizer.json"):
        model.encode_text(["a photo"])


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("scanned", [False, True], ids=["per_block", "scanned"])
def test_big_vision_npz_layout_gives_the_same_model(pair, tmp_path, scanned):
    """The same random weights written in big_vision's .npz layout (per-block or scanned), converted
    through `convert siglip FILE.npz`: image and text features equal transformers' forward."""
    reference, from_hf = pair
    path = siglip_side.save_big_vision_npz(reference, str(tmp_path / "webli.npz"), scanned=scanned)
    assert main(["convert", "siglip", path, str(tmp_path / "out")]) == 0
    model = models.load("siglip", str(tmp_path / "out"))
    assert {k: model.config[k] for k in siglip_side.SMALL} == siglip_side.SMALL
    x = np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    ref, _ = siglip_side.image_features_and_grad(reference, np.asarray(model.preprocess.normalize(x)), np.zeros((2, 32)))
    assert _rel(model.encode(x), ref) < TOL
    ids = np.random.default_rng(3).integers(2, 60, size=(2, 12)).astype(np.int32)
    ref_text, _ = siglip_side.text_features_and_grad(reference, ids, np.zeros((2, 24)))
    assert _rel(model.encode_text(ids), ref_text) < TOL
    for a, b in zip(jax.tree_util.tree_leaves(model.params), jax.tree_util.tree_leaves(from_hf.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_big_vision_npz_errors_name_the_key(pair, tmp_path):
    reference, _ = pair
    path = siglip_side.save_big_vision_npz(reference, str(tmp_path / "full.npz"))
    with np.load(path) as archive:
        tree = {k: archive[k] for k in archive.files if k != "img/MAPHead_0/probe"}
    np.savez(tmp_path / "broken.npz", **tree)
    assert main(["convert", "siglip", str(tmp_path / "broken.npz"), str(tmp_path / "out")]) == 2
    from cocoa_jax_ports import CheckpointMismatchError, convert
    with pytest.raises(CheckpointMismatchError, match="missing key 'img/MAPHead_0/probe'"):
        convert("siglip", str(tmp_path / "broken.npz"), str(tmp_path / "out2"))
