"""Users' image files read as they are: every PIL mode against an independent NumPy conversion
of the raw values the test wrote, EXIF orientation, alpha, resizing in float, and the notes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cocoa_jax.data import files, pixels
from cocoa_jax.data.image_folder import ImageFolder, to_unit_range
from cocoa_jax.models import preprocessing as pp
from tests.support.image_modes import (LUMA, MODEL, SOURCE, composite, mode_cases, np_resize, palette,
                               resize_matrix)

RNG = np.random.default_rng(0)


def test_reference_resize_is_pils_resize():
    """The reference (tests/support/image_modes.py) is PIL's resampling: equal to PIL's float (mode F) resize, and to its 8-bit
    resize up to that one's rounding (after each of its two passes: up to 1/255)."""
    plane = RNG.random(SOURCE)
    for kind, resample in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
        for size in (MODEL, (33, 41)):  # shrink and enlarge
            pil = np.asarray(Image.fromarray(plane.astype(np.float32)).resize(size[::-1], resample), np.float64)
            ours = np.einsum("ih,hw,jw->ij", resize_matrix(SOURCE[0], size[0], kind), plane,
                             resize_matrix(SOURCE[1], size[1], kind))
            np.testing.assert_allclose(ours, pil, atol=1e-6, err_msg=f"{kind} {size}")
    raw = RNG.integers(0, 256, (*SOURCE, 3), dtype=np.uint8)
    for size in (MODEL, (33, 41)):
        pil = np.asarray(Image.fromarray(raw).resize(size[::-1], Image.BILINEAR)) / 255.0
        assert np.abs(np_resize(raw / 255.0, size) - pil).max() <= 1.0 / 255 + 1e-6


# --- one file per mode -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mode_files(tmp_path_factory):
    return mode_cases(tmp_path_factory.mktemp("modes"), RNG)


MODES = ("1", "L", "LA", "P", "P-transparent", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I", "F",
         "animated")


@pytest.mark.parametrize("name", MODES)
def test_each_mode_reads_its_raw_values(mode_files, name):
    path, expected = mode_files[name]
    with Image.open(path) as image:  # the file holds the mode named (the test is about that mode)
        assert image.mode == {"P-transparent": "P", "animated": "P"}.get(name, name)
    for channels in (1, 3):
        want = expected
        if want.shape[-1] != channels:
            want = want @ LUMA[:, None] if channels == 1 else np.repeat(want, 3, -1)
        got, notes = files.read([path], (*MODEL, channels))
        # Mode I from a 12-bit PGM: Pillow has rounded its values to 0..65535 (0.5 / 65535 at most).
        atol = 0.5 / 65535 + 2e-6 if name == "I" else 2e-6
        np.testing.assert_allclose(got[0], np_resize(want, MODEL), atol=atol, rtol=0)
        assert notes == ((f"{path} ({SOURCE[1]}x{SOURCE[0]} px): first frame of 3",)
                         if name == "animated" else ())


def test_colour_conversions_agree_with_pil_to_its_rounding(mode_files):
    """CMYK, YCbCr and RGB -> grey as PIL converts them (code we did not write): to its 8-bit rounding
    (1/255); YCbCr to 2/255, as PIL's YCbCr matrix has 6-bit fixed-point coefficients."""
    for name, mode, tolerance in (("CMYK", "RGB", 1), ("YCbCr", "RGB", 2), ("RGB", "L", 1)):
        with Image.open(mode_files[name][0]) as image:
            pil = np.asarray(image.convert(mode), np.float64) / 255.0
            ours = pixels.to_float(image, 1 if mode == "L" else 3)
        assert np.abs(ours - pil.reshape(ours.shape)).max() <= tolerance / 255 + 1e-6, name


def test_in_memory_modes_pa_and_i16l():
    h, w = 3, 5
    index, alpha, colours = (RNG.integers(0, 256, (h, w), dtype=np.uint8),
                             RNG.integers(0, 256, (h, w), dtype=np.uint8), palette(RNG))
    pa = Image.frombytes("PA", (w, h), np.stack([index, alpha], -1).tobytes())
    pa.putpalette(colours.ravel().tolist())
    np.testing.assert_allclose(pixels.to_float(pa, background=0.25),
                               composite(colours[index] / 255.0, alpha[..., None] / 255.0, 0.25), atol=1e-6)
    deep = RNG.integers(0, 65536, (h, w)).astype(np.uint16)
    little = Image.frombytes("I;16L", (w, h), deep.astype("<u2").tobytes())
    np.testing.assert_allclose(pixels.to_float(little, 1)[..., 0], deep / 65535.0, atol=1e-7)


