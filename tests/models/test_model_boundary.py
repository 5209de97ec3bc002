"""Encoders refuse, on every eager path, inputs they were not made for: non-finite values,
values outside [0, 1] (normalised input included: every model takes pixels and normalises
inside), integer dtypes (`models.check_images`); `network_fn` takes the normalised input."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import models
from cocoa_jax.models import preprocessing as pp


@pytest.fixture(scope="module")
def digits():
    return models.load("digits")


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)


def _cifar_model():
    """A SimSiam CIFAR LoadedModel with zero weights: enough for input checks (nothing is run)."""
    spec = models.ARCHITECTURES["simsiam_cifar_resnet18"]
    _, abstract = models.init_abstract(spec.name, spec.default_config)
    variables = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    return models.make_loaded(spec.name, spec.default_config, variables)


def test_valid_inputs_are_accepted(digits, pixels):
    assert digits.encode(pixels).shape == (2, 128)
    models.check_images(digits, pixels)
    models.check_images(digits, jnp.asarray(pixels))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(digits, pixels, value):
    bad = pixels.copy()
    bad[1, 3, 4, 0] = value
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\).*\[0, 1\]"):
        digits.encode(bad)
    with pytest.raises(ValueError, match="NaN/inf"):
        digits.encode_fn(digits.params, jnp.asarray(bad))  # an eager call of the pure function


def test_all_nan_image_is_refused_not_encoded(digits):
    with pytest.raises(ValueError, match="NaN/inf"):
        digits.encode(np.full((1, 32, 32, 1), np.nan, np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_integer_dtypes_are_refused(digits, pixels, dtype):
    with pytest.raises(TypeError, match=r"dtype .* float pixels in \[0, 1\].*/ 255"):
        digits.encode((pixels * 255).astype(dtype))
    with pytest.raises(TypeError, match="dtype"):
        digits.encode(pixels > 0.5)


def test_8bit_range_floats_are_refused_with_the_likely_cause(digits, pixels):
    with pytest.raises(ValueError, match=r"values in \[.*, 25\d.*\] but model 'digits' takes float pixels in \[0, 1\].*x / 255"):
        digits.encode(pixels * 255)
    with pytest.raises(ValueError, match="x / 255"):
        digits.encode_fn(digits.params, pixels * 255)


def test_tolerance_is_a_thousandth_of_the_range(digits, pixels):
    digits.encode(np.clip(pixels + 5e-4, None, 1.0005))   # within 1e-3 of the width
    digits.encode(pixels - pixels.min() - 9e-4)
    with pytest.raises(ValueError, match=r"takes float pixels in \[0, 1\]; scale to \[0, 1\]"):
        digits.encode(pixels + 0.01)
    with pytest.raises(ValueError, match=r"takes float pixels in \[0, 1\]"):
        digits.encode(pixels - pixels.min() - 0.002)


def test_architectures_know_their_input_range():
    # What encode_fn takes: [0, 1] pixels for every architecture; what network_fn takes: normalised.
    for arch, spec in models.ARCHITECTURES.items():
        assert spec.input_range == ((0.0,) * spec.channels, (1.0,) * spec.channels), arch
    assert models.ARCHITECTURES["digits"].network_input_range == ((0.0,), (1.0,))
    assert models.ARCHITECTURES["simclr_resnet50"].network_input_range == ((0.0,) * 3, (1.0,) * 3)
    for arch, prep in (("simsiam_cifar_resnet18", pp.CIFAR), ("resnet18_classifier", pp.IMAGENET),
                       ("clip_vit_b32", pp.CLIP)):
        low, high = models.ARCHITECTURES[arch].network_input_range
        np.testing.assert_allclose(low, (0 - np.array(prep.mean)) / np.array(prep.std))
        np.testing.assert_allclose(high, (1 - np.array(prep.mean)) / np.array(prep.std))
        # What the model's own normalisation outputs lies inside, at both ends.
        ends = prep.normalize(np.array([[0.0] * 3, [1.0] * 3], np.float32))
        assert np.all(ends[0] >= np.array(low) - 1e-5) and np.all(ends[1] <= np.array(high) + 1e-5)
        assert prep.input_range() == ((0.0,) * 3, (1.0,) * 3)  # what prep(image) gives


def test_normalised_model_range_per_channel():
    model = _cifar_model()
    rng = np.random.default_rng(0)
    raw = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    models.check_images(model, raw)                       # [0, 1] pixels: the convention
    with pytest.raises(ValueError, match=r"takes float pixels in \[0, 1\].*look normalised.*network_fn"):
        models.check_images(model, pp.CIFAR.normalize(raw))
    with pytest.raises(ValueError, match=r"look like 8-bit pixels: scale to \[0, 1\], e.g. x / 255$"):
        models.check_images(model, raw * 255)
    with pytest.raises(TypeError, match=r"dtype uint8 .* float pixels in \[0, 1\]"):
        models.check_images(model, (raw * 255).astype(np.uint8))
    # network_fn's range is per channel: channel 2's upper end (2.754) is above channel 0's (2.514).
    network_range = model.network_input_range
    x = pp.CIFAR.normalize(raw)
    x[..., 2] = 2.7
    models.check_image_values("x", x, network_range, model.name)
    x[..., 0] = 2.7
    with pytest.raises(ValueError, match=r"\(channel 0\).*network_fn .* per channel \[-2.429, 2.514\]"):
        models.check_image_values("x", x, network_range, model.name)
    with pytest.raises(ValueError, match=r"x / 255, then normalise with model.preprocess.normalize"):
        model.network_fn(model.params, raw * 255)
    with pytest.raises(TypeError, match="normalise"):
        model.network_fn(model.params, (raw * 255).astype(np.uint8))


def test_check_images_checks_shape_too(digits, pixels):
    with pytest.raises(ValueError, match="ONE image"):
        models.check_images(digits, pixels[0])
    with pytest.raises(ValueError, match="spatial size"):
        models.check_images(digits, np.zeros((1, 16, 16, 1), np.float32))


def test_jit_sees_no_values_as_documented(digits, pixels):
    # Under jit values are unknown: only shapes and dtypes are checked, so check before jitting.
    reps = jax.jit(digits.encode_fn)(digits.params, pixels * 255)
    assert reps.shape == (2, 128)
    with pytest.raises(TypeError, match="dtype"):  # dtypes are static: refused under jit too
        jax.jit(digits.encode_fn)(digits.params, (pixels * 255).astype(np.uint8))
    assert "before" in models.check_images.__doc__ and "jit" in models.check_images.__doc__


def test_digits_dual_encoder_boundary():
    from cocoa_jax.models.digits_clip import load_digits_clip

    model = load_digits_clip()
    grid = np.random.default_rng(0).uniform(size=(1, 64, 64, 1)).astype(np.float32)
    assert model.encode(grid).shape == (1, model.representation_dim)  # any spatial size
    models.check_images(model, grid)
    with pytest.raises(ValueError, match="x / 255"):
        model.encode(grid * 255)
    with pytest.raises(ValueError, match="NaN/inf"):
        model.encode_fn(model.params, jnp.full((1, 32, 32, 1), jnp.nan))
    with pytest.raises(TypeError, match="dtype"):
        model.encode((grid * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        models.check_images(model, grid[..., 0])


def test_input_shape_of_reads_no_weights(tmp_path):
    assert models.input_shape_of("digits") == (32, 32, 1)
    assert models.input_shape_of("clip_vit_b32") == (224, 224, 3)
    assert models.input_shape_of("nope") is None
    (tmp_path / "model.json").write_text('{"format": 1, "arch": "clip_vit_b32", "config": {"image_resolution": 336}}')
    assert models.input_shape_of("clip_vit_b32", str(tmp_path)) == (336, 336, 3)
    assert models.input_shape_of("simsiam_cifar_resnet18", str(tmp_path / "missing")) is None


# ---------------------------------------------------------------------------------------------
# One pixel convention on EVERY architecture: encode_fn takes [0, 1] pixels, network_fn normalised input

# The normalisation each architecture's original code applies, restated from its source
# (torchvision's ImageNet statistics, OpenAI CLIP's, the SimSiam CIFAR-10 recipe's; SimCLR v1
# and the digits encoder take raw [0, 1] pixels): a swapped table entry fails here.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ORIGINAL_NORMALISATION = {
    "simclr_resnet50": None, "digits": None, "digits_vit": None,
    "simsiam_cifar_resnet18": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "clip_vit_b32": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "clip_vit": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    **{arch: IMAGENET_STATS for arch in ("resnet18_classifier", "resnet18", "resnet34", "resnet50", "resnet101",
                                         "resnet152", "dino_vit", "dinov2_vit")},
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "siglip2_naflex": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "siglip2_naflex_vision": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
TINY_SIZE = 16


def _tiny_config(arch):
    spec = models.ARCHITECTURES[arch]
    if "clip" in arch:
        return {**spec.default_config, "embed_dim": 8, "image_resolution": TINY_SIZE, "vision_layers": 1,
                "vision_width": 16, "vision_patch_size": 8, "context_length": 8, "vocab_size": 16,
                "transformer_width": 8, "transformer_layers": 1, "vision_head_width": 8}
    if arch in ("siglip", "siglip2_naflex", "siglip2_naflex_vision"):  # NaFlex: a budget of 4 patches, so 16 x 16 by default
        return {**spec.default_config, "max_num_patches": 4, "image_size": TINY_SIZE, "patch_size": 8, "vision_width": 16, "vision_layers": 1,
                "vision_heads": 2, "vision_mlp": 16, "vocab_size": 16, "context_length": 8, "text_width": 8,
                "text_layers": 1, "text_heads": 2, "text_mlp": 8, "projection_size": 8}
    if "vit" in arch:
        return {**spec.default_config, "embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": 8, "pos_grid": 2,
                "ffn_hidden": 32, "image_size": TINY_SIZE}
    if arch == "digits":
        return spec.default_config
    return {**spec.default_config, "stage_sizes": [1, 1, 1, 1]}  # ResNets: one block per stage


def _random_variables(abstract, seed):
    """Random values of the right shapes (no init computed): weights ~ N(0, 1/fan_in), variances
    and scales near 1, so every input pixel moves the output."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "var" in name:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return (rng.normal(size=leaf.shape) / np.sqrt(max(fan_in, 1))).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


