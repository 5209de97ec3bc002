"""`TextTokenizer` (a checkpoint's tokenizer.json through Hugging Face `tokenizers`) against
`transformers`' tokenizers on awkward strings: accents, emoji, CJK, control characters, the empty
string, inputs longer than the context (truncated as transformers does with truncation=True).

WordPiece: the tokenizer.json is built here from a vocabulary written in tests/reference/bert_side.py
and compared with transformers' pure-Python BertTokenizerLegacy (vocab.txt; code independent of
`tokenizers`) and with its `tokenizers`-backed BertTokenizer. Byte-level BPE and Unigram
(SentencePiece-style) tokenizers are trained here on a few sentences and compared with what
transformers' AutoTokenizer reads from the saved directory (what sentence-transformers uses):
that checks the special tokens, truncation and padding done here.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from cocoa_jax.models.text_tokenizers import TextTokenizer  # noqa: E402
from tests.reference import bert_side  # noqa: E402

AWKWARD = ["The dog runs!", "Café naïve ÜBER façade", "東京日本語 😀 ok", "a\u0301b\tc\n\u200b", "", "   ",
           "unbelievable dogs playing in the park " * 6, "HELLO, World... it's 2026-12-07?", "😀😀😀", "über-cafe"]
LENGTH = 16


@pytest.fixture(scope="module", params=[(True, None), (False, False)], ids=["uncased", "cased"])
def wordpiece(request, tmp_path_factory):
    lowercase, strip_accents = request.param
    fast = bert_side.wordpiece_tokenizer(lowercase, strip_accents)
    legacy = bert_side.legacy_wordpiece_tokenizer(str(tmp_path_factory.mktemp("vocab")), lowercase, strip_accents)
    ours = TextTokenizer(fast.backend_tokenizer.to_str(), context_length=LENGTH, pad_token="[PAD]")
    return ours, fast, legacy


def test_wordpiece_ids_and_tokens_equal_transformers(wordpiece):
    ours, fast, legacy = wordpiece
    batch = ours.batch(AWKWARD)
    for row, text in enumerate(AWKWARD):
        for reference in (fast, legacy):
            ids = reference(text, truncation=True, max_length=LENGTH)["input_ids"]
            assert ours.encode(text) == ids, (text, type(reference).__name__)
            assert list(batch.ids[row, :len(ids)]) == ids and np.all(batch.ids[row, len(ids):] == 0)
            assert list(batch.tokens[row]) == reference.convert_ids_to_tokens(ids)
        assert batch.mask[row].sum() == len(batch.tokens[row])
        special = [t in ("[CLS]", "[SEP]") for t in batch.tokens[row]]
        assert list(batch.special[row, :len(special)]) == special and batch.special[row, len(special):].all()
    long = AWKWARD.index("unbelievable dogs playing in the park " * 6)
    assert batch.truncated[long] and not any(batch.truncated[:long])
    assert batch.tokens[long][-1] == "[SEP]" and len(batch.tokens[long]) == LENGTH


def test_wordpiece_awkward_strings_tokenize_as_expected(wordpiece):
    ours, _, _ = wordpiece
    assert ours.tokens("東京 😀") == ["[CLS]", "東", "京", "😀", "[SEP]"]
    assert ours.special_ids == tuple(bert_side.WORDPIECE_VOCAB.index(t) for t in ("[PAD]", "[CLS]", "[SEP]"))
    assert ours.id_to_token(bert_side.WORDPIECE_VOCAB.index("##ing")) == "##ing"
    with pytest.raises(ValueError, match="token id 100000 is not in the vocabulary"):
        ours.id_to_token(100000)
    assert ours.tokens("") == ["[CLS]", "[SEP]"]
    uncased = ours.tokens("Café") == ["[CLS]", "cafe", "[SEP]"]
    assert uncased or ours.tokens("Café") == ["[CLS]", "[UNK]", "[SEP]"]  # cased: "C" + "##afé" is no vocabulary path


def _trained(kind, tmp_path):
    """A tiny byte-level BPE (RoBERTa-style) or Unigram (XLM-R-style) tokenizer, trained here,
    saved by transformers (tokenizer.json + tokenizer_config.json), read back by AutoTokenizer.
    vocab_size is small on purpose: the unigram one lacks capitals, so <unk> ids are exercised."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    corpus = ["the dog runs in the park", "a photo of a cat", "東京 is a city", "café au lait 😀",
              "unbelievable things happen"] * 4
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                          unk_token="<unk>")
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[
        ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    wrapped.save_pretrained(str(tmp_path))
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    return (tmp_path / "tokenizer.json").read_text(encoding="utf-8"), auto


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_bpe_and_unigram_equal_transformers(kind, tmp_path):
    tokenizer_json, auto = _trained(kind, tmp_path)
    ours = TextTokenizer(tokenizer_json, context_length=LENGTH, pad_token="<pad>")
    batch = ours.batch(AWKWARD)
    for row, text in enumerate(AWKWARD):
        encoded = auto(text, truncation=True, max_length=LENGTH)
        ids = encoded["input_ids"]
        assert ours.encode(text) == ids, text
        assert list(batch.ids[row, :len(ids)]) == ids and np.all(batch.ids[row, len(ids):] == ours.pad_id)
        # The token strings as transformers reports them (an unknown piece keeps its text, id <unk>).
        assert list(batch.tokens[row]) == encoded.tokens()
    assert ours.pad_id == auto.pad_token_id and ours.token_id("<mask>") == auto.mask_token_id
    assert ours.special_ids == tuple(sorted({auto.bos_token_id, auto.eos_token_id, auto.pad_token_id}))
    assert [ours.id_to_token(i) for i in batch.ids[0]][:3] == auto.convert_ids_to_tokens(batch.ids[0][:3].tolist())


def test_errors_name_the_argument(wordpiece):
    ours, fast, _ = wordpiece
    with pytest.raises(ValueError, match="pad_token '<pad>' is not in the tokenizer's vocabulary"):
        TextTokenizer(fast.backend_tokenizer.to_str(), context_length=8, pad_token="<pad>")
    with pytest.raises(ValueError, match="context_length must be an integer >= 2"):
        TextTokenizer(fast.backend_tokenizer.to_str(), context_length=1, pad_token="[PAD]")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        TextTokenizer("{not json", context_length=8, pad_token="[PAD]")
    with pytest.raises(TypeError, match="item 1 is int"):
        ours.batch(["a", 3])
    with pytest.raises(ValueError, match=r"length must be in \[1, 16\]"):
        ours.batch(["a"], length=17)
    with pytest.raises(ValueError, match="text 0 has 6 tokens, more than length=4"):
        ours.batch(["the dog runs!"], length=4)
    assert ours(["the dog"]).shape == (1, LENGTH) and ours(["the dog"]).dtype == np.int32
