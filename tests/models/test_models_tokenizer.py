"""The CLIP tokenizer vs the reference `SimpleTokenizer` shipped in clip-anytorch.

Needs the BPE merges file from an installed `clip` (clip-anytorch) package plus ftfy/regex;
skipped otherwise (`pip install --no-deps clip-anytorch ftfy regex`).
"""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("ftfy")
pytest.importorskip("regex")

from tests.reference.torch_models import clip_anytorch_file  # noqa: E402
from cocoa_jax.models.tokenizer import ClipTokenizer, find_merges_file  # noqa: E402

CAPTIONS = [
    "a photo of a dog.",
    "A PHOTO OF A CAT!!!",
    "Café naïve façade — déjà vu",
    "北京 東京 서울 Москва",
    "emoji 😀🐶🎉 and symbols ©®™ ±×÷",
    "numbers 12345 3.14159 1,000,000 $9.99 50% 2023-01-01",
    "don't you'll we've I'm they're he'd it's",
    "HTML &amp;amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot;",
    "   lots\t\tof \n\n whitespace\u00a0and\u3000ideographic   ",
    "mojibake: Ã©tÃ© â€œquotesâ€\x9d",
    "punctuation!?... ;:--(())[[]]{{}} @#%^&*_+=|\\/<>~`",
    "<|startoftext|> special <|endoftext|> tokens in text",
    "",
    "x",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]
LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)


def _reference_tokenizer():
    module = clip_anytorch_file("simple_tokenizer")
    if module is None:
        pytest.skip("clip-anytorch not installed: no reference tokenizer / merges file")
    return module.SimpleTokenizer()


@pytest.fixture(scope="module")
def tokenizers():
    return ClipTokenizer(), _reference_tokenizer()


@pytest.mark.parametrize("caption", CAPTIONS + [LONG])
def test_ids_identical_to_reference(tokenizers, caption):
    ours, reference = tokenizers
    assert ours.encode(caption) == reference.encode(caption)
    assert ours.decode(ours.encode(caption)) == reference.decode(reference.encode(caption)).strip()


def test_batch_layout_padding_and_truncation(tokenizers):
    ours, reference = tokenizers
    assert (ours.sot_id, ours.eot_id, ours.vocab_size) == (49406, 49407, 49408)
    batch = ours(CAPTIONS[:3])
    assert batch.dtype == np.int32 and batch.shape == (3, 77)
    for row, caption in zip(batch, CAPTIONS[:3]):
        ids = [49406] + reference.encode(caption) + [49407]  # clip.tokenize's layout
        assert row.tolist() == ids + [0] * (77 - len(ids))
    assert len(reference.encode(LONG)) + 2 > 77
    with pytest.raises(ValueError, match="truncate=True"):
        ours([CAPTIONS[0], LONG])
    truncated = ours([LONG], truncate=True)[0]
    # clip.tokenize(truncate=True): keep the first 77 ids, then force the last one to EOT.
    expected = ([49406] + reference.encode(LONG))[:76] + [49407]
    assert truncated.tolist() == expected
    assert ours("a dog", context_length=8)[0].tolist()[:4] == [49406] + reference.encode("a dog") + [49407]


def test_merges_file_lookup_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="merges_path"):
        find_merges_file(str(tmp_path / "missing.txt.gz"))
    path = find_merges_file()
    monkeypatch.setenv("COCOA_JAX_CLIP_BPE", path)
    assert find_merges_file() == path
    with pytest.raises(TypeError, match="text"):
        ClipTokenizer(path).encode(123)
