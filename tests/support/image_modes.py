"""Independent references for reading image files, shared by tests/data/test_image_files.py and
tests/product/test_user_images.py: PIL's resampling written as NumPy matrices, and one file per
PIL mode written from known raw values with its expected float conversion (NumPy formulas)."""
from __future__ import annotations

import numpy as np
from PIL import Image

SOURCE = (14, 20)                     # (h, w) of every written file
MODEL = (10, 12)                      # (H, W) of the model input: a downscale with antialiasing
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


def _kernel(kind):
    """PIL's filters: the triangle (BILINEAR, support 1) or Keys' cubic (BICUBIC, a = -0.5, support 2)."""
    if kind == "bilinear":
        return lambda x: np.clip(1.0 - np.abs(x), 0.0, None)
    a = -0.5

    def cubic(x):
        x = np.abs(x)
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, a * (((x - 5) * x + 8) * x - 4), 0.0))
    return cubic


def resize_matrix(n_in, n_out, kind):
    """(n_out, n_in) weights of PIL's antialiased resampling: output i centred at (i + 0.5) * scale,
    the kernel widened by the scale when shrinking, each row normalised (float64, written here)."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    kernel = _kernel(kind)
    centres = (np.arange(n_out) + 0.5) * scale
    weights = kernel((np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / stretch)
    return weights / weights.sum(1, keepdims=True)


def np_resize(image, size, kind="bilinear"):
    """(h, w, C) float64 -> (H, W, C): columns, then rows, each pass clipped to [0, 1] as PIL's are."""
    rows, cols = resize_matrix(image.shape[0], size[0], kind), resize_matrix(image.shape[1], size[1], kind)
    wide = np.clip(np.einsum("hwc,jw->hjc", image, cols), 0.0, 1.0)
    return np.clip(np.einsum("ih,hjc->ijc", rows, wide), 0.0, 1.0)


def composite(colour, alpha, background):
    return alpha * colour + (1.0 - alpha) * background


def palette(rng):
    return rng.integers(0, 256, (256, 3), dtype=np.uint8)


def mode_cases(tmp_path, rng):
    """name -> (path, expected (h, w, 1|3) float64 before resizing, with alpha on white)."""
    h, w = SOURCE
    cases = {}

    def save(name, image, ext, expected, **kw):
        path = str(tmp_path / f"{name}.{ext}")
        image.save(path, **kw)
        cases[name] = (path, expected)

    bits = rng.random((h, w)) > 0.5
    save("1", Image.fromarray(bits), "png", bits[..., None].astype(float))
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    save("L", Image.fromarray(grey), "png", grey[..., None] / 255.0)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    save("LA", Image.fromarray(np.stack([grey, alpha], -1), "LA"), "png",
         composite(grey[..., None] / 255.0, alpha[..., None] / 255.0, 1.0))
    index, colours = rng.integers(0, 256, (h, w), dtype=np.uint8), palette(rng)
    p = Image.fromarray(index, "P")
    p.putpalette(colours.ravel().tolist())
    save("P", p, "png", colours[index] / 255.0)
    opaque = (index != 7)[..., None].astype(float)  # palette entry 7 transparent (tRNS)
    save("P-transparent", p, "png", composite(colours[index] / 255.0, opaque, 1.0), transparency=7)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    save("RGB", Image.fromarray(rgb), "png", rgb / 255.0)
    save("RGBA", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "png",
         composite(rgb / 255.0, alpha[..., None] / 255.0, 1.0))
    cmyk = rng.integers(0, 256, (h, w, 4), dtype=np.uint8) / 255.0
    save("CMYK", Image.fromarray(np.round(cmyk * 255).astype(np.uint8), "CMYK"), "tif",
         (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:]))
    ycc = rng.integers(0, 256, (h, w, 3), dtype=np.uint8).astype(float)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    ycc_rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    save("YCbCr", Image.fromarray(ycc.astype(np.uint8), "YCbCr"), "tif", np.clip(ycc_rgb / 255.0, 0, 1))
    deep = rng.integers(0, 65536, (h, w)).astype(np.uint16)
    save("I;16", Image.fromarray(deep), "png", deep[..., None] / 65535.0)
    save("I;16B", Image.frombytes("I;16B", (w, h), deep.astype(">u2").tobytes()), "tif", deep[..., None] / 65535.0)
    # A 12-bit PGM (maxval 4095): PIL opens it as mode I; its full scale is 4095.
    twelve = rng.integers(0, 4096, (h, w)).astype(np.uint16)
    path = tmp_path / "I-12bit.pgm"
    path.write_bytes(b"P5\n%d %d\n4095\n" % (w, h) + twelve.astype(">u2").tobytes())
    cases["I"] = (str(path), twelve[..., None] / 4095.0)
    unit = rng.random((h, w)).astype(np.float32)
    save("F", Image.fromarray(unit), "tif", unit[..., None].astype(float))
    frames = [Image.fromarray(np.full((h, w), v, np.uint8)) for v in (40, 200, 90)]
    save("animated", frames[0], "gif", np.full((h, w, 1), 40 / 255.0), save_all=True, append_images=frames[1:])
    return cases


