"""`loaded_text_encoder`: the text towers of loaded `sentence_bert` and `siglip` models (token embeddings +
tokenizer.json) as a `TextEncoder`, so `explain_texts` explains them. Tiny random-weight models built here,
each with a tokenizer.json written with Hugging Face `tokenizers` (no torch, nothing downloaded).

The reference is the model's own `encode_text` on raw strings (tested against transformers in
tests/models/test_bert.py / test_siglip.py): the encoder's two halves must give it, BERT with its padding
trimmed and hidden, SigLIP padded to the full context and seeing it (as trained). Also: special tokens are
never content, IG is complete, and dropping a token through the mask is not replacing it by padding.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tokenizers")

from cocoa_jax import models  # noqa: E402
from cocoa_jax.models.text_tokenizers import TOKENIZER_FILE  # noqa: E402
from cocoa_jax.text import explain_texts, text_encoder  # noqa: E402

WORDS = ["the", "a", "dog", "cat", "photo", "of", "runs", "park", "red", "ball", "play", "##s", "##ing"]
TEXTS = ["a photo of the dog", "the red ball", "dogs playing in the park"]


def _tokenizer_json(kind: str) -> str:
    from tokenizers import Tokenizer, models as tm, normalizers, pre_tokenizers, processors

    if kind == "wordpiece":
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz")
        tok = Tokenizer(tm.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                  ("[SEP]", 3)])
        return tok.to_str()
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -2.0) for w in WORDS[:11]] + [
        (c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [("\u2581", -3.0)]
    tok = Tokenizer(tm.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok.to_str()


def _random(arch: str, tmp_path):
    kind = "wordpiece" if arch == "sentence_bert" else "unigram"
    (tmp_path / TOKENIZER_FILE).write_text(_tokenizer_json(kind), encoding="utf-8")
    spec = models.ARCHITECTURES[arch]
    if arch == "sentence_bert":
        config = dict(spec.default_config, vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32, context_length=16, mask_token_id=4)
        shape = ()
    else:  # SigLIP pads with </s> (id 1), as google's checkpoints do
        config = dict(spec.default_config, image_size=16, patch_size=8, vision_width=16, vision_layers=1,
                      vision_heads=2, vision_mlp=32, vocab_size=48, context_length=12, text_width=16, text_layers=2,
                      text_heads=2, text_mlp=32, projection_size=16, pad_token_id=1, pad_token="</s>")
        shape = (16, 16, 3)
    module = spec.build(config)
    return module, jax.jit(lambda: spec.init(module, config, shape))(), config  # one compile, not op by op


def _loaded(arch: str, tmp_path):
    module, variables, config = _random(arch, tmp_path)
    return models.make_loaded(arch, config, variables, directory=str(tmp_path))


_BUILT: dict = {}


def _built(arch, tmp_path_factory):
    if arch not in _BUILT:
        _BUILT[arch] = _loaded(arch, tmp_path_factory.mktemp(arch))
    return _BUILT[arch]


@pytest.fixture(scope="module", params=["sentence_bert", "siglip"])
def loaded(request, tmp_path_factory):
    return _built(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    """explain_texts runs on SigLIP only (its visible padding is the new path; BERT's hidden padding is
    the digits and CLIP towers' path, which tests/text/test_text_attribution.py covers)."""
    return _built("siglip", tmp_path_factory)


def test_the_two_halves_give_the_models_own_text_representation(loaded):
    encoder = text_encoder(loaded)
    np.testing.assert_allclose(encoder.encode(TEXTS), np.asarray(loaded.encode_text(TEXTS)), rtol=1e-5, atol=1e-6)
    ids = encoder.tokenize(TEXTS)
    if loaded.name == "siglip":        # full context, padding visible (the last position is pooled)
        assert encoder.attend_padding and ids.shape[1] == loaded.config["context_length"]
        assert bool(np.all(encoder.keep_of(ids)))
    else:                              # trimmed to the longest text, padding hidden
        assert not encoder.attend_padding and ids.shape[1] < loaded.config["context_length"]
        assert np.array_equal(np.asarray(encoder.keep_of(ids)), ids != encoder.pad_id)
        assert encoder.baseline_id == 4                      # [MASK]


@pytest.mark.slow
def test_explain_texts_attributes_content_tokens_only_and_ig_is_complete(siglip):
    result = explain_texts(siglip, TEXTS[:2], corpus=["the dog runs"], foil=["a red ball"],
                           targets=("cocoa", "label_free"), methods=("integrated_gradients",),
                           options={"integrated_gradients": {"n_steps": 16}})
    specials = {"[CLS]", "[SEP]", "[PAD]", "</s>", "<pad>"}
    assert result.tokens[0] == ["a", "photo", "of", "the", "dog"], result.tokens
    assert not specials & {t for sentence in result.tokens for t in sentence}
    assert result.scores_by_method["integrated_gradients"][0].shape == (2, 5)
    change = np.abs(result.scores - result.baseline_scores)
    assert change.min() > 1e-3  # the target moves: completeness below says something
    assert np.abs(result.completeness_gaps["integrated_gradients"]).max() < 1e-4 * change.max()


def test_a_dropped_token_is_not_a_padding_token(loaded):
    """Drop hides the token as an attention key; for SigLIP (padding visible) that differs from writing the
    pad token in its place, and for BERT it equals removing it and shifting nothing (positions kept)."""
    encoder = text_encoder(loaded)
    ids = jnp.asarray(encoder.tokenize(TEXTS[:1]))
    emb = encoder.embed_fn(encoder.params, ids)
    keep = encoder.keep_of(ids)
    content = np.flatnonzero(~np.isin(np.asarray(ids[0]), encoder.special_ids + (encoder.pad_id,)))
    dropped = encoder.encode_embeddings_fn(encoder.params, emb, keep.at[0, content[1]].set(False))
    padded_ids = ids.at[0, content[1]].set(encoder.pad_id)
    as_padding = encoder.encode_embeddings_fn(encoder.params, encoder.embed_fn(encoder.params, padded_ids),
                                              encoder.keep_of(padded_ids))
    full = encoder.encode_ids(encoder.params, ids)
    assert not np.allclose(dropped, full, atol=1e-6)
    same = np.allclose(dropped, as_padding, atol=1e-5)
    assert same == (not encoder.attend_padding)


def test_a_model_without_token_embeddings_is_refused():
    fake = dataclasses.make_dataclass("Fake", [("name", str)])("resnet18")
    with pytest.raises(ValueError, match="no text tower this package can explain: 'resnet18'"):
        text_encoder(fake)
