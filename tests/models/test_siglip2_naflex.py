"""`siglip2_naflex` against `transformers`' Siglip2Model / Siglip2ImageProcessorPil with random weights
(tests/reference/siglip2_side.py), converted with `cocoa-jax convert siglip2_naflex DIR OUT`: the
patch budget, the position resize, the preprocessing on odd-sized images, pooled features and their
gradients at several aspect ratios (transformers on its padded, masked layout; here one size per
call, no padding), the text tower, and IG through `pipeline.explain_images` at a non-square size."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cocoa_jax import models, pipeline  # noqa: E402
from cocoa_jax.cli import main  # noqa: E402
from cocoa_jax.models import naflex  # noqa: E402
from tests.reference import siglip2_side, siglip_side  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
torch.set_num_threads(2)
P = siglip2_side.SMALL["patch_size"]


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


def _patches(x, p=P):
    """(N, H, W, C) -> (N, H/p * W/p, p * p * C) in the processor's (row, column, channel) order."""
    n, h, w, c = x.shape
    return x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, p * p * c)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("siglip2")
    reference = siglip2_side.save_random_siglip2(str(root / "hf"), seed=3)
    assert main(["convert", "siglip2_naflex", str(root / "hf"), str(root / "out")]) == 0
    return reference, models.load("siglip2_naflex", str(root / "out"))


@pytest.mark.slow  # > 5 s (importing the processor module)
def test_patch_budget_equals_the_processors_search():
    from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 700, size=2))
        patch, budget = int(rng.choice([4, 14, 16])), int(rng.choice([1, 7, 64, 256, 1024]))
        assert naflex.naflex_size(h, w, patch, budget) == get_image_size_for_max_num_patches(h, w, patch, budget)
    with pytest.raises(ValueError, match="max_num_patches"):
        naflex.naflex_size(10, 10, 4, 0)


def test_position_resize_matrix_equals_torch_antialiased_bilinear():
    for out_size, in_size in ((3, 8), (8, 8), (11, 8), (1, 5), (16, 7), (5, 16)):
        eye = torch.eye(in_size, dtype=torch.float64)[None, None]  # column b: the source row b alone
        want = torch.nn.functional.interpolate(eye, size=(out_size, in_size), mode="bilinear", align_corners=False,
                                               antialias=True)[0, 0].numpy()  # width kept: copied
        np.testing.assert_allclose(naflex.bilinear_antialias_matrix(out_size, in_size), want, atol=1e-12)


def test_config_read_off_the_weights(pair):
    _, model = pair
    small = {k: v for k, v in siglip2_side.SMALL.items()}
    assert {k: model.config[k] for k in small} == small
    assert model.config["naflex"] and model.config["max_num_patches"] == siglip2_side.MAX_NUM_PATCHES
    assert model.config["image_size"] == 8 * P  # the stored 8 x 8 position grid
    assert model.input_shape == (32, 32, 3) and model.representation_dim == 64


