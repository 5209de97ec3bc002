"""The token page: escaped text, one shared scale per row, and (in a real headless Chromium) the colours on
screen: the highest token pure red, the lowest pure blue."""
from __future__ import annotations

import shutil
import subprocess
import types

import numpy as np
import pytest
from PIL import Image

from cocoa_jax.text.html import token_colour, token_page, write_token_page


def _explanation():
    return types.SimpleNamespace(tokens=[["<b>dog</b>", "&", "cat"]], target_names=("cocoa",),
                                 method_names=("integrated_gradients",),
                                 scores_by_method={"integrated_gradients": [np.asarray([[0.5, -0.5, 0.1]])]})


def test_the_page_escapes_text_and_shows_the_row_scale():
    page = token_page(_explanation(), title="<script>x</script>")
    assert "<b>dog" not in page and "&lt;b&gt;dog&lt;/b&gt;" in page and "&amp;" in page
    assert "<script>x" not in page
    assert "scale &plusmn;0.5" in page
    assert token_colour(0.5, 0.5) == (255, 0, 0) and token_colour(-0.5, 0.5) == (0, 0, 255)
    assert token_colour(0.0, 0.5) == (255, 255, 255) and token_colour(0.1, 0.5) == (255, 204, 204)


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_the_page_in_a_headless_browser(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium binary found (Debian: apt-get install -y chromium)")
    page = tmp_path / "tokens.html"
    write_token_page(str(page), _explanation())
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=800,300", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    count = lambda rgb: int(np.all(pixels == rgb, axis=1).sum())
    assert count((255, 0, 0)) > 100          # the highest token's box
    assert count((0, 0, 255)) > 100          # the lowest token's box
    assert count((255, 204, 204)) > 100      # 0.1 on the row's scale 0.5
