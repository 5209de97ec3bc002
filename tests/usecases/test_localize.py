"""Cross-modal localisation (paper Section 4.3): the shipped digits dual encoder, its training,
grid composition, pointing-game scoring, the targets, and `cocoa-jax localize` end to end.

Numbers are checked against independent float64 NumPy statements and hand-computed cases."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax.cli import main
from cocoa_jax.data.class_names import CIFAR100, caption_name
from cocoa_jax.data.digits import load_digits_split
from cocoa_jax.models import digits_clip
from cocoa_jax.training import clip_digits
from cocoa_jax.usecases import localize as L


@pytest.fixture(scope="module")
def model():
    return digits_clip.load_digits_clip()


@pytest.fixture(scope="module")
def data():
    return load_digits_split(seed=0)


def _unit(a):
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# The shipped dual encoder

def test_shipped_dual_encoder_zero_shot_accuracy_on_held_out_digits(model, data):
    """Caption with the highest cosine similarity = the label, on the 500 held-out digits."""
    captions = [f"This is a photo of a {w}" for w in digits_clip.DIGIT_WORDS]
    text = _unit(model.encode_text(captions))
    image = _unit(model.encode(data.x_test))
    accuracy = float(np.mean(np.argmax(image @ text.T, axis=1) == data.y_test))
    assert accuracy >= 0.9
    assert clip_digits.zero_shot_accuracy(model, data.x_test, data.y_test) == pytest.approx(accuracy)
    record = json.load(open(digits_clip.WEIGHTS_DIR + ".json"))
    assert record["zero_shot_test_accuracy"] == pytest.approx(accuracy, abs=0.01)


def test_image_tower_is_size_agnostic_and_grids_keep_tile_content(model, data):
    """64x64 grids encode; a grid of four copies of one digit has (almost) that digit's embedding
    direction (global average pooling; only the tile borders differ)."""
    x = data.x_test[:1]
    grid = np.asarray(L.compose_grid(np.repeat(x, 4, axis=0)))[None]
    single, tiled = _unit(model.encode(x))[0], _unit(model.encode(grid))[0]
    assert grid.shape == (1, 64, 64, 1) and single @ tiled > 0.9


def test_tokenize_ids_padding_and_errors():
    tokens = digits_clip.tokenize(["A handwritten seven.", "the number 7"])
    ids = {w: i + 1 for i, w in enumerate(digits_clip.VOCABULARY)}
    assert tokens.shape == (2, digits_clip.CONTEXT_LENGTH) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens[0, :4], [ids["a"], ids["handwritten"], ids["seven"], 0])
    np.testing.assert_array_equal(tokens[1, :4], [ids["the"], ids["number"], ids["7"], 0])
    with pytest.raises(ValueError, match="'dog'"):
        digits_clip.tokenize("a photo of a dog")
    with pytest.raises(ValueError, match="context length"):
        digits_clip.tokenize(" ".join(["a"] * (digits_clip.CONTEXT_LENGTH + 1)))
    with pytest.raises(ValueError, match="empty"):
        digits_clip.tokenize([])


def test_text_tower_ignores_padding(model):
    """Padding is masked: the same caption with a longer zero tail embeds identically."""
    tokens = digits_clip.tokenize("a handwritten seven")
    longer = np.zeros((1, digits_clip.CONTEXT_LENGTH), np.int32)
    longer[:, :3] = tokens[:, :3]
    np.testing.assert_allclose(model.encode_text(tokens), model.encode_text(longer[:, :5]), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Training

def test_clip_loss_matches_float64_numpy():
    rng = np.random.default_rng(0)
    img, txt, scale = rng.normal(size=(5, 6)), rng.normal(size=(5, 6)), 1.3
    logits = np.exp(scale) * _unit(img) @ _unit(txt).T

    def xent(z):  # rows: softmax over columns, the diagonal is the positive
        z = z - z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(axis=1)) - np.diag(z))

    expected = 0.5 * (xent(logits) + xent(logits.T))
    got = clip_digits.clip_loss(jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), jnp.float32(scale))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # The logit scale is clipped at log(100), as in CLIP.
    big = clip_digits.clip_loss(jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), jnp.float32(9.0))
    at_cap = clip_digits.clip_loss(jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32),
                                   jnp.float32(np.log(100.0)))
    assert float(big) == pytest.approx(float(at_cap), rel=1e-6)


@pytest.mark.slow  # two short training runs (~27 s)
def test_training_is_reproducible_for_a_seed(data):
    cfg = clip_digits.ClipConfig(steps=2, batch_size=16, seed=3)
    # The whole training split, as `train-digits-clip --steps 2 --batch-size 16` below trains on: the
    # step is compiled once per (module, settings but the seed) and shapes, so that test reuses it.
    x, y = data.x_train, data.y_train
    a, losses_a, _ = clip_digits.train_clip(x, y, cfg)
    b, losses_b, _ = clip_digits.train_clip(x, y, cfg)
    c, _, _ = clip_digits.train_clip(x, y, clip_digits.ClipConfig(steps=2, batch_size=16, seed=4))
    np.testing.assert_array_equal(losses_a, losses_b)
    for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(leaf_a, leaf_b)
    differs = [not np.array_equal(p, q) for p, q in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c))]
    assert any(differs)
    with pytest.raises(ValueError, match="batch_size"):
        clip_digits.train_clip(x[:64], y[:64], clip_digits.ClipConfig(steps=1, batch_size=65))


# ---------------------------------------------------------------------------------------------
# Grids and the pointing game

def test_compose_grid_and_tile_map_hand_computed():
    tiles = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 2, 3, 1), np.float32)
    grid = np.asarray(L.compose_grid(tiles))[..., 0]
    expected = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3], [2, 2, 2, 3, 3, 3]])
    np.testing.assert_array_equal(grid, expected)
    np.testing.assert_array_equal(L.tile_map((4, 6)), expected)
    with pytest.raises(ValueError, match="divisible"):
        L.tile_map((5, 6))
    with pytest.raises(ValueError, match="tiles"):
        L.compose_grid(tiles[:3])


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_sample_grids_contents_and_reproducibility(data):
    g = L.sample_grids(jax.random.key(0), data.x_test, data.y_test, 6)
    labels, idx = np.asarray(g.tile_labels), np.asarray(g.tile_indices)
    assert g.images.shape == (6, 64, 64, 1)
    for i in range(6):
        assert len(set(labels[i])) == 4
        np.testing.assert_array_equal(data.y_test[idx[i]], labels[i])
        np.testing.assert_array_equal(g.images[i], L.compose_grid(data.x_test[idx[i]]))
    np.testing.assert_array_equal(g.query_labels, labels[np.arange(6), np.asarray(g.query_tiles)])
    again = L.sample_grids(jax.random.key(0), data.x_test, data.y_test, 6)
    np.testing.assert_array_equal(g.images, again.images)
    forced = L.sample_grids(jax.random.key(1), data.x_test, data.y_test, 20, query_class=7)
    assert np.all(np.asarray(forced.query_labels) == 7)
    assert np.all([len(set(r)) == 4 for r in np.asarray(forced.tile_labels)])
    assert len(set(np.asarray(forced.query_tiles).tolist())) > 1  # the query tile stays random
    with pytest.raises(ValueError, match="class"):
        L.sample_grids(jax.random.key(0), data.x_test[data.y_test < 9], data.y_test[data.y_test < 9], 2)


@pytest.mark.slow  # ~14 s
def test_pointing_hits_hand_computed():
    heat = np.zeros((4, 4), np.float32)
    heat[3, 0] = 5.0                          # maximum in tile 2 (bottom left)
    heat[0, 2:] = 2.0; heat[1, 2:] = 2.0      # positive mass 8 in tile 1 (top right)
    heat[0, 0] = -9.0                         # negatives never count as mass
    np.testing.assert_allclose(L.positive_mass_shares(heat), [0, 8 / 13, 5 / 13, 0], rtol=1e-6)
    np.testing.assert_array_equal(L.pointing_hits(heat, 2), [True, False])
    np.testing.assert_array_equal(L.pointing_hits(heat, 1), [False, True])
    # Channel mean first: channel 0 alone would point at tile 0, the mean points at tile 3.
    rgb = np.zeros((4, 4, 2), np.float32)
    rgb[0, 0] = [4.0, -4.0]
    rgb[3, 3] = [1.0, 1.0]
    np.testing.assert_array_equal(L.pointing_hits(rgb, 3), [True, True])
    # No positive mass: a miss for the mass score.
    np.testing.assert_array_equal(L.pointing_hits(-np.ones((4, 4)), 0), [True, False])
    # RISE-like offset: without centring every tile has mass; centred, tile 3 holds it all.
    offset = np.full((4, 4), 10.0)
    offset[2:, 2:] += 1.0
    np.testing.assert_allclose(L.positive_mass_shares(offset, centre=True), [0, 0, 0, 1], atol=1e-6)
    assert float(L.positive_mass_shares(offset)[0]) > 0.2
    batch = L.batch_pointing_hits(np.stack([np.stack([heat, heat])] * 3), np.array([2, 1, 0]))
    assert batch.shape == (3, 2, 2)
    np.testing.assert_array_equal(batch[:, 0], [[True, False], [False, True], [False, False]])


# ---------------------------------------------------------------------------------------------
# Targets

def test_class_query_targets_match_float64_eq6():
    rng = np.random.default_rng(1)
    image_reps, text_reps = rng.normal(size=(3, 8)), rng.normal(size=(10, 8))
    queries = np.array([0, 4, 9])
    target = L.class_query_targets(jnp.asarray(image_reps, jnp.float32), jnp.asarray(text_reps, jnp.float32),
                                   jnp.asarray(queries))
    assert target.direction.shape == (3, 3, 8) and target.normalize == (True, True, True)
    probes = rng.normal(size=(3, 8))          # perturbed-input representations
    got = np.asarray(jax.vmap(lambda r, t: t(r))(jnp.asarray(probes, jnp.float32), target))
    for i, q in enumerate(queries):
        cos = _unit(probes[i]) @ _unit(text_reps).T
        foil = np.delete(np.arange(10), q)
        expected = [cos[q] - cos[foil].mean(), cos[q], _unit(probes[i]) @ _unit(image_reps[i])]
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="queries"):
        L.class_query_targets(image_reps, text_reps, np.array([0, 1, 10]))
    with pytest.raises(ValueError, match="class_text_reps"):
        L.class_query_targets(image_reps, text_reps[:, :4], queries)


def test_cifar100_class_names():
    assert len(CIFAR100) == 100 and len(set(CIFAR100)) == 100
    assert list(CIFAR100) == sorted(CIFAR100)  # CIFAR-100's fine labels are in alphabetical order
    assert (CIFAR100[0], CIFAR100[30], CIFAR100[98], CIFAR100[99]) == ("apple", "dolphin", "woman", "worm")
    assert caption_name("maple_tree") == "maple tree"
    assert L.query_caption("dog") == "This is a photo of a dog"


# ---------------------------------------------------------------------------------------------
# The command line

TINY = ["--explicands", "2", "--n-steps", "2", "--n-samples", "2", "--n-masks", "8", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("localize")
    assert main(["localize", *TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # a whole CLI run; tests/product covers localize quickly
def test_cli_default_writes_figure_npz_settings(run_dir, model, data, capsys):
    from PIL import Image

    with Image.open(run_dir / "figure.png") as im:
        assert im.format == "PNG" and im.size[1] > im.size[0] > 200
    z = np.load(run_dir / "attributions.npz")
    assert z["integrated_gradients"].shape == (2, 3, 64, 64, 1)
    assert z["gradient_shap"].shape == (2, 3, 64, 64, 1) and z["rise"].shape == (2, 3, 64, 64)
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["method_options"]["rise"]["n_masks"] == 8 and settings["pointing_game_chance"] == 0.25
    assert settings["method_options"]["rise"]["grid_size"] == [4, 4]  # the paper grid at 64 px (signature default)
    # The grids are the held-out digits named in the file, and the scores are eq. (6) in float64.
    for i in range(2):
        np.testing.assert_array_equal(z["images"][i], L.compose_grid(data.x_test[z["test_indices"][i]]))
    text = _unit(model.encode_text([f"This is a photo of a {w}" for w in digits_clip.DIGIT_WORDS]))
    image = _unit(model.encode(z["images"]))
    for i, q in enumerate(z["query_labels"]):
        cos = image[i] @ text.T
        expected = [cos[q] - np.delete(cos, q).mean(), cos[q], 1.0]
        np.testing.assert_allclose(z["scores"][i], expected, rtol=1e-4, atol=1e-5)
    # Stored hits agree with an independent NumPy pointing game.
    for m in ("integrated_gradients", "rise"):
        maps = z[m] if z[m].ndim == 4 else z[m].mean(axis=-1)
        for i in range(2):
            for k in range(3):
                heat = maps[i, k] - (maps[i, k].mean() if m == "rise" else 0.0)
                tiles = L.tile_map(heat.shape)
                assert z[f"hits_{m}"][i, k, 0] == (tiles.ravel()[np.argmax(heat)] == z["query_tiles"][i])
                mass = np.bincount(tiles.ravel(), np.maximum(heat, 0).ravel(), 4)
                assert z[f"hits_{m}"][i, k, 1] == (mass.max() > 0 and np.argmax(mass) == z["query_tiles"][i])
    # A whole run's outputs are refused as they stand (no --overwrite), nothing touched.
    _assert_refuses_to_overwrite(run_dir, capsys)


def _assert_refuses_to_overwrite(out, capsys):
    before = (out / "settings.json").read_bytes()
    assert main(["localize", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cocoa-jax localize: error:") and "--overwrite" in err and "\n" not in err
    assert (out / "settings.json").read_bytes() == before


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    """Earlier outputs in --out are refused before any work (the check reads which files exist; the
    slow test above checks the same refusal on a whole run's outputs)."""
    for name in ("figure.png", "attributions.npz", "settings.json"):
        (tmp_path / name).write_bytes(b"an earlier run's " + name.encode())
    _assert_refuses_to_overwrite(tmp_path, capsys)


@pytest.mark.parametrize("argv, message", [
    (["--model", "vgg"], "--model"),
    (["--query", "dog"], "--query"),
    (["--foil", "3"], "--foil"),
    (["--query", "3", "--foil", "three"], "--foil"),
    (["--explicands", "0"], "--explicands"),
    (["--methods", "ig,lime"], "--methods"),
    (["--n-masks", "-1"], "--n-masks"),
    (["--model", "clip_vit_b32"], "--weights"),
    (["--image", "x.png"], "--image"),
    (["--weights", "/nonexistent/dir"], "--weights"),
])
def test_cli_bad_arguments(argv, message, tmp_path, capsys):
    assert main(["localize", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cocoa-jax localize: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps"),
    (["--batch-size", "1"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--replace-shipped", "--out", "elsewhere"], "--replace-shipped"),
])
def test_train_cli_bad_arguments(argv, message, capsys):
    assert main(["train-digits-clip", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cocoa-jax train-digits-clip: error:") and message in err and "\n" not in err


def test_train_cli_never_replaces_the_shipped_weights_silently(capsys):
    assert main(["train-digits-clip", "--out", digits_clip.WEIGHTS_DIR]) == 2
    assert "shipped" in capsys.readouterr().err


@pytest.mark.slow
def test_train_cli_tiny_run_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "clip"
    assert main(["train-digits-clip", "--steps", "2", "--batch-size", "16", "--out", str(out), "--quiet"]) == 0
    record = json.loads((tmp_path / "clip.json").read_text())
    assert record["config"]["steps"] == 2 and len(record["loss_every_10_steps"]) == 1
    loaded = digits_clip.load_digits_clip(str(out))
    assert loaded.encode(np.zeros((1, 32, 32, 1))).shape == (1, digits_clip.EMBED_DIM)
    assert main(["train-digits-clip", "--steps", "2", "--out", str(out), "--quiet"]) == 2  # exists


# ---------------------------------------------------------------------------------------------
# CLIP path (a randomly initialised reduced CLIP at 224 px; needs the BPE vocabulary)

@pytest.mark.slow
@pytest.mark.usefixtures("optimized_xla")  # 224-px convolutions: 5x slower at -O0 (tests/conftest.py)
def test_cli_clip_path_with_random_small_clip(tmp_path):
    pytest.importorskip("ftfy")
    pytest.importorskip("regex")
    from PIL import Image

    from cocoa_jax import models
    from cocoa_jax.models.tokenizer import ClipTokenizer

    try:
        ClipTokenizer()
    except Exception as error:  # the BPE vocabulary file is optional
        pytest.skip(f"CLIP BPE vocabulary unavailable: {error}")
    config = dict(embed_dim=32, image_resolution=224, vision_layers=1, vision_width=64, vision_patch_size=32,
                  context_length=77, vocab_size=49408, transformer_width=64, transformer_layers=1)
    module = models.ARCHITECTURES["clip_vit_b32"].build(config)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), jnp.zeros((1, 77), jnp.int32),
                            method="init_all")
    weights = models.save("clip_vit_b32", config, variables, str(tmp_path / "clip"))
    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((240, 260, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    argv = ["localize", "--model", "clip_vit_b32", "--weights", weights, "--image", str(image), "--query", "dog",
            "--foil", "cat", "car", "--n-steps", "2", "--n-samples", "2", "--n-masks", "4", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    z = np.load(out / "attributions.npz")
    assert z["integrated_gradients"].shape == (1, 3, 224, 224, 3) and z["rise"].shape == (1, 3, 224, 224)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["foil"] == ["cat", "car"] and settings["captions"] == ["This is a photo of a dog"]
    model = models.load("clip_vit_b32", weights)
    text = _unit(model.encode_text(["This is a photo of a dog", "This is a photo of a cat",
                                    "This is a photo of a car"]))
    with Image.open(image) as im:
        x = model.preprocess(im.convert("RGB"))[None]
    rep = _unit(model.encode(x))[0]
    cos = text @ rep
    np.testing.assert_allclose(z["scores"][0], [cos[0] - cos[1:].mean(), cos[0], 1.0], rtol=1e-4, atol=1e-5)