def test_sixteen_bit_png_equals_its_8_bit_copy(tmp_path):
    """The issue's case: a 16-bit grey PNG read almost white (0.86-1.0) and up to 0.9 off its 8-bit copy."""
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray(np.round(ramp / 257.0).astype(np.uint8)).save(tmp_path / "flat.png")
    got, _ = files.read([str(tmp_path / "deep.png"), str(tmp_path / "flat.png")], (16, 16, 1))
    assert got[0].min() == 0.0 and got[0].max() == 1.0
    assert np.abs(got[0] - got[1]).max() <= 0.5 / 255 + 1e-6


def test_alpha_background_is_a_parameter(mode_files):
    path, _ = mode_files["RGBA"]
    with Image.open(path) as image:
        raw = np.asarray(image, np.float64) / 255.0
    rgb, alpha = raw[..., :3], raw[..., 3:]
    for background in (0.0, 1.0, 0.5):
        got, _ = files.read([path], (*SOURCE, 3), background=background)
        np.testing.assert_allclose(got[0], composite(rgb, alpha, background), atol=1e-6)
    with pytest.raises(ValueError, match="background"):
        pixels.to_float(Image.new("RGBA", (2, 2)), background=2.0)


# Orientation tag -> the NumPy operation that shows the stored pixels upright (EXIF 2.3).
ORIENTATIONS = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
                5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
                7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def test_exif_orientation_is_applied(tmp_path):
    raw = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for tag, upright in ORIENTATIONS.items():
        exif = Image.Exif()
        exif[0x0112] = tag
        Image.fromarray(raw).save(tmp_path / f"o{tag}.png", exif=exif)
        with Image.open(tmp_path / f"o{tag}.png") as image:
            np.testing.assert_allclose(pixels.to_float(image), upright(raw) / 255.0, atol=1e-7, err_msg=str(tag))
    # JPEG (lossy): compared with the decoder's own stored pixels, rotated here; 16-bit grey too.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(tmp_path / "o.jpg", exif=exif)
    with Image.open(tmp_path / "o.jpg") as image:
        stored = np.asarray(image) / 255.0
        np.testing.assert_allclose(pixels.to_float(image), np.rot90(stored, -1), atol=1e-7)
    deep = RNG.integers(0, 65536, (5, 7)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "o16.png", exif=exif)
    got, _ = files.read([str(tmp_path / "o16.png")], (7, 5, 1))
    np.testing.assert_allclose(got[0, ..., 0], np.rot90(deep, -1) / 65535.0, atol=1e-7)


