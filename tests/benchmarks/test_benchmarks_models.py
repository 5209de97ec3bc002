"""The benchmark's converted model pairs run the same weights on both sides.

`benchmarks.harness.models` builds DINOv2 ViT-S/14 and the CLIP ViT-B/16 image tower in PyTorch with
random weights and converts them with the project's converters; the speed comparison is only
like for like if both sides then compute the same function. Full size (224 px), one image.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.harness import models as M  # noqa: E402

torch.set_num_threads(2)


def _needs(name):
    if name == "dinov2_vits14":
        pytest.importorskip("dinov2.models.vision_transformer")
    elif importlib.util.find_spec("clip") is None:
        pytest.skip("clip-anytorch not installed (pip install --no-deps clip-anytorch)")


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("name", ["dinov2_vits14", "clip_vit_b16"])
def test_paired_models_compute_the_same_representations(name):
    _needs(name)
    spec = M.SPECS[name]
    module, variables = M.init_flax(spec)
    model = M.init_torch(spec)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    reps = np.asarray(module.apply(variables, x))
    with torch.no_grad():
        expected = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert reps.shape == expected.shape == (1, spec.rep_dim)
    assert np.linalg.norm(reps - expected) / np.linalg.norm(expected) < 1e-4
    # the cache hands both sides one conversion, and the PyTorch side stays inference-only
    assert spec.paired(0) is spec.paired(0)
    assert not any(p.requires_grad for p in model.parameters())