@pytest.mark.slow  # > 5 s: three sizes through transformers and two XLA programs each
@pytest.mark.parametrize("size", [(24, 40), (44, 16), (32, 32)], ids=["wide", "tall", "square"])
def test_pooled_features_and_gradients_match(pair, size):
    """Pooled output to 1e-5 relative, the gradient w.r.t. the patch values to 1e-4; transformers'
    padding patches get exactly zero gradient (masked), so they are absent here."""
    reference, model = pair
    rng = np.random.default_rng(sum(size))
    x = rng.uniform(size=(2, *size, 3)).astype(np.float32)
    direction = rng.normal(size=(2, 64)).astype(np.float32)
    normalised = np.asarray(model.preprocess.normalize(x))
    ref, ref_grad, mask = siglip2_side.image_features_and_grad(reference, normalised, direction)
    sized = model.with_input_shape((*size, 3))
    reps = np.asarray(jax.jit(sized.network_fn)(model.params, normalised))
    grad = np.asarray(jax.jit(jax.grad(lambda v: jnp.sum(sized.network_fn(model.params, v) * direction)))(
        jnp.asarray(normalised)))
    n = (size[0] // P) * (size[1] // P)
    assert mask[:, :n].all() and not mask[:, n:].any()
    assert _rel(reps, ref) < 1e-5, _rel(reps, ref)
    assert _rel(_patches(grad), ref_grad[:, :n]) < 1e-4, _rel(_patches(grad), ref_grad[:, :n])
    assert not np.any(ref_grad[:, n:])
    np.testing.assert_allclose(np.asarray(sized.encode(x)), ref, rtol=1e-5, atol=1e-6)  # [0, 1] pixels


def test_preprocessing_matches_the_processor_on_odd_sizes(pair):
    """uint8 images of odd sizes: the same (H', W') grid as the processor's spatial_shapes, pixels
    within its 8-bit rounding (it resizes the uint8 image; here the float values)."""
    _, model = pair
    processor = siglip2_side.processor()
    rng = np.random.default_rng(5)
    for h, w in ((37, 23), (50, 13), (9, 61), (100, 100), (3, 200)):
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        out = processor(images=[image], return_tensors="np", input_data_format="channels_last")
        grid = tuple(int(v) for v in out["spatial_shapes"][0])
        mine = model.preprocess(image)
        assert mine.shape == (grid[0] * P, grid[1] * P, 3) and mine.dtype == np.float32
        n = grid[0] * grid[1]
        assert int(out["pixel_attention_mask"][0].sum()) == n <= siglip2_side.MAX_NUM_PATCHES
        diff = np.abs(_patches(np.asarray(model.preprocess.normalize(mine))[None])[0] - out["pixel_values"][0, :n])
        # normalised units (std 0.5): 2/255 per 8-bit level
        assert diff.max() <= 2.0 / 255 * 1.01 and diff.mean() < 0.4 * 2.0 / 255, (diff.max() * 127.5, diff.mean() * 127.5)
    with pytest.raises(ValueError, match="different NaFlex sizes"):
        model.preprocess.batch([np.zeros((8, 40, 3)), np.zeros((40, 8, 3))])


@pytest.mark.slow  # > 2 s
def test_text_tower_is_siglips(pair):
    """Siglip2Model's text tower is SiglipModel's (same keys, last position, head): the siglip code
    path gives transformers' Siglip2 text features and token-embedding gradients."""
    reference, model = pair
    rng = np.random.default_rng(1)
    ids = rng.integers(2, 60, size=(2, 12)).astype(np.int32)
    ids[0, 7:] = 1
    direction = rng.normal(size=(2, 64)).astype(np.float32)
    ref, ref_grad = siglip_side.text_features_and_grad(reference, ids, direction)
    words = model.embed_tokens_fn(model.params, ids)
    ones = np.ones(ids.shape, np.int32)
    grad = np.asarray(jax.grad(lambda w: jnp.sum(model.encode_embeddings_fn(model.params, w, ones) * direction))(words))
    assert _rel(model.encode_text(ids), ref) < 1e-5 and _rel(grad, ref_grad) < 1e-5


def test_image_sides_must_be_patch_multiples(pair):
    _, model = pair
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model.with_input_shape((30, 32, 3)).encode(np.zeros((1, 30, 32, 3), np.float32))


def test_wrong_model_type_is_named(tmp_path):
    siglip_side.save_random_siglip(str(tmp_path / "hf"))
    from cocoa_jax_ports import CheckpointMismatchError, convert
    with pytest.raises(CheckpointMismatchError, match="convert it as siglip"):
        convert("siglip2_naflex", str(tmp_path / "hf"), str(tmp_path / "out"))


@pytest.mark.slow  # > 5 s: IG programs compiled for a 20 x 36 NaFlex grid
def test_integrated_gradients_through_explain_images_at_a_non_square_size(pair):
    """One fixed non-square size per call (5 x 9 patches): IG (16 steps) runs through the pipeline (measured gap 2.7e-4 of the score change)
    and its completeness gap is small against score - baseline score."""
    _, model = pair
    sized = model.with_input_shape((20, 36, 3))
    rng = np.random.default_rng(7)
    images = rng.uniform(size=(2, 20, 36, 3)).astype(np.float32)
    corpus = rng.uniform(size=(3, 20, 36, 3)).astype(np.float32)
    foil = rng.uniform(size=(3, 20, 36, 3)).astype(np.float32)
    result = pipeline.explain_images(sized, images, corpus=corpus, foil=foil, targets=("cocoa", "label_free"),
                                     methods=("integrated_gradients",),
                                     options={"integrated_gradients": {"n_steps": 16}})
    assert result.maps["integrated_gradients"].shape[0] == 2
    assert np.all(np.isfinite(result.maps["integrated_gradients"]))
    gap = np.abs(result.completeness_gaps["integrated_gradients"])
    assert np.max(gap) < 5e-3 * np.max(np.abs(result.scores - result.baseline_scores)), gap


def test_vision_only_directory_gives_the_same_image_tower(pair, tmp_path):
    """transformers' Siglip2VisionModel saved alone (keys without `vision_model.`, model_type
    "siglip2_vision_model") -> `siglip2_naflex_vision`: the full model's image parameters, the same
    features at a non-square size, no text tower."""
    reference, full = pair
    reference.vision_model.save_pretrained(str(tmp_path / "hf"))
    siglip2_side.processor().save_pretrained(str(tmp_path / "hf"))
    assert main(["convert", "siglip2_naflex_vision", str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    model = models.load("siglip2_naflex_vision", str(tmp_path / "out"))
    assert model.encode_text_fn is None and model.input_shape == full.input_shape
    image_params = {k: v for k, v in full.params["params"].items() if not k.startswith(("text_", "token_", "final_",
                                                                                         "logit_"))}
    assert jax.tree_util.tree_structure(model.params["params"]) == jax.tree_util.tree_structure(image_params)
    for a, b in zip(jax.tree_util.tree_leaves(model.params["params"]), jax.tree_util.tree_leaves(image_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(4).uniform(size=(1, 8, 36, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model.with_input_shape((8, 36, 3)).encode(x)),
                                  np.asarray(full.with_input_shape((8, 36, 3)).encode(x)))
    from cocoa_jax_ports import CheckpointMismatchError, convert
    with pytest.raises(CheckpointMismatchError, match="convert it as siglip2_naflex_vision"):
        convert("siglip2_naflex", str(tmp_path / "hf"), str(tmp_path / "out2"))


@pytest.mark.slow  # > 2 s: two programs
def test_attn_lrp_mode_has_the_same_forward_at_a_non_square_size(pair):
    """encode_fn.modes["lrp"] (AttnLRP's backward) computes the same features as encode_fn at a
    NaFlex size (the position resize is on the parameters, outside the rules)."""
    _, model = pair
    sized = model.with_input_shape((12, 28, 3))
    x = np.random.default_rng(6).uniform(size=(1, 12, 28, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(sized.encode_fn.modes["lrp"](model.params, x)),
                               np.asarray(sized.encode_fn(model.params, x)), rtol=1e-5, atol=1e-6)
