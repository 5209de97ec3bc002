"""SigLIP's tokenizer: `siglip_tokenizer_json` (a SentencePiece `spiece.model` -> tokenizer.json, read by
`TextTokenizer`) against transformers' `SiglipTokenizer` (the slow, sentencepiece-backed one: code we did
not write, which applies SigLIP's canonicalisation in Python) on awkward strings: case, punctuation, accents,
combining marks, emoji, CJK, control and zero-width characters, runs of spaces, texts truncated to the
context. The SentencePiece model is trained here, offline, on a few hundred generated lines (T5's layout,
as SigLIP's: <pad> 0, </s> 1 = SigLIP's pad and end token, <unk> 2; nothing downloaded).
"""
from __future__ import annotations

import io
import random

import numpy as np
import pytest

spm = pytest.importorskip("sentencepiece")
pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from cocoa_jax.models.text_tokenizers import TextTokenizer, siglip_tokenizer_json  # noqa: E402

WORDS = ("the a dog cat photo of runs in park red ball playing city café naïve über façade tokyo 東京 日本語 hello "
         "world two dogs on grass image picture").split()
AWKWARD = ["The dog runs!", "Café naïve ÜBER façade", "東京日本語 😀 ok", "a\u0301b\tc\n\u200b", "", "   ",
           "HELLO, World... it's 2026-12-07?", "x \u2581 y", "unbelievable dogs playing in the park " * 6, "😀😀😀",
           "über-cafe", "\ufb01ne \u00bd \uff34\uff4f\uff4b\uff59\uff4f", "  two   dogs  ", "A PHOTO OF A DOG."]
LENGTH = 16


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(300)]
    lines += ["A Photo Of Two Dogs!", "Hello, World... it's 2026-12-07?", "😀 emoji 😀"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=120,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False, num_threads=1,
                                   minloglevel=2)
    path = tmp_path_factory.mktemp("siglip_spm") / "spiece.model"
    path.write_bytes(model.getvalue())
    reference = transformers.SiglipTokenizer(str(path), model_max_length=LENGTH)
    ours = TextTokenizer(siglip_tokenizer_json(str(path)), context_length=LENGTH, pad_token="</s>")
    return ours, reference


def test_ids_tokens_and_padding_equal_siglip_tokenizer(pair):
    ours, reference = pair
    assert ours.pad_id == reference.pad_token_id == 1 and ours.special_ids == (1,)  # </s>: end and padding
    batch = ours.batch(AWKWARD)
    padded = reference(AWKWARD, truncation=True, max_length=LENGTH, padding="max_length")["input_ids"]
    np.testing.assert_array_equal(batch.ids, np.asarray(padded))          # SigLIP pads to the full context
    for row, text in enumerate(AWKWARD):
        ids = reference(text, truncation=True, max_length=LENGTH)["input_ids"]
        assert ours.encode(text) == ids, (text, reference.convert_ids_to_tokens(ids), ours.tokens(text))
        pieces = [ours.id_to_token(i) for i in ids]
        assert pieces == reference.convert_ids_to_tokens(ids)
        assert list(batch.special[row, :len(ids)]) == [i == 1 for i in ids]
    long = AWKWARD.index("unbelievable dogs playing in the park " * 6)
    assert batch.truncated[long] and batch.ids[long, -1] == 1            # cut, </s> kept at the end
    assert ours.tokens("HELLO, World!")[:2] == ["\u2581hello", "\u2581world"]   # lower case, punctuation gone


def test_an_inline_special_token_is_the_one_known_difference(pair):
    """Text after "</s>" written inside a text: SiglipTokenizer gives it no word mark, we do (docs/text.md)."""
    ours, reference = pair
    ids = reference("a</s>b", truncation=True, max_length=LENGTH)["input_ids"]
    assert reference.convert_ids_to_tokens(ids) == ["\u2581a", "</s>", "b", "</s>"]
    assert ours.tokens("a</s>b") == ["\u2581a", "</s>", "\u2581", "b", "</s>"]


def test_a_file_that_is_not_a_sentencepiece_model_is_refused(tmp_path):
    path = tmp_path / "spiece.model"
    path.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a SentencePiece"):
        siglip_tokenizer_json(str(path))


@pytest.mark.slow
def test_convert_writes_the_tokenizer_of_a_checkpoint_with_only_spiece_model(pair, tmp_path):
    """`cocoa-jax convert siglip DIR` on a transformers SiglipModel directory holding spiece.model and no
    tokenizer.json (as google's): the converted model's encode_text on raw strings equals transformers'
    SiglipModel text features on SiglipTokenizer's ids (random weights)."""
    pytest.importorskip("torch")
    import os
    import shutil

    import torch

    from cocoa_jax import models
    from cocoa_jax.cli import main

    ours, reference = pair
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=ours.vocab_size, max_position_embeddings=LENGTH, projection_size=16, pad_token_id=1)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                  patch_size=8)
    torch.manual_seed(0)
    hf = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(str(tmp_path / "hf"))
    shutil.copy(reference.vocab_file, tmp_path / "hf" / "spiece.model")
    assert main(["convert", "siglip", str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    model = models.load("siglip", str(tmp_path / "out"))
    texts = ["The dog runs!", "Café naïve ÜBER façade", "東京日本語 😀 ok", "unbelievable dogs playing in the park " * 6]
    ids = reference(texts, truncation=True, max_length=LENGTH, padding="max_length")["input_ids"]
    with torch.no_grad():
        expected = hf.text_model(input_ids=torch.as_tensor(ids)).pooler_output.double().numpy()
    np.testing.assert_allclose(np.asarray(model.encode_text(texts), np.float64), expected, rtol=1e-5, atol=1e-6)
