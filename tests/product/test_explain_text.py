"""`cocoa-jax explain --text-file F --corpus-text ... --foil-text ...` as users run it (one subprocess): the page,
the PNG and the npz written, the tokens on the page escaped, IG complete; and usage errors in-process (exit 2,
nothing written)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli


@pytest.mark.slow
def test_explain_text_writes_page_png_and_npz(tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("this is a photo of a seven\n\na handwritten 7\n", encoding="utf-8")
    out = tmp_path / "out"
    done = run_cli(["explain", "--text-file", sentences, "--corpus-text", "a handwritten seven", "the number seven",
                    "--foil-text", "a handwritten one", "the number two", "--targets", "cocoa,label_free",
                    "--methods", "integrated_gradients,occlusion", "--n-steps", "16", "--out", out, "--quiet"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (out / "tokens.html").read_text(encoding="utf-8")
    assert page.count('class="tok"') == (7 + 3) * 2 * 2          # tokens x targets x methods
    assert page.count("scale &plusmn;") == 2 * 2 * 2              # one scale per row
    assert (out / "tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = np.load(out / "attributions.npz")
    assert arrays["integrated_gradients_0"].shape == (2, 7) and arrays["occlusion_1"].shape == (2, 3)
    assert np.abs(arrays["integrated_gradients_completeness_gap"]).max() < 1e-3
    settings = json.loads((out / "settings.json").read_text())
    assert settings["tokens"][1] == ["a", "handwritten", "7"]


def test_explain_text_usage_errors(tmp_path):
    """Every text-mode check raises a UsageError naming the flag before any work (the CLI turns it into exit 2)."""
    from cocoa_jax import cli
    from cocoa_jax.commands import explain_text
    from cocoa_jax.commands.errors import UsageError

    for argv, message in (
            (["--text", "a seven", "--foil-text", "a one"], "need a corpus"),
            (["--text", "a seven", "--model", "resnet50", "--corpus-text", "x"], "text tower"),
            (["--text-file", str(tmp_path / "missing.txt"), "--corpus-text", "x", "--foil-text", "y"], "--text-file"),
            (["--text", "a seven", "--images", "x.png", "--corpus-text", "x", "--foil-text", "y"], "--images"),
            (["--text", "a seven", "--corpus-text", "x", "--foil-text", "y", "--batch-size", "0"], "--batch-size")):
        with pytest.raises(UsageError, match=message):
            explain_text.check(cli.parse(["explain", *argv, "--out", str(tmp_path / "out")]))
    assert not (tmp_path / "out").exists()
