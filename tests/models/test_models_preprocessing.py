"""Preprocessing (PIL + numpy re-implementation of the torchvision pipelines) and the registry."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from cocoa_jax import models
from cocoa_jax.models import preprocessing as pp


def _coordinate_image(height: int, width: int) -> Image.Image:
    """RGB image whose R channel is the column index and G channel the row index."""
    rows, cols = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.uint8))


def test_resize_keeps_aspect_and_floors_long_side():
    image = Image.new("RGB", (400, 300))  # (width, height)
    assert pp.resize_shorter_side(image, 256, "bilinear").size == (341, 256)  # int(256 * 400 / 300)
    assert pp.resize_shorter_side(Image.new("RGB", (30, 50)), 36, "bicubic").size == (36, 60)


def test_center_crop_offsets_match_torchvision_rounding():
    # No resampling when the shorter side already equals `resize`: the crop is exact.
    image = _coordinate_image(height=40, width=37)
    out = pp.Preprocessing(resize=37, crop=32).resize_crop(image)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    top, left = int(round((40 - 32) / 2.0)), int(round((37 - 32) / 2.0))  # torchvision's offsets
    np.testing.assert_array_equal(out[0, :, 0] * 255, np.arange(left, left + 32))
    np.testing.assert_array_equal(out[:, 0, 1] * 255, np.arange(top, top + 32))


def test_normalisation_and_model_pipelines():
    image = (np.random.RandomState(0).rand(50, 70, 3) * 255).astype(np.uint8)
    for pipe, size in ((pp.CIFAR, 32), (pp.IMAGENET, 224), (pp.IMAGENET_RAW, 224), (pp.CLIP, 224)):
        raw = pipe.resize_crop(image)
        out = pipe(image)  # [0, 1] pixels: the models normalise inside
        assert out.shape == (size, size, 3) and out.dtype == np.float32
        np.testing.assert_array_equal(out, raw)
        normalised = pipe.normalize(out)
        if pipe.mean is None:
            np.testing.assert_array_equal(normalised, raw)
        else:
            np.testing.assert_allclose(normalised * np.asarray(pipe.std) + np.asarray(pipe.mean), raw, atol=1e-6)
    assert pp.CIFAR.resize == 36 and pp.CIFAR.interpolation == "bicubic"
    assert pp.CLIP.interpolation == "bicubic" and pp.IMAGENET.interpolation == "bilinear"
    assert pp.CIFAR.batch([image, image]).shape == (2, 32, 32, 3)
    grey = pp.IMAGENET(np.zeros((300, 260), np.float32))  # greyscale X-ray -> 3 channels
    np.testing.assert_array_equal(grey[0, 0], np.zeros(3))
    np.testing.assert_allclose(pp.IMAGENET.normalize(grey)[0, 0], -np.asarray(pp.IMAGENET_MEAN) /
                               np.asarray(pp.IMAGENET_STD), rtol=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="interpolation"):
        pp.Preprocessing(resize=8, crop=8, interpolation="nearest")
    with pytest.raises(ValueError, match="mean and std"):
        pp.Preprocessing(resize=8, crop=8, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="image"):
        pp.CIFAR(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="smaller than the crop"):
        pp.Preprocessing(resize=8, crop=16).resize_crop(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        pp.CIFAR(np.full((40, 40, 3), np.nan, np.float32))


def test_registry_names_and_errors(tmp_path):
    assert set(models.list_architectures()) == {"simclr_resnet50", "simsiam_cifar_resnet18",
                                                "resnet18_classifier", "clip_vit_b32", "digits",
                                                "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                                "dino_vit", "dinov2_vit", "clip_vit", "sentence_bert", "siglip", "siglip2_naflex",
                                                "siglip2_naflex_vision",
                                                "digits_vit"}
    with pytest.raises(ValueError, match="arch must be one of"):
        models.load("vgg16", str(tmp_path))
    with pytest.raises(ValueError, match="directory is required"):
        models.load("clip_vit_b32")
    with pytest.raises(FileNotFoundError, match="cocoa-jax convert"):
        models.load("clip_vit_b32", str(tmp_path))


def test_models_package_does_not_import_torch():
    import os
    import subprocess

    # In a fresh interpreter: other tests in this session may have imported torch already.

    code = ("import sys, cocoa_jax, cocoa_jax.models, cocoa_jax.models.tokenizer, cocoa_jax.commands.convert\n"
            "bad = [m for m in ('torch', 'tensorflow', 'torchvision') if m in sys.modules]\n"
            "assert not bad, bad\n")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert result.returncode == 0, result.stderr


def test_digits_entry_returns_loaded_model():
    import os

    from cocoa_jax.models import small_resnet

    if not os.path.isdir(small_resnet.WEIGHTS_DIR):
        pytest.skip("the embedded digits checkpoint has not been trained/shipped yet")
    model = models.load("digits")
    assert isinstance(model, models.LoadedModel)
    x = np.random.RandomState(0).rand(2, *model.input_shape).astype(np.float32)
    reps = np.asarray(model.encode(x))
    assert reps.shape == (2, model.representation_dim)
    np.testing.assert_allclose(reps, np.asarray(model.encode_fn(model.params, x)), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_a_checkpoint_of_another_native_size_preprocesses_to_its_own_size():
    """A CLIP converted at 48 px (as L/14@336 is at 336): model.preprocess crops 48 px, resizing the
    shorter side to 48 with bicubic as OpenAI CLIP's _transform(48) does (PIL on 8-bit values here:
    an independent statement, within the float-vs-8-bit rounding of the project's reader)."""
    import jax
    import jax.numpy as jnp

    config = dict(embed_dim=16, image_resolution=48, vision_layers=1, vision_width=32, vision_patch_size=16,
                  context_length=8, vocab_size=64, transformer_width=32, transformer_layers=1)
    module = models.ARCHITECTURES["clip_vit"].build(config)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)), jnp.zeros((1, 8), jnp.int32),
                            method="init_all")
    from cocoa_jax.models.loaded import make_loaded

    model = make_loaded("clip_vit", config, variables)
    assert (model.preprocess.resize, model.preprocess.crop) == (48, 48) and model.input_shape == (48, 48, 3)
    rgb = (np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    small = np.asarray(image.resize((61, 48), Image.BICUBIC), np.float64) / 255  # shorter side 48, long floored
    left = int(round((61 - 48) / 2.0))
    reference = small[:, left:left + 48]
    got = np.asarray(model.preprocess(image))
    assert got.shape == (48, 48, 3)
    np.testing.assert_allclose(got, reference, atol=2.5 / 255)
    assert np.isfinite(np.asarray(model.encode(got[None]))).all()  # the pixels feed the model
    # An input shape asked for explicitly keeps the table's preprocessing (cheap tests at other sizes).
    assert models.ARCHITECTURES["clip_vit"].preprocess.crop == 224
