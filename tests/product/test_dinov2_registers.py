"""DINOv2 with registers on the product path: `cocoa-jax convert` of a `dinov2_vits14_reg4_pretrain.pth`
-layout checkpoint (random weights, released 37 x 37 grid), `cocoa_jax.models.load`, representations
at the default 224 px against timm's `vit_*_patch14_reg4_dinov2` settings holding the same weights
(antialiased bicubic resampling of the positional embedding to the output size, as the DINOv2 hub's
`*_reg` entries do; see tests/reference/timm_vit.py).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from conftest import REPO, run_cli

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(REPO, "tests"))
from tests.reference import timm_vit as timm_reference  # noqa: E402

_TIMM = timm_reference.import_timm_vision_transformer()
if _TIMM is None:
    pytest.skip("timm not installed (pip install --no-deps timm)", allow_module_level=True)

WIDTH = 64


@pytest.mark.slow  # ~20 s: a cocoa-jax convert subprocess and a 224-px compile
def test_convert_and_load_register_checkpoint(tmp_path):
    reference = timm_reference.dinov2_registers(_TIMM[0], 20, width=WIDTH, heads=1)
    torch.save(timm_reference.facebookresearch_layout(reference, 22), tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    out = tmp_path / "dinov2_reg"
    result = run_cli(["convert", "dinov2_vit", tmp_path / "dinov2_vits14_reg4_pretrain.pth", out], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bicubic, antialiased, to the output size (register checkpoint" in result.stdout
    config = json.loads((out / "model.json").read_text())["config"]
    assert (config["num_register_tokens"], config["interpolate_offset"], config["interpolate_antialias"]) == (4, 0.0,
                                                                                                             True)

    from cocoa_jax import models

    model = models.load("dinov2_vit", str(out))
    assert model.input_shape == (224, 224, 3) and model.representation_dim == WIDTH
    pixels = np.random.RandomState(0).rand(2, 224, 224, 3).astype(np.float32)
    network_input = np.asarray(model.preprocess.normalize(pixels), np.float32)
    # encode takes [0, 1] pixels where the model has a separate raw network (network_fn), else its input
    reps = np.asarray(model.encode(pixels if hasattr(model, "network_fn") else network_input), np.float64)
    with torch.no_grad():
        expected = timm_reference.representation(reference)(
            torch.from_numpy(np.transpose(network_input, (0, 3, 1, 2)))).numpy().astype(np.float64)
    assert np.linalg.norm(reps - expected) / np.linalg.norm(expected) < 1e-5
