"""Encoders refuse, on every eager path, inputs they were not made for: non-finite values,
values outside the architecture's preprocessed range, integer dtypes (`models.check_images`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import models
from cocoa_jax.models import preprocessing as pp
from cocoa_jax.models import registry


@pytest.fixture(scope="module")
def digits():
    return models.load("digits")


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)


def _cifar_model():
    """A SimSiam CIFAR LoadedModel with zero weights: enough for input checks (nothing is run)."""
    spec = registry.ARCHITECTURES["simsiam_cifar_resnet18"]
    _, abstract = registry.init_abstract(spec.name, spec.default_config)
    variables = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    return registry.make_loaded(spec.name, spec.default_config, variables)


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
    with pytest.raises(TypeError, match=r"dtype .* float inputs in \[0, 1\].*/ 255"):
        digits.encode((pixels * 255).astype(dtype))
    with pytest.raises(TypeError, match="dtype"):
        digits.encode(pixels > 0.5)


def test_8bit_range_floats_are_refused_with_the_likely_cause(digits, pixels):
    with pytest.raises(ValueError, match=r"values in \[.*, 25\d.*\] but model 'digits' expects \[0, 1\].*x / 255"):
        digits.encode(pixels * 255)
    with pytest.raises(ValueError, match="x / 255"):
        digits.encode_fn(digits.params, pixels * 255)


def test_tolerance_is_a_thousandth_of_the_range(digits, pixels):
    digits.encode(np.clip(pixels + 5e-4, None, 1.0005))   # within 1e-3 of the width
    digits.encode(pixels - pixels.min() - 9e-4)
    with pytest.raises(ValueError, match="expects"):
        digits.encode(pixels + 0.01)
    with pytest.raises(ValueError, match="expects"):
        digits.encode(pixels - pixels.min() - 0.002)


def test_architectures_know_their_input_range():
    assert registry.ARCHITECTURES["digits"].input_range == ((0.0,), (1.0,))
    assert registry.ARCHITECTURES["simclr_resnet50"].input_range == ((0.0,) * 3, (1.0,) * 3)
    for arch, prep in (("simsiam_cifar_resnet18", pp.CIFAR), ("resnet18_classifier", pp.IMAGENET),
                       ("clip_vit_b32", pp.CLIP)):
        low, high = registry.ARCHITECTURES[arch].input_range
        np.testing.assert_allclose(low, (0 - np.array(prep.mean)) / np.array(prep.std))
        np.testing.assert_allclose(high, (1 - np.array(prep.mean)) / np.array(prep.std))
        # What the model's own preprocessing outputs lies inside, at both ends.
        ends = prep.normalize(np.array([[0.0] * 3, [1.0] * 3], np.float32))
        assert np.all(ends[0] >= np.array(low) - 1e-5) and np.all(ends[1] <= np.array(high) + 1e-5)


def test_normalised_model_range_per_channel():
    model = _cifar_model()
    rng = np.random.default_rng(0)
    raw = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    models.check_images(model, pp.CIFAR.normalize(raw))   # prepared as the model expects
    models.check_images(model, raw)                       # [0, 1] lies inside the normalised range
    with pytest.raises(ValueError, match=r"x / 255, then normalise with model.preprocess.normalize"):
        models.check_images(model, raw * 255)
    # Channel 2's upper end (2.754) is above channel 0's (2.514): checked per channel.
    x = pp.CIFAR.normalize(raw)
    x[..., 2] = 2.7
    models.check_images(model, x)
    x[..., 0] = 2.7
    with pytest.raises(ValueError, match=r"\(channel 0\).*per channel \[-2.429, 2.514\]"):
        models.check_images(model, x)
    with pytest.raises(TypeError, match="normalise"):
        models.check_images(model, (raw * 255).astype(np.uint8))


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
