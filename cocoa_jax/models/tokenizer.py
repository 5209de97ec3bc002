"""CLIP's byte-level BPE tokenizer (context 77, SOT/EOT), without torch.

The merges file `bpe_simple_vocab_16e6.txt.gz` is not shipped with cocoa-jax and cannot be
fetched at run time. It is found, in order, at: the `merges_path` argument, the
`COCOA_JAX_CLIP_BPE` environment variable, or inside an installed `clip` (clip-anytorch /
openai CLIP) or `open_clip` package. `pip install --no-deps clip-anytorch` is enough: only
the data file is read, the package is never imported.

Text normalisation follows CLIP: ftfy `fix_text`, HTML unescaping (twice), whitespace
collapsed to single spaces, lower-casing. That needs the `ftfy` and `regex` packages (the
pre-tokenising pattern uses Unicode classes `\\p{L}`/`\\p{N}` that `re` lacks).
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
ENV_VAR = "COCOA_JAX_CLIP_BPE"
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
CONTEXT_LENGTH = 77
# CLIP uses the first 48894 merges of the file (vocab 49408 = 2*256 bytes + merges + 2 specials).
NUM_MERGES = 49152 - 256 - 2
WORD_PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
                r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")


def find_merges_file(merges_path: Optional[str] = None) -> str:
    """Path of the BPE merges file (see module docstring for the search order)."""
    candidates = []
    if merges_path is not None:
        if not os.path.isfile(merges_path):
            raise FileNotFoundError(f"merges_path {merges_path!r} is not a file")
        return merges_path
    if os.environ.get(ENV_VAR):
        candidates.append(os.environ[ENV_VAR])
    for package in ("clip", "open_clip"):
        # find_spec on a top-level name locates the package without executing its __init__.
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            candidates += [os.path.join(d, BPE_FILENAME) for d in spec.submodule_search_locations]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"CLIP's BPE merges file {BPE_FILENAME} was not found. Pass merges_path=..., set "
        f"{ENV_VAR}, or `pip install --no-deps clip-anytorch` (which ships it).")


def _byte_alphabet() -> dict:
    """Bijection byte -> printable unicode char, as an insertion-ordered dict.

    Printable Latin-1 bytes map to themselves and come first; the remaining bytes map to code
    points from 256 upward, in byte order, and come after. This order is the first 256 ids of
    the vocabulary."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table


def _require(module_name: str):
    try:
        return __import__(module_name)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"the CLIP tokenizer needs the `{module_name}` package: "
                          f"pip install ftfy regex") from err


class ClipTokenizer:
    """Byte-level BPE tokenizer identical to CLIP's.

    `encode(text) -> list[int]` (no SOT/EOT); `decode(ids) -> str`;
    `__call__(texts, context_length=77, truncate=False) -> int32 (N, context_length)` with
    SOT ... EOT and zero padding, as `clip.tokenize`.
    """

    def __init__(self, merges_path: Optional[str] = None):
        self._ftfy = _require("ftfy")
        self._regex = _require("regex")
        path = find_merges_file(merges_path)
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]  # line 0 is a header
        self.byte_to_char = _byte_alphabet()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        symbols = list(self.byte_to_char.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self.token_to_id = {t: i for i, t in enumerate(vocab)}
        self.id_to_token = {i: t for t, i in self.token_to_id.items()}
        self.merge_rank = {m: i for i, m in enumerate(merges)}
        self.sot_id = self.token_to_id[START_OF_TEXT]
        self.eot_id = self.token_to_id[END_OF_TEXT]
        self._pattern = self._regex.compile(WORD_PATTERN, self._regex.IGNORECASE)
        self._bpe = functools.lru_cache(maxsize=100_000)(self._bpe_uncached)

    @property
    def vocab_size(self) -> int:
        return len(self.token_to_id)

    def normalize(self, text: str) -> str:
        text = self._ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        text = self._regex.sub(r"\s+", " ", text).strip()
        return text.lower()

    def _bpe_uncached(self, word: str) -> tuple:
        """Greedy BPE of one pre-token (already byte-mapped): apply the lowest-ranked merge
        present, repeatedly. The last symbol carries the end-of-word marker."""
        if word in (START_OF_TEXT, END_OF_TEXT):
            return (word,)
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [(self.merge_rank.get(pair, None), i)
                      for i, pair in enumerate(zip(parts[:-1], parts[1:]))]
            ranked = [(r, i) for r, i in ranked if r is not None]
            if not ranked:
                break
            best = min(ranked)[0]
            first, second = _pair_of(parts, ranked, best)
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def encode(self, text: str) -> List[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = []
        for piece in self._pattern.findall(self.normalize(text)):
            mapped = "".join(self.byte_to_char[b] for b in piece.encode("utf-8"))
            ids.extend(self.token_to_id[t] for t in self._bpe(mapped))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        data = bytearray()
        for i in ids:
            token = self.id_to_token[int(i)]
            end_of_word = token.endswith("</w>")
            data.extend(self.char_to_byte[c] for c in (token[:-4] if end_of_word else token))
            if end_of_word:
                data.extend(b" ")
        return data.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: Union[str, Sequence[str]], context_length: int = CONTEXT_LENGTH,
                 truncate: bool = False) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        out = np.zeros((len(texts), context_length), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(f"text {row} ({text[:40]!r}...) has {len(ids)} tokens, more than "
                                     f"context_length={context_length}; pass truncate=True to cut it")
                ids = ids[:context_length]
                ids[-1] = self.eot_id  # a truncated caption still ends in EOT (it is pooled there)
            out[row, :len(ids)] = ids
        return out


def _pair_of(parts: list, ranked: list, best: int) -> tuple:
    """The symbol pair whose merge rank is `best` (first occurrence)."""
    index = next(i for r, i in ranked if r == best)
    return parts[index], parts[index + 1]
