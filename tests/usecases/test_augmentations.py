"""Paper Section 4.2 use case: augmentations with provenance, the explanation pipeline, the score
and `cocoa-jax augmentations`. References: NumPy float64, scikit-image, SciPy resampling."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from cocoa_jax import meshes, methods, targets
from cocoa_jax.cli import main
from cocoa_jax.usecases import augmentations as A

H = W = 24


@pytest.fixture(scope="module")
def rgb():
    return np.asarray(jax.random.uniform(jax.random.key(11), (H, W, 3)), np.float32)


def resample_np(image, source):
    """Independent float64 bilinear resampling through the provenance map (SciPy)."""
    image = np.asarray(image, np.float64)
    coords = [np.asarray(source[..., 0], np.float64), np.asarray(source[..., 1], np.float64)]
    return np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="nearest")
                     for c in range(image.shape[-1])], axis=-1)


def assert_provenance_reproduces(view, original, atol=2e-6):
    """Valid view pixels equal the original sampled at their source coordinates."""
    valid = np.asarray(view.valid)
    np.testing.assert_allclose(np.asarray(view.image)[valid], resample_np(original, np.asarray(view.source))[valid],
                               atol=atol)


# ----------------------------------------------------------------------------- geometric


def test_flip_matches_numpy_and_provenance(rgb):
    view = A.augment("flip", jax.random.key(0), rgb)
    np.testing.assert_array_equal(np.asarray(view.image), rgb[:, ::-1])
    assert np.asarray(view.valid).all()
    np.testing.assert_array_equal(np.asarray(view.source)[3, 5], [3, W - 1 - 5])
    assert_provenance_reproduces(view, rgb, atol=0)


def test_rot90_matches_numpy_and_provenance(rgb):
    view = A.augment("rot90", jax.random.key(0), rgb)
    np.testing.assert_array_equal(np.asarray(view.image), np.rot90(rgb))
    assert_provenance_reproduces(view, rgb, atol=0)
    with pytest.raises(ValueError, match="square"):
        A.rot90(jax.random.key(0), rgb[:20])


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_resized_crop_matches_scikit_image(rgb, seed):
    from skimage.transform import resize

    key = jax.random.key(seed)
    top, left, h, w = (int(v) for v in A.crop_box(key, H, W))
    view = A.random_resized_crop(key, rgb)
    crop = rgb[top:top + h, left:left + w].astype(np.float64)
    expected = resize(crop, (H, W, 3), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(np.asarray(view.image), expected, atol=2e-6)
    assert_provenance_reproduces(view, rgb)
    # The footprint of the view in the original is exactly the crop box.
    box = np.zeros((H, W), bool)
    box[top:top + h, left:left + w] = True
    np.testing.assert_array_equal(np.asarray(A.footprint(view.source, view.valid, (H, W))), box)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_crop_box_follows_torchvision_sampling():
    boxes = np.asarray(jax.vmap(lambda k: A.crop_box(k, 64, 64))(jax.random.split(jax.random.key(3), 400)))
    top, left, h, w = boxes.T
    assert np.all(top >= 0) and np.all(left >= 0) and np.all(top + h <= 64) and np.all(left + w <= 64)
    area = h * w / 64.0 ** 2
    ratio = w / h
    # Rounding h and w to integers moves area and ratio slightly outside the sampled ranges.
    assert area.min() > 0.2 * 0.9 and area.max() < 0.5 * 1.1 and area.std() > 0.05
    assert ratio.min() > 0.75 * 0.9 and ratio.max() < 4 / 3 * 1.1
    assert len(np.unique(top)) > 10 and len(np.unique(left)) > 10
    # No candidate fits: torchvision's fallback, a centred box at the nearest allowed aspect
    # ratio (w = 8, h = round(8 / 4) = 2, top = (8 - 2) // 2).
    np.testing.assert_array_equal(A.crop_box(jax.random.key(0), 8, 8, scale=(1.0, 1.0), ratio=(4.0, 5.0)),
                                  [3, 0, 2, 8])


def test_crop_flip_is_flip_of_crop(rgb):
    key = jax.random.key(5)
    crop = A.random_resized_crop(key, rgb)
    view = A.crop_flip(key, rgb)
    np.testing.assert_array_equal(np.asarray(view.image), np.asarray(crop.image)[:, ::-1])
    assert_provenance_reproduces(view, rgb)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_erase_matches_numpy_and_masks_the_box(rgb):
    key = jax.random.key(7)
    top, left, h, w = (int(v) for v in A.erase_box(key, H, W))
    view = A.augment("erase", key, rgb)
    expected = rgb.copy()
    expected[top:top + h, left:left + w] = 0.5
    np.testing.assert_array_equal(np.asarray(view.image), expected)
    inside = np.zeros((H, W), bool)
    inside[top:top + h, left:left + w] = True
    np.testing.assert_array_equal(np.asarray(view.valid), ~inside)
    assert_provenance_reproduces(view, rgb, atol=0)
    boxes = np.asarray(jax.vmap(lambda k: A.erase_box(k, 64, 64))(jax.random.split(jax.random.key(1), 400)))
    area = boxes[:, 2] * boxes[:, 3] / 64.0 ** 2
    assert area.min() > 0.1 * 0.85 and area.max() < 0.25 * 1.15
    assert np.all(boxes[:, 0] + boxes[:, 2] <= 64) and np.all(boxes[:, 1] + boxes[:, 3] <= 64)


# ----------------------------------------------------------------------------- colour


def test_grayscale_is_rec601_luma(rgb):
    view = A.augment("grayscale", jax.random.key(0), rgb)
    luma = rgb.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])  # TF's (= SimCLR's) Rec. 601 weights
    np.testing.assert_allclose(np.asarray(view.image), np.repeat(luma[..., None], 3, -1), atol=1e-6)
    assert_provenance_reproduces(view._replace(image=rgb), rgb, atol=0)  # identity provenance


def jitter_reference(image, order, brightness, contrast, saturation, hue):
    """SimCLR v1 colour jitter in float64 NumPy/scikit-image (TF semantics), clip after each op."""
    from skimage.color import hsv2rgb, rgb2hsv

    def sat(x):
        hsv = rgb2hsv(x)
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
        return hsv2rgb(hsv)

    def hue_shift(x):
        hsv = rgb2hsv(x)
        hsv[..., 0] = np.mod(hsv[..., 0] + hue, 1.0)
        return hsv2rgb(hsv)

    ops = [lambda x: x + brightness, lambda x: (x - x.mean(axis=(0, 1))) * contrast + x.mean(axis=(0, 1)),
           sat, hue_shift]
    x = np.asarray(image, np.float64)
    for i in order:
        x = np.clip(ops[i](x), 0, 1)
    return x


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_color_jitter_matches_numpy_reference(rgb, order):
    params = A.JitterParams(jnp.asarray(order, jnp.int32), jnp.float32(0.13), jnp.float32(1.4),
                            jnp.float32(0.6), jnp.float32(-0.15))
    got = np.asarray(A.color_jitter_with(rgb, params))
    np.testing.assert_allclose(got, jitter_reference(rgb, order, 0.13, 1.4, 0.6, -0.15), atol=2e-5)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_jitter_params_ranges_and_view(rgb):
    draws = jax.vmap(A.jitter_params)(jax.random.split(jax.random.key(0), 500))
    assert np.all(np.sort(np.asarray(draws.order), axis=1) == np.arange(4))
    for values, lo, hi in ((draws.brightness, -0.8, 0.8), (draws.contrast, 0.2, 1.8),
                           (draws.saturation, 0.2, 1.8), (draws.hue, -0.2, 0.2)):
        values = np.asarray(values)
        assert values.min() >= lo and values.max() <= hi and values.max() - values.min() > 0.8 * (hi - lo)
    key = jax.random.key(4)
    view = A.augment("color_jitter", key, rgb)
    np.testing.assert_allclose(np.asarray(view.image),
                               np.asarray(A.color_jitter_with(rgb, A.jitter_params(key))), atol=0)
    assert float(np.asarray(view.image).min()) >= 0 and float(np.asarray(view.image).max()) <= 1


def test_colour_ops_refuse_one_channel():
    gray = np.zeros((8, 8, 1), np.float32)
    for name in A.COLOR_AUGMENTATIONS:
        with pytest.raises(ValueError, match="3-channel"):
            A.augment(name, jax.random.key(0), gray)
    assert "grayscale" not in A.applicable_augmentations(1) and "grayscale" in A.applicable_augmentations(3)


# ----------------------------------------------------------------------------- keys, batches, checks


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("name", ["crop", "crop_flip", "erase", "color_jitter"])
def test_same_key_same_view_and_batch_equals_singles(rgb, name):
    images = np.stack([rgb, rgb[::-1], 1 - rgb])
    keys = jax.random.split(jax.random.key(9), 3)
    batch = A.augment_batch(name, keys, images)
    for i in range(3):
        single = A.augment(name, keys[i], images[i])
        for field in A.View._fields:
            np.testing.assert_allclose(np.asarray(getattr(batch, field))[i], np.asarray(getattr(single, field)),
                                       atol=1e-6, err_msg=field)
    again = A.augment_batch(name, keys, images)
    np.testing.assert_array_equal(np.asarray(again.image), np.asarray(batch.image))
    other = A.augment_batch(name, jax.random.split(jax.random.key(10), 3), images)
    assert not np.array_equal(np.asarray(other.image), np.asarray(batch.image))


def test_bad_arguments_are_refused(rgb):
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.augment("solarize", jax.random.key(0), rgb)
    with pytest.raises(ValueError, match="rank 3"):
        A.augment("flip", jax.random.key(0), rgb[0])
    with pytest.raises(ValueError, match="NaN"):
        A.augment("flip", jax.random.key(0), np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="scale"):
        A.crop_box(jax.random.key(0), 8, 8, scale=(0.6, 0.2))
    with pytest.raises(ValueError, match="keys"):
        A.augment_batch("flip", jax.random.split(jax.random.key(0), 2), np.stack([rgb] * 3))
    with pytest.raises(ValueError, match="duplicates"):
        A.check_augmentations(["flip", "flip"], 3)


# ----------------------------------------------------------------------------- scoring


def test_positive_share_on_a_hand_built_case():
    a = np.zeros((2, 3, 3), np.float32)
    a[0] = [[1, 2, -5], [0, 3, 0], [0, 0, 4]]  # positive mass 10; 1 + 2 + 3 = 6 on the mask
    a[1] = -1.0                                  # no positive mass at all
    mask = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    share = np.asarray(A.positive_share(a, mask))
    assert share[0] == pytest.approx(0.6) and np.isnan(share[1])
    with pytest.raises(ValueError, match="share"):
        A.positive_share(a, mask[:2])


def test_view_content_shares_against_numpy():
    """(M, N, A, K) shares of the command's content_share array, from a float64 NumPy loop."""
    rng = np.random.default_rng(3)
    n, a, k, h, w = 2, 3, 2, 4, 5
    valid = rng.random((n, a, h, w)) > 0.4
    attributions = {"integrated_gradients": rng.normal(size=(n, a, k, h, w, 3)).astype(np.float32),
                    "rise": rng.normal(size=(n, a, k, h, w)).astype(np.float32)}
    views = A.View(np.zeros((n, a, h, w, 3), np.float32), np.zeros((n, a, h, w, 2), np.float32), valid)
    result = A.AugmentationResult(("original", "flip", "erase"), views, attributions, np.zeros((n, a, k)))
    got = A.view_content_shares(result, ("rise", "integrated_gradients"))
    expected = np.zeros((2, n, a, k))
    for mi, (name, centred) in enumerate((("rise", True), ("integrated_gradients", False))):
        for i, j, t in np.ndindex(n, a, k):
            pixel = np.asarray(attributions[name][i, j, t], np.float64)
            pixel = pixel.sum(-1) if pixel.ndim == 3 else pixel - pixel.mean()
            positive = np.maximum(pixel, 0)
            expected[mi, i, j, t] = positive[valid[i, j]].sum() / positive.sum()
    assert got.shape == (2, n, a, k)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_pixel_attribution_sums_channels_and_centres_rise():
    ig = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    np.testing.assert_array_equal(A.pixel_attribution(ig, "integrated_gradients"), ig.sum(-1))
    rise = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    np.testing.assert_allclose(A.pixel_attribution(rise, "rise"), rise - rise.mean(axis=(1, 2), keepdims=True))


