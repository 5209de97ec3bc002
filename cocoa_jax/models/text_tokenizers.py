"""Tokenizers of checkpoints' `tokenizer.json` (WordPiece, SentencePiece/Unigram, BPE), through
Hugging Face's `tokenizers` package (the `text` extra: pip install 'cocoa-jax[text]').

`TextTokenizer` reads one tokenizer.json and gives what the encoders take: ids padded to a fixed
length with the pad id (one compiled program for every batch), the attention mask, the token
strings and which tokens are special ([CLS], [SEP], <s>, </s>, padding). Inputs longer than
`context_length` are truncated as transformers' tokenizers do with `truncation=True,
max_length=context_length`: the text is cut, the special tokens are kept. The truncation and
padding settings stored inside tokenizer.json are ignored (transformers overrides them too).

    tok = TextTokenizer.from_file("model_dir/tokenizer.json", context_length=256, pad_token="[PAD]")
    batch = tok.batch(["a photo of a dog", "東京"])   # ids, mask, special: (N, 256); tokens: lists
    ids = tok(["a photo of a dog"])                  # (N, 256) int32, as ClipTokenizer's __call__
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

TOKENIZER_FILE = "tokenizer.json"  # its name in a checkpoint and in a converted model's directory


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError("reading a tokenizer.json needs the `tokenizers` package: "
                          "pip install 'cocoa-jax[text]' (or pip install tokenizers)") from None
    return tokenizers


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """Tokenized texts, padded to one length L.

    ids: (N, L) int32, padded with the pad id. mask: (N, L) int32, 1 for a real token (special
    tokens included), 0 for padding. special: (N, L) bool, True for special tokens and padding.
    tokens: per text, its token strings (special tokens included, padding not).
    truncated: per text, whether it was cut to fit.
    """

    ids: np.ndarray
    mask: np.ndarray
    special: np.ndarray
    tokens: Tuple[Tuple[str, ...], ...]
    truncated: Tuple[bool, ...]


class TextTokenizer:
    """One tokenizer.json, with a fixed context length and pad token (see the module docstring).

    context_length: the longest encoding in tokens, special tokens included.
    pad_token: the padding token's string (must be in the vocabulary).
    lowercase: lower-case texts before tokenizing (sentence-transformers' do_lower_case; a
      tokenizer that lower-cases does it in its own normaliser regardless).
    """

    def __init__(self, tokenizer_json: str, *, context_length: int, pad_token: str, lowercase: bool = False):
        tokenizers = _require_tokenizers()
        if not isinstance(context_length, (int, np.integer)) or context_length < 2:
            raise ValueError(f"context_length must be an integer >= 2, got {context_length!r}")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as err:  # the Rust side raises a plain Exception with its parse error
            raise ValueError(f"not a valid tokenizer.json ({type(err).__name__}: "
                             f"{(str(err).splitlines() or [''])[0][:160]})") from None
        self.pad_id = self._tokenizer.token_to_id(pad_token)
        if self.pad_id is None:
            raise ValueError(f"pad_token {pad_token!r} is not in the tokenizer's vocabulary")
        self.pad_token = pad_token
        self.context_length = int(context_length)
        self.lowercase = bool(lowercase)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.context_length)

    @classmethod
    def from_file(cls, path: str, **kwargs) -> "TextTokenizer":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            return cls(f.read(), **kwargs)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> Optional[int]:
        """The id of a token string, or None when the vocabulary lacks it."""
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary string of an id (sub-word marks kept: "##s", "\u2581the", "\u0120the")."""
        token = self._tokenizer.id_to_token(int(token_id))
        if token is None:
            raise ValueError(f"token id {token_id} is not in the vocabulary (size {self.vocab_size})")
        return token

    @property
    def special_ids(self) -> Tuple[int, ...]:
        """The ids the tokenizer adds around every text ([CLS]/[SEP], <s>/</s>: what it gives for the
        empty string) and the pad id: never content. [UNK] and [MASK] are not among them."""
        return tuple(sorted(set(self._encode_all([""])[0].ids) | {self.pad_id}))

    def _encode_all(self, texts: Sequence[str]):
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        texts = [t.lower() if self.lowercase else t for t in texts]
        return self._tokenizer.encode_batch(texts, add_special_tokens=True)

    def encode(self, text: str) -> List[int]:
        """The ids of one text, special tokens included, truncated to context_length, unpadded."""
        return list(self._encode_all([text])[0].ids)

    def tokens(self, text: str) -> List[str]:
        """The token strings of one text, as `encode` (special tokens included)."""
        return list(self._encode_all([text])[0].tokens)

    def batch(self, texts: Union[str, Sequence[str]], length: Optional[int] = None) -> TokenBatch:
        """Tokenize `texts`, padded to `length` (default context_length)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        length = self.context_length if length is None else int(length)
        if not 1 <= length <= self.context_length:
            raise ValueError(f"length must be in [1, {self.context_length}] (the context length), got {length}")
        encodings = self._encode_all(texts)
        n = len(texts)
        ids = np.full((n, length), self.pad_id, np.int32)
        mask = np.zeros((n, length), np.int32)
        special = np.ones((n, length), bool)
        tokens, truncated = [], []
        for row, enc in enumerate(encodings):
            if len(enc.ids) > length:
                raise ValueError(f"text {row} has {len(enc.ids)} tokens, more than length={length}; "
                                 f"pass a larger length (at most {self.context_length})")
            k = len(enc.ids)
            ids[row, :k] = enc.ids
            mask[row, :k] = 1
            special[row, :k] = np.asarray(enc.special_tokens_mask, bool)
            tokens.append(tuple(enc.tokens))
            truncated.append(bool(enc.overflowing))
        return TokenBatch(ids, mask, special, tuple(tokens), tuple(truncated))

    def __call__(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None) -> np.ndarray:
        """(N, context_length) int32 ids padded with the pad id (the shape ClipTokenizer gives)."""
        return self.batch(texts, context_length).ids

    def decode(self, ids) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


# SigLIP's text canonicalisation before SentencePiece (big_vision's prompt engineering, as transformers'
# SiglipTokenizer applies it): lower case, ASCII punctuation removed, runs of white space made one
# space, the ends stripped. A literal "\u2581" counts as a space.
_ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def siglip_tokenizer_json(spiece_model) -> str:
    """A tokenizer.json equal to transformers' `SiglipTokenizer` over a SentencePiece model.

    spiece_model: the `spiece.model` file (path or bytes) of a SigLIP checkpoint, which ships no
    tokenizer.json. Read with `sentencepiece`'s model description (the `text` extra): the Unigram
    pieces and scores, SentencePiece's own normaliser (its precompiled NFKC map), then SigLIP's
    canonicalisation in front of it; word pieces start with "\u2581"; "</s>" ends every text; the
    SentencePiece control pieces (<pad>, </s>, <unk>) are special tokens. Tested against
    `SiglipTokenizer` on accents, emoji, CJK and truncated texts (tests/models/test_siglip_tokenizer.py).
    """
    tokenizers = _require_tokenizers()
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ImportError("reading a SentencePiece model needs the `sentencepiece` package: "
                          "pip install 'cocoa-jax[text]' (or pip install sentencepiece)") from None
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

    data = spiece_model if isinstance(spiece_model, (bytes, bytearray)) else open(spiece_model, "rb").read()
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(bytes(data))
    except Exception as err:  # protobuf's DecodeError
        raise ValueError(f"not a SentencePiece model ({type(err).__name__}: {err})") from None
    if not proto.pieces or proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        raise ValueError("not a SentencePiece Unigram model (SigLIP's tokenizer is one)")
    spec = proto.trainer_spec
    pieces = [(p.piece, p.score) for p in proto.pieces]
    tok = tokenizers.Tokenizer(models.Unigram(pieces, int(spec.unk_id), byte_fallback=bool(spec.byte_fallback)))
    steps = [normalizers.Replace("\u2581", " "), normalizers.Lowercase(),
             normalizers.Replace(Regex("[" + "".join("\\" + c for c in _ASCII_PUNCTUATION) + "]"), ""),
             normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]  # SentencePiece's remove_extra_whitespaces
    tok.normalizer = normalizers.Sequence(steps)
    # Every text segment starts a word. One known difference: text after a special token written inline
    # ("a</s>b") also starts one here ("\u2581b"), where SiglipTokenizer prefixes the whole text only
    # ("b"); "first" would fix that but lose the prefix of texts with leading spaces, far more common.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    eos = proto.pieces[int(spec.eos_id)].piece
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, int(spec.eos_id))])
    control = [p.piece for p in proto.pieces if p.type in (p.CONTROL, p.UNKNOWN)]
    tok.add_special_tokens([AddedToken(piece, special=True, normalized=False, lstrip=True, rstrip=True)
                            for piece in control])
    return tok.to_str()


def read_json(path: str) -> dict:
    """A JSON object from `path`; ValueError naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path!r} is not valid JSON ({type(err).__name__})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path!r} must hold a JSON object, got {type(value).__name__}")
    return value
