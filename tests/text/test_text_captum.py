"""Token IG against code we did not write: Captum's LayerIntegratedGradients on the token-embedding layer of the
PyTorch reference CLIP text tower (tests/reference/clip.py, random weights), the same target (COCOA's cosine
direction), the same baseline token, steps and rule."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
pytest.importorskip("ftfy")
pytest.importorskip("regex")

import jax  # noqa: E402

from cocoa_jax import targets  # noqa: E402
from cocoa_jax.models import make_loaded  # noqa: E402
from cocoa_jax.text import attribution as TA, clip_text_encoder  # noqa: E402
from cocoa_jax_ports import clip as port_clip  # noqa: E402
from tests.reference.clip import CLIPReference, randomize_  # noqa: E402

TINY = dict(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
            context_length=77, vocab_size=49408, transformer_width=64, transformer_layers=2)
BASELINE_ID = 269  # any ordinary token: LayerIntegratedGradients takes baseline ids, not embeddings


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_token_ig_equals_captum_layer_integrated_gradients():
    from cocoa_jax.models.tokenizer import find_merges_file
    try:
        find_merges_file()
    except FileNotFoundError:
        pytest.skip("no CLIP BPE merges file installed (pip install --no-deps clip-anytorch)")
    torch.manual_seed(0)
    reference = randomize_(CLIPReference(**TINY), 1)
    encoder = clip_text_encoder(make_loaded("clip_vit", *port_clip.convert_state_dict(reference.state_dict())))
    rng = np.random.default_rng(0)
    target = targets.stack([targets.cocoa(rng.normal(size=(5, 16)), rng.normal(size=(7, 16))),
                            targets.corpus(rng.normal(size=(3, 16)))])
    ids = encoder.tokenize(["a dog runs on the beach"])[0]
    content = TA.content_positions(encoder, ids)
    ours = np.asarray(TA.token_scores(encoder, encoder.params, ids, content, target, "integrated_gradients",
                                      jax.random.key(0), options={"n_steps": 50}, baseline=BASELINE_ID))

    directions = torch.from_numpy(np.asarray(target.direction, np.float32))       # (K, D), cosine targets

    def forward(tokens, k):
        reps = reference.encode_text(tokens)
        return (reps / reps.norm(dim=-1, keepdim=True)) @ directions[k]

    padded = np.zeros((1, 77), np.int64)
    padded[0, :len(ids)] = ids
    base = padded.copy()
    base[0, content] = BASELINE_ID
    lig = captum_attr.LayerIntegratedGradients(forward, reference.token_embedding)
    theirs = np.stack([lig.attribute(torch.from_numpy(padded), baselines=torch.from_numpy(base), n_steps=50,
                                     method="gausslegendre", additional_forward_args=(k,)).detach().numpy()[0]
                       for k in range(2)])                                             # (K, 77, W)
    assert np.abs(theirs[:, [0, len(ids) - 1]]).max() == 0.0    # SOT / EOT keep their ids: no attribution
    expected = theirs.sum(-1)[:, content]
    assert ours.shape == expected.shape == (2, len(content))
    np.testing.assert_allclose(ours, expected, atol=1e-5 * np.abs(expected).max())