# ----------------------------------------------------------------------------- explaining (digits)


@pytest.fixture(scope="module")
def digits():
    from cocoa_jax import models
    from cocoa_jax.data.digits import load_digits_split

    model = models.load("digits")
    data = load_digits_split(seed=0)
    foil_reps = A.encode_in_chunks(model.encode_fn, model.params, data.x_train[:40])
    return model, data, foil_reps


@pytest.mark.slow
def test_explain_pairs_scores_and_chunk_independence(digits):
    model, data, foil_reps = digits
    xs, corpus = data.x_test[:3], data.x_test[3:6]
    # RISE only: compiling the gradient methods is left to the CLI test (same code path).
    one = A.explain_pairs(model.encode_fn, model.params, xs, corpus, foil_reps, jax.random.key(2), chunk_size=1,
                          methods=("rise",), n_masks=16)
    two = A.explain_pairs(model.encode_fn, model.params, xs, corpus, foil_reps, jax.random.key(2), chunk_size=2,
                          methods=("rise",), n_masks=16)
    # Default chunking (one per call on CPU) over a one-device mesh: the sharded path, same maps.
    meshed = A.explain_pairs(model.encode_fn, model.params, xs, corpus, foil_reps, jax.random.key(2),
                             methods=("rise",), n_masks=16, mesh=meshes.make_mesh(jax.local_devices()[:1]))
    for name in ("scores", "rise"):
        np.testing.assert_allclose(one[name], two[name], atol=1e-5, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(meshed[name], one[name], atol=1e-5, rtol=1e-5, err_msg=name)
    assert one["rise"].shape == (3, 2, 32, 32) and "integrated_gradients" not in one
    # Scores: eq. (3) with a corpus of one, evaluated pairwise in float64; label-free of itself = 1.
    reps = np.asarray(model.encode(xs), np.float64)
    corpus_reps = np.asarray(model.encode(corpus), np.float64)
    expected = [float(targets.contrastive_corpus_similarity(reps[i], corpus_reps[i:i + 1], foil_reps))
                for i in range(3)]
    np.testing.assert_allclose(one["scores"][:, 0], expected, atol=2e-5)
    np.testing.assert_allclose(one["scores"][:, 1], 1.0, atol=2e-5)
    # RISE of explicand 2, recomputed alone through the method table with its documented key.
    from cocoa_jax import baselines

    x = jnp.asarray(xs[2])
    target = targets.stack([targets.cocoa(corpus_reps[2:3].astype(np.float32), foil_reps),
                            targets.label_free(reps[2].astype(np.float32))])
    f = targets.explain_fn(lambda xb: model.encode_fn(model.params, xb), target)
    key = jax.random.split(jax.random.fold_in(jax.random.key(2), methods.stream_id("rise")), 3)[2]
    alone = methods.attribute("rise", f, x, baselines.gaussian_blur(x, 21, 5.0), key, n_masks=16)
    np.testing.assert_allclose(one["rise"][2], np.asarray(alone), atol=1e-5)


@pytest.mark.slow
def test_explain_augmentations_and_content_share(digits):
    model, data, foil_reps = digits
    originals = data.x_test[:2]
    result = A.explain_augmentations(model.encode_fn, model.params, originals, foil_reps, jax.random.key(0),
                                     methods=("rise",), n_masks=16, chunk_size=2)
    assert result.augmentations == A.applicable_augmentations(1)
    n_views = len(result.augmentations)
    assert result.views.image.shape == (2, n_views, 32, 32, 1) and result.scores.shape == (2, n_views, 2)
    assert result.attributions["rise"].shape == (2, n_views, 2, 32, 32)
    np.testing.assert_array_equal(result.views.image[:, 0], originals)  # "original" is the identity
    np.testing.assert_allclose(result.scores[:, :, 1], 1.0, atol=2e-5)
    shares = A.content_share_experiment(model.encode_fn, model.params, originals, foil_reps, jax.random.key(1),
                                        methods=("rise",), n_masks=16, chunk_size=2)
    for name in ("erase", "crop"):
        chance = shares[name]["chance"]
        np.testing.assert_allclose(chance, shares[name]["mask"].reshape(2, -1).mean(1))
        assert np.all((chance > 0) & (chance < 1))
        for share in shares[name]["share"].values():
            assert share.shape == (2, 2) and np.all((share >= 0) & (share <= 1))
        assert shares[name]["share"].keys() == {"rise"}
    # Erase: content = outside the box, 75-90% of the image; crop: the box, 20-50% (rounded).
    assert np.all(shares["erase"]["chance"] > 0.7) and np.all(shares["crop"]["chance"] < 0.55)


# ----------------------------------------------------------------------------- command line


TINY = ["--explicands", "2", "--n-steps", "2", "--n-samples", "2", "--n-masks", "8", "--foil-size", "20",
        "--seed", "3", "--quiet"]


@pytest.mark.parametrize("extra, message", [
    (["--n-masks", "0"], "`--n-masks` must be a positive integer"),
    (["--augmentations", "flip,grayscale"], "grayscale need 3-channel"),
    (["--augmentations", "blur"], "unknown name"),
    (["--methods", "shap_deep"], "unknown name"),
    (["--model", "vgg"], "--model must be one of"),
    (["--images", "a.png"], "--images/--foil need --model"),
    (["--model", "simsiam_cifar_resnet18", "--weights", "/nonexistent"], "--weights must be"),
    (["--stdev", "nan"], "--stdev"),
    (["--explicands", "9999"], "--explicands must be at most"),
])
def test_cli_refuses_bad_arguments_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["augmentations", *TINY, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cocoa-jax augmentations: error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("aug") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["augmentations", *TINY[:-1], "--out", str(out)]) == 0  # not --quiet
    return out, printed.getvalue()


@pytest.mark.slow
def test_cli_default_run_writes_figure_arrays_and_settings(cli_run, capsys):
    from PIL import Image

    cli_run, printed = cli_run
    # Digits have one channel: the colour augmentations are skipped, and the output says so.
    assert "skipped grayscale, color_jitter" in printed and "1-channel" in printed
    assert sorted(os.listdir(cli_run)) == ["attributions.npz", "figure.png", "settings.json"]

    with Image.open(cli_run / "figure.png") as im:
        assert im.format == "PNG" and im.size[1] > im.size[0]
    z = np.load(cli_run / "attributions.npz")
    settings = json.loads((cli_run / "settings.json").read_text())
    views = list(z["augmentations"])
    assert views == list(A.applicable_augmentations(1)) == settings["augmentations"]
    assert settings["skipped_augmentations"] == ["grayscale", "color_jitter"]
    n, a = 2, len(views)
    assert z["views"].shape == (n, a, 32, 32, 1) and z["source"].shape == (n, a, 32, 32, 2)
    assert z["integrated_gradients"].shape == (n, a, 2, 32, 32, 1) and z["rise"].shape == (n, a, 2, 32, 32)
    assert z["content_share"].shape == (3, n, a, 2)
    assert set(settings["array_axes"]) >= {"views", "source", "valid", "rise", "scores"}
    for i in range(n):  # provenance in the file reproduces every stored view
        for j in range(a):
            valid = z["valid"][i, j]
            np.testing.assert_allclose(z["views"][i, j][valid],
                                       resample_np(z["originals"][i], z["source"][i, j])[valid], atol=2e-6)
    # Same seed, same views (a second run into another folder).
    other = cli_run.parent / "again"
    rise_only = ["--explicands", "2", "--n-masks", "8", "--foil-size", "20", "--seed", "3", "--quiet"]
    assert main(["augmentations", *rise_only, "--out", str(other), "--methods", "rise"]) == 0
    z2 = np.load(other / "attributions.npz")
    np.testing.assert_array_equal(z2["views"], z["views"])
    np.testing.assert_allclose(z2["rise"], z["rise"], atol=1e-6)
    # Refuses to replace, then replaces with --overwrite.
    before = (cli_run / "settings.json").read_bytes()
    capsys.readouterr()
    assert main(["augmentations", *TINY, "--out", str(cli_run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (cli_run / "settings.json").read_bytes() == before


@pytest.mark.slow
def test_cli_converted_encoder_on_photos(tmp_path):
    """--model path: a randomly initialised SimSiam CIFAR ResNet (one block per stage, not 18's two:
    half the layers to compile; the path does not depend on the depth) saved with `models.save`,
    scikit-image's bundled photos as images and foil; colour augmentations apply (3 channels)."""
    from PIL import Image
    from skimage import data as skdata

    from cocoa_jax import models

    arch = "simsiam_cifar_resnet18"
    config = dict(models.ARCHITECTURES[arch].default_config, stage_sizes=[1, 1, 1, 1])
    module, _ = models.init_abstract(arch, config)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), method="init_all")
    weights = models.save(arch, config, variables, str(tmp_path / "model"))
    paths = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(getattr(skdata, name)()).resize((48, 40)).save(paths[name])
    out = tmp_path / "out"
    assert main(["augmentations", "--model", arch, "--weights", weights, "--images", paths["astronaut"],
                 paths["coffee"], "--foil", paths["chelsea"], paths["rocket"], "--n-steps", "2", "--n-samples", "2",
                 "--n-masks", "8", "--augmentations", "original,grayscale,color_jitter,erase", "--quiet",
                 "--out", str(out)]) == 0
    z = np.load(out / "attributions.npz")
    assert z["views"].shape == (2, 4, 32, 32, 3) and z["rise"].shape == (2, 4, 2, 32, 32)
    assert np.all(np.isfinite(z["integrated_gradients"])) and np.abs(z["gradient_shap"]).max() > 0
    # The stored originals are the model's resize + crop of the files, in [0, 1] (before normalising).
    model = models.load(arch, weights)
    with Image.open(paths["coffee"]) as im:
        np.testing.assert_allclose(z["originals"][1], model.preprocess.resize_crop(im.convert("RGB")), atol=1e-6)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["skipped_augmentations"] == [] and settings["titles"] == ["astronaut.png", "coffee.png"]
