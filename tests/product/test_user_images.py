"""Users' own image files in every PIL mode through `cocoa-jax explain --images FOLDER`.

One command on the shipped digits encoder (1-channel 32x32 input, no resize/crop of its own:
files are read to grey floats, then stretched bilinearly): the explicands it saves equal an
independent NumPy conversion of the raw values written (tests/support/image_modes.py), and its unusual
reads (animation, tiny, extreme aspect) are one line each on stderr.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from tests.support.image_modes import LUMA, SOURCE, mode_cases, np_resize

INPUT = (32, 32)  # the digits encoder's input (cocoa_jax.models.small_resnet.INPUT_SHAPE)


@pytest.mark.slow  # one whole explain run (27 s on the 2-core host); tests/data/test_image_files.py covers the reader
def test_explain_reads_every_mode_as_it_is(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "odd"
    folder.mkdir()
    expected = {os.path.basename(path): want for path, want in mode_cases(folder, rng).values()}
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: shown turned 90 degrees clockwise
    deep = rng.integers(0, 65536, (12, 9)).astype(np.uint16)
    Image.fromarray(deep).save(folder / "rotated16.png", exif=exif)
    expected["rotated16.png"] = np.rot90(deep, -1)[..., None] / 65535.0
    for name, (h, w) in (("tiny", (3, 3)), ("strip", (10, 200))):
        grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
        Image.fromarray(grey).save(folder / f"{name}.png")
        expected[f"{name}.png"] = grey[..., None] / 255.0

    proc = run_cli(["explain", "--images", "odd", "--targets", "label_free", "--methods", "vanilla_gradients",
                    "--out", "out", "--quiet"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("cocoa-jax explain: note: ")]
    assert notes == [f"cocoa-jax explain: note: --images: {folder / 'animated.gif'} ({SOURCE[1]}x{SOURCE[0]} px): "
                     f"first frame of 3",
                     f"cocoa-jax explain: note: --images: {folder / 'strip.png'} (200x10 px): aspect 20.0:1; "
                     f"stretched to 32x32",
                     f"cocoa-jax explain: note: --images: {folder / 'tiny.png'} (3x3 px): upscaled 10.7x; "
                     f"stretched to 32x32"], proc.stderr
    with np.load(tmp_path / "out" / "attributions.npz") as data:
        names = [os.path.basename(p) for p in data["explicand_files"]]
        explicands = data["explicands"]
    assert sorted(names) == sorted(expected) and explicands.shape == (len(expected), *INPUT, 1)
    for name, got in zip(names, explicands):
        want = expected[name]
        if want.shape[-1] == 3:
            want = want @ LUMA[:, None]
        atol = 0.5 / 65535 + 2e-6 if name.endswith(".pgm") else 2e-6  # Pillow rounds a 12-bit PGM to 16 bits
        np.testing.assert_allclose(got, np_resize(want, INPUT), atol=atol, rtol=0, err_msg=name)