def test_values_without_a_full_scale_are_refused(tmp_path):
    Image.fromarray(np.arange(12, dtype=np.int32).reshape(3, 4) - 5).save(tmp_path / "int32.tif")
    with pytest.raises(ValueError, match=r"^cannot read image .*int32.tif.*32-bit signed integer TIFF"):
        files.read([str(tmp_path / "int32.tif")], (4, 4, 1))
    with pytest.raises(ValueError, match="mode I .* from memory has no known bit depth"):
        pixels.to_float(Image.fromarray(np.zeros((2, 2), np.int32)))
    Image.fromarray(np.full((3, 4), 2.5, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match=r"mode F image holds values in \[2.5, 2.5\]; float pixels must lie in"):
        files.read([str(tmp_path / "hdr.tif")], (4, 4, 1))
    with pytest.raises(ValueError, match="NaN"):
        pixels.to_float(Image.fromarray(np.full((2, 2), np.nan, np.float32)))
    with pytest.raises(ValueError, match="image mode 'HSV' is not supported"):
        pixels.to_float(Image.new("HSV", (2, 2)))
    with pytest.raises(ValueError, match="float pixels must lie in"):
        pp.CIFAR.resize_crop(np.full((40, 40, 3), 1.5, np.float32))


# --- resizing in float, and the model's own resize + crop --------------------------------------

def test_model_resize_crop_takes_full_depth_and_resizes_in_float(tmp_path):
    deep = RNG.integers(0, 65536, (30, 23)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    pipe = pp.Preprocessing(resize=16, crop=12, interpolation="bicubic")
    resized = np_resize(np.repeat(deep[..., None] / 65535.0, 3, -1), (int(16 * 30 / 23), 16), "bicubic")
    top, left = int(round((resized.shape[0] - 12) / 2)), int(round((16 - 12) / 2))
    want = resized[top:top + 12, left:left + 12]
    with Image.open(tmp_path / "deep.png") as image:  # a PIL image of mode I;16 ...
        np.testing.assert_allclose(pipe.resize_crop(image), want, atol=2e-6)
    got, notes = files.read([str(tmp_path / "deep.png")], (12, 12, 3), pipe)  # ... or the file
    np.testing.assert_allclose(got[0], want, atol=2e-6)
    assert notes == ()


def test_resize_crop_on_8_bit_images_stays_within_the_8_bit_pipelines_rounding():
    """torchvision's PIL pipeline resizes the uint8 image and rounds after each of its two passes: the
    float resize differs from it by that rounding only (bilinear: 1/255; bicubic: the first rounding
    passes through the kernel's negative lobes, measured 1.1/255)."""
    from skimage import data as skdata

    raw = np.asarray(Image.fromarray(skdata.astronaut()).resize((70, 50), Image.BILINEAR))
    for pipe in (pp.CIFAR, pp.IMAGENET, pp.IMAGENET_BICUBIC, pp.CLIP):
        eight_bit = pp.center_crop(pp.resize_shorter_side(Image.fromarray(raw), pipe.resize, pipe.interpolation),
                                   pipe.crop)
        diff = np.abs(pipe.resize_crop(Image.fromarray(raw)) - np.asarray(eight_bit) / 255.0)
        assert diff.max() <= (1.0 if pipe.interpolation == "bilinear" else 1.25) / 255 + 1e-6, pipe
        assert diff.mean() <= 0.35 / 255, pipe


# --- tiny and extreme-aspect images: one line of note, or refused ------------------------------

def test_tiny_and_extreme_aspect_images_are_noted_or_refused(tmp_path):
    for name, (h, w) in (("tiny", (3, 3)), ("strip", (10, 200)), ("plain", (30, 34)), ("needle", (2, 300))):
        Image.fromarray(RNG.integers(0, 256, (h, w), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    paths = [str(tmp_path / f"{n}.png") for n in ("tiny", "strip", "plain")]
    got, notes = files.read(paths, (32, 32, 1))
    assert got.shape == (3, 32, 32, 1)
    assert notes == (f"{paths[0]} (3x3 px): upscaled 10.7x; stretched to 32x32",
                     f"{paths[1]} (200x10 px): aspect 20.0:1; stretched to 32x32")
    _, notes = files.read(paths, (224, 224, 3), pp.IMAGENET)
    assert notes == (f"{paths[0]} (3x3 px): upscaled 85.3x; shorter side to 256, then the center "
                     f"224x224 crop keeps 88% of its long side",
                     f"{paths[1]} (200x10 px): upscaled 25.6x; aspect 20.0:1; shorter side to 256, "
                     f"then the center 224x224 crop keeps 4% of its long side",
                     f"{paths[2]} (34x30 px): upscaled 8.5x; shorter side to 256, then the center "
                     f"224x224 crop keeps 77% of its long side")
    with pytest.raises(ValueError, match=r"^cannot read image .*needle.png.*aspect 150:1 exceeds 100:1"):
        files.read([str(tmp_path / "needle.png")], (32, 32, 1))


# --- other readers of image files --------------------------------------------------------------

def test_image_folder_reads_full_depth(tmp_path):
    deep = RNG.integers(0, 65536, (6, 5)).astype(np.uint16)
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(deep).save(tmp_path / "train" / "a" / "x.png")
    for mode, channels in (("L", 1), ("RGB", 3)):
        got = ImageFolder(tmp_path, "train", mode=mode).images([0])[0]
        np.testing.assert_allclose(got, np.repeat(deep[..., None] / 65535.0, channels, -1), atol=1e-7)
    got = ImageFolder(tmp_path, "train", mode=None).images([0])[0]  # the PIL image through to_unit_range
    np.testing.assert_allclose(got[..., 0], deep / 65535.0, atol=1e-7)
    np.testing.assert_allclose(to_unit_range(deep), deep[..., None] / 65535.0, atol=1e-7)