@functools.lru_cache(maxsize=None)
def _tiny_model(arch):
    config = _tiny_config(arch)
    _, abstract = models.init_abstract(arch, config)
    model = models.make_loaded(arch, config, _random_variables(abstract, len(arch)))
    if model.input_shape[-1] == 3 and model.input_shape[:2] != (TINY_SIZE, TINY_SIZE):
        model = model.with_input_shape((TINY_SIZE, TINY_SIZE, 3))  # ResNets: any size
    return model


def _pixels(model, seed=0):
    return np.random.default_rng(seed).uniform(size=(2, *model.input_shape)).astype(np.float32)


def _normalise64(model, pixels):
    """The original's normalisation in NumPy float64, independent of the model's own code."""
    stats = ORIGINAL_NORMALISATION[model.name]
    if stats is None:
        return pixels
    mean, std = (np.asarray(v, np.float64) for v in stats)
    return ((pixels.astype(np.float64) - mean) / std).astype(np.float32)


ARCHS = [arch for arch, spec in models.ARCHITECTURES.items() if spec.images]  # text-only ones: tests/models/test_bert.py


def test_the_convention_table_covers_every_architecture():
    assert set(ORIGINAL_NORMALISATION) == set(ARCHS)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("arch", ARCHS)
def test_encode_fn_takes_pixels_and_normalises_inside(arch):
    model = _tiny_model(arch)
    x = _pixels(model)
    network = jax.jit(model.network_fn)
    expected = np.asarray(network(model.params, _normalise64(model, x)))
    atol = 1e-5 * np.abs(expected).max()  # float32: the two normalisations differ by an ulp
    np.testing.assert_allclose(np.asarray(model.encode(x)), expected, rtol=1e-4, atol=atol)
    if ORIGINAL_NORMALISATION[arch] is not None:  # the mistake this guards against: far off
        unnormalised = np.asarray(network(model.params, x))
        assert np.linalg.norm(unnormalised - expected) > 0.05 * np.linalg.norm(expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_normalised_input_to_encode_fn_is_refused_naming_the_convention(arch):
    model = _tiny_model(arch)
    normalised = _normalise64(model, _pixels(model))
    if ORIGINAL_NORMALISATION[arch] is None:  # e.g. ImageNet statistics applied by mistake
        normalised = ((_pixels(model) - 0.45) / 0.225).astype(np.float32)
    for check in (lambda x: models.check_images(model, x), model.encode,
                  lambda x: model.encode_fn(model.params, x)):
        with pytest.raises(ValueError, match=rf"model '{arch}' takes float pixels in \[0, 1\]") as caught:
            check(normalised)
        assert "\n" not in str(caught.value)
        if ORIGINAL_NORMALISATION[arch] is not None:
            assert "look normalised" in str(caught.value) and "network_fn" in str(caught.value)


@pytest.mark.parametrize("arch", ARCHS)
def test_network_fn_refuses_8bit_pixels(arch):
    model = _tiny_model(arch)
    with pytest.raises(ValueError, match=r"8-bit pixels: scale to \[0, 1\], e.g. x / 255"):
        model.network_fn(model.params, _pixels(model) * 255)
    with pytest.raises(ValueError, match=r"8-bit pixels"):
        model.encode_fn(model.params, _pixels(model) * 255)


@pytest.mark.parametrize("arch", ARCHS)
def test_repr_states_the_input_convention(arch):
    model = _tiny_model(arch)
    shape = "(N, " + ", ".join(map(str, model.input_shape)) + ")"
    text = repr(model)
    assert text == str(model) and len(text) < 400 and "\n" not in text  # no parameter dump
    assert f"input: {shape} float pixels in [0, 1], channels last" in text
    stats = ORIGINAL_NORMALISATION[arch]
    if stats is None:
        assert "no normalisation" in text and "network_fn" not in text
    else:
        assert f"normalised inside (mean=({stats[0][0]:.4g}, " in text and "network_fn" in text
    assert model.input_convention in text


def test_preprocess_gives_pixels_in_0_1():
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    for prep in (pp.CIFAR, pp.IMAGENET, pp.CLIP, pp.IMAGENET_RAW):
        x = prep(image)
        assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
        np.testing.assert_array_equal(x, prep.resize_crop(image))
        np.testing.assert_array_equal(prep.batch([image, image]), np.stack([x, x]))


def test_sweep_feeds_a_loaded_model_its_network_input_and_other_encoders_pixels():
    """The sweep keeps the paper's attribution space for a LoadedModel (network_fn on data
    normalised as the official code feeds it; run hashes as before) and gives any other encoder
    object [0, 1] pixels, the convention of encode_fn."""
    from cocoa_jax.sweep import inputs
    from cocoa_jax.sweep.config import SweepConfig

    model = _cifar_model()
    grey = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype(np.float32)
    spec = inputs.resolve_encoder(SweepConfig(), model)
    # the model's own network_fn, wrapped to carry the ResNet's LRP mode on the network input
    assert spec.network_input and getattr(spec.encode_fn, "__wrapped__", spec.encode_fn) is model.network_fn
    assert "relevance" in spec.encode_fn.modes
    rgb = np.repeat(grey, 3, axis=-1)
    np.testing.assert_allclose(inputs.digits_for_encoder(grey, spec, pp.CIFAR), _normalise64(model, rgb),
                               rtol=1e-6, atol=1e-6)

    class Pixels:  # an encoder object of the user's: encode_fn on [0, 1] pixels
        params, input_shape, preprocess = model.params, (32, 32, 3), pp.CIFAR
        encode_fn = staticmethod(model.encode_fn)

    other = inputs.resolve_encoder(SweepConfig(), Pixels())
    assert not other.network_input and other.encode_fn is model.encode_fn
    np.testing.assert_array_equal(inputs.digits_for_encoder(grey, other, pp.CIFAR), rgb)
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 44, 3), dtype=np.uint8))
    network_reader = inputs._reader_for(pp.CIFAR, spec)
    np.testing.assert_allclose(network_reader(image), _normalise64(model, pp.CIFAR(image)), rtol=1e-6, atol=1e-6)
    assert inputs._reader_for(pp.CIFAR, other) is pp.CIFAR  # pixels
