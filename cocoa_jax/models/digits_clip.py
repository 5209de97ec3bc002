"""A small image-text dual encoder on the bundled digits (the offline stand-in for CLIP).

Shipped inside the package (`cocoa_jax/weights/digits_clip/`, trained by
`cocoa-jax train-digits-clip`) so that the paper's cross-modal localisation (Section 4.3) runs
without downloads. Both towers map into one `EMBED_DIM`-d space, trained with CLIP's symmetric
InfoNCE loss on (digit image, caption) pairs.

Image tower: `small_resnet.SmallResNet` (3x3 stem + 2x2 average pool, BasicBlock stages of
`IMAGE_WIDTHS` channels, global average pool) + a linear projection. Global average pooling
makes it size-agnostic: trained on 32x32 digits, it also encodes the 64x64 2x2 digit grids of
`cocoa_jax.usecases.localize` (no resizing, so every tile keeps the resolution it was trained at).
Input (N, H, W, 1) in [0, 1] -> (N, EMBED_DIM).

Text tower: a word-level vocabulary (`VOCABULARY`, id 0 = padding), learned token and position
embeddings, `TEXT_LAYERS` pre-LayerNorm transformer blocks (bidirectional, padding masked),
mean pooling over the real tokens, a linear projection. Tokens (N, CONTEXT_LENGTH) int32 ->
(N, EMBED_DIM). The captions are short ("a handwritten seven", "a photo of the digit 7"), so a
tiny fixed vocabulary replaces CLIP's BPE (whose vocabulary file may be absent); words outside
it are refused with a ValueError naming them.

`load_digits_clip()` returns a `DigitsClipModel` with `params`, the pure
`encode_fn(params, images)` and `encode_text_fn(params, tokens)`, and the conveniences
`encode(images)`, `encode_text(texts)` and `tokenize(texts)`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.models.small_resnet import SmallResNet

INPUT_SHAPE = (32, 32, 1)          # native training size; any H, W works (global average pool)
EMBED_DIM = 64
IMAGE_WIDTHS = (16, 32, 64)
IMAGE_STEM_WIDTH = 16
TEXT_WIDTH = 64
TEXT_LAYERS = 2
TEXT_HEADS = 4
CONTEXT_LENGTH = 8
INIT_TEMPERATURE = 0.07            # CLIP's initial temperature (logit scale log(1/0.07))
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clips the logit scale at 100

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_NUMERALS = tuple(str(d) for d in range(10))
# Training captions: {word} is the digit's name, {numeral} its numeral. The third is the
# paper's Section 4.3 query form, so localisation queries are in-distribution.
TEMPLATES = (
    "a handwritten {word}",
    "a photo of the digit {numeral}",
    "this is a photo of a {word}",
    "the number {word}",
    "a scan of a handwritten {numeral}",
)
QUERY_TEMPLATE = "This is a photo of a {}"  # paper Section 4.3

_FIXED_WORDS = ("a", "handwritten", "photo", "of", "the", "digit", "this", "is", "number", "scan")
# id 0 is padding; ids are positions in this tuple + 1.
VOCABULARY = _FIXED_WORDS + DIGIT_WORDS + DIGIT_NUMERALS
_WORD_IDS = {w: i + 1 for i, w in enumerate(VOCABULARY)}
VOCAB_SIZE = len(VOCABULARY) + 1

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "weights", "digits_clip")


# ---------------------------------------------------------------------------------------------
# Captions and tokens

def caption(template: str, digit: int) -> str:
    """The caption `template` for digit 0..9 (fills {word} and {numeral})."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"`digit` must be in 0..9, got {digit!r}")
    return template.format(word=DIGIT_WORDS[int(digit)], numeral=DIGIT_NUMERALS[int(digit)])


def words(text: str) -> list[str]:
    """Lower-cased words and single numerals of `text` (punctuation dropped)."""
    return re.findall(r"[a-z]+|\d", str(text).lower())


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    """Captions -> (N, context_length) int32 word ids, zero-padded.

    Raises ValueError naming any word outside `VOCABULARY`, an empty caption, or one longer
    than `context_length` words.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` is empty; give at least one caption")
    out = np.zeros((len(texts), int(context_length)), np.int32)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"`texts[{i}]` must be a str, got {type(text).__name__}")
        ws = words(text)
        if not ws:
            raise ValueError(f"`texts[{i}]` ({text!r}) has no words")
        unknown = [w for w in ws if w not in _WORD_IDS]
        if unknown:
            raise ValueError(f"`texts[{i}]` ({text!r}) has word(s) outside the digits vocabulary: "
                             f"{', '.join(map(repr, unknown))}; known words: {' '.join(VOCABULARY)}")
        if len(ws) > context_length:
            raise ValueError(f"`texts[{i}]` ({text!r}) has {len(ws)} words, more than the context "
                             f"length {context_length}")
        out[i, :len(ws)] = [_WORD_IDS[w] for w in ws]
    return out


def caption_table(templates: Sequence[str] = TEMPLATES) -> np.ndarray:
    """Tokens of every (digit, template) caption: (10, len(templates), CONTEXT_LENGTH) int32."""
    return np.stack([tokenize([caption(t, d) for t in templates]) for d in range(10)])


# ---------------------------------------------------------------------------------------------
# Towers

class TextBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)); (N, L, W) -> (N, L, W)."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        y = nn.LayerNorm(epsilon=1e-5)(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width,
                                                deterministic=True)(y, y, mask=mask)
        y = nn.LayerNorm(epsilon=1e-5)(x)
        y = nn.Dense(4 * self.width)(y)
        return x + nn.Dense(self.width)(nn.gelu(y))


class TextTower(nn.Module):
    """Tokens (N, L) int32, 0 = padding -> (N, embed_dim) (mean of the real tokens, projected)."""

    embed_dim: int = EMBED_DIM
    vocab_size: int = VOCAB_SIZE
    context_length: int = CONTEXT_LENGTH
    width: int = TEXT_WIDTH
    layers: int = TEXT_LAYERS
    heads: int = TEXT_HEADS

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        valid = tokens != 0                                             # (N, L)
        x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02))(tokens)
        pos = self.param("position_embedding", nn.initializers.normal(0.01),
                         (self.context_length, self.width))
        x = x + pos[: tokens.shape[1]]
        mask = nn.make_attention_mask(valid, valid)                     # (N, 1, L, L)
        for _ in range(self.layers):
            x = TextBlock(self.width, self.heads)(x, mask)
        x = nn.LayerNorm(epsilon=1e-5)(x)
        weights = valid.astype(x.dtype)[..., None]
        pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return nn.Dense(self.embed_dim, use_bias=False)(pooled)


class DigitsCLIP(nn.Module):
    """Image tower (SmallResNet + linear projection), text tower, learnable logit scale."""

    embed_dim: int = EMBED_DIM
    image_widths: Sequence[int] = IMAGE_WIDTHS
    image_stem_width: int = IMAGE_STEM_WIDTH
    text_width: int = TEXT_WIDTH
    text_layers: int = TEXT_LAYERS
    text_heads: int = TEXT_HEADS

    def setup(self):
        self.image_tower = SmallResNet(widths=tuple(self.image_widths), stem_width=self.image_stem_width)
        self.image_projection = nn.Dense(self.embed_dim, use_bias=False)
        self.text_tower = TextTower(embed_dim=self.embed_dim, width=self.text_width,
                                    layers=self.text_layers, heads=self.text_heads)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / INIT_TEMPERATURE)), ())

    def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
        """(N, H, W, 1) in [0, 1] -> (N, embed_dim); `train` uses batch BatchNorm statistics."""
        return self.image_projection(self.image_tower(images, train))

    def encode_text(self, tokens: jax.Array) -> jax.Array:
        """(N, L) int32 -> (N, embed_dim)."""
        return self.text_tower(tokens)

    def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False):
        """(image embeddings (N, D), text embeddings (M, D), logit scale ())."""
        return self.encode_image(images, train), self.encode_text(tokens), self.logit_scale

    def config(self) -> dict:
        return {"embed_dim": int(self.embed_dim), "image_widths": list(self.image_widths),
                "image_stem_width": int(self.image_stem_width), "text_width": int(self.text_width),
                "text_layers": int(self.text_layers), "text_heads": int(self.text_heads),
                "context_length": CONTEXT_LENGTH, "vocabulary": list(VOCABULARY)}


def init_variables(module: DigitsCLIP, key: jax.Array):
    """Fresh `{"params", "batch_stats"}` of `module`."""
    images = jnp.zeros((1, *INPUT_SHAPE), jnp.float32)
    tokens = jnp.zeros((1, CONTEXT_LENGTH), jnp.int32).at[:, 0].set(1)
    return module.init(key, images, tokens, train=False)


def image_encode_fn(module: DigitsCLIP) -> Callable[[Any, jax.Array], jax.Array]:
    """Pure eval-mode `encode_fn(variables, images (N, H, W, 1)) -> (N, D)`."""
    return lambda variables, images: module.apply(variables, images, False, method="encode_image")


def text_encode_fn(module: DigitsCLIP) -> Callable[[Any, jax.Array], jax.Array]:
    """Pure `encode_text_fn(variables, tokens (N, L) int32) -> (N, D)`."""
    return lambda variables, tokens: module.apply(variables, tokens, method="encode_text")


# ---------------------------------------------------------------------------------------------
# The loaded model

@dataclasses.dataclass(frozen=True)
class DigitsClipModel:
    """The dual encoder with its variables; attribute names follow `cocoa_jax.models.LoadedModel`.

    encode_fn(params, images (N, H, W, 1)) -> (N, D) and encode_text_fn(params, tokens) -> (N, D)
    are pure (jit them with params as an argument); `encode`, `encode_text` and `tokenize`
    are jit-compiled conveniences bound to `params`.
    """

    module: DigitsCLIP
    params: Any
    encode_fn: Callable
    encode_text_fn: Callable
    name: str = "digits_clip"
    input_shape: tuple = INPUT_SHAPE
    preprocess: Any = None
    input_range: tuple = ((0.0,), (1.0,))  # raw [0, 1] grey levels, as trained

    @property
    def representation_dim(self) -> int:
        return int(self.module.embed_dim)

    @property
    def config(self) -> dict:
        return self.module.config()

    def tokenize(self, texts) -> np.ndarray:
        return tokenize(texts)

    def encode(self, images) -> jax.Array:
        """(N, H, W, 1) float in [0, 1] -> (N, D); shape, dtype and values checked (`check_images`)."""
        from cocoa_jax.models import check_images

        check_images(self, images, "images")
        return jax.jit(self.encode_fn)(self.params, jnp.asarray(images, jnp.float32))

    def encode_text(self, texts_or_tokens) -> jax.Array:
        """Captions (str or list of str) or (N, L) int token ids -> (N, D)."""
        if isinstance(texts_or_tokens, str) or (isinstance(texts_or_tokens, (list, tuple))
                                                and texts_or_tokens and isinstance(texts_or_tokens[0], str)):
            tokens = tokenize(texts_or_tokens)
        else:
            tokens = np.asarray(texts_or_tokens)
            if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
                raise ValueError(f"tokens must be an (N, L) integer array, got {tokens.dtype} {tokens.shape}")
        return jax.jit(self.encode_text_fn)(self.params, jnp.asarray(tokens, jnp.int32))


def _checked_image_encode(raw: Callable) -> Callable:
    """`raw` refusing non-float images, and (eager calls only) non-finite or outside [0, 1] ones."""
    def encode_fn(variables, images):
        from cocoa_jax.models import check_image_values

        check_image_values("images", images, DigitsClipModel.input_range, DigitsClipModel.name)
        return raw(variables, images)

    return encode_fn


def make_model(module: DigitsCLIP, variables) -> DigitsClipModel:
    """Wrap a module and its `{"params", "batch_stats"}` as a `DigitsClipModel`."""
    return DigitsClipModel(module, variables, _checked_image_encode(image_encode_fn(module)),
                           text_encode_fn(module))


def load_digits_clip(directory: str | None = None) -> DigitsClipModel:
    """Restore the shipped dual encoder (or one written by `cocoa-jax train-digits-clip --out DIR`).

    The architecture is this module's defaults (the checkpoint's shapes must match them).
    """
    from cocoa_jax.models import restore_host_local

    directory = os.path.abspath(directory or WEIGHTS_DIR)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no digits dual-encoder checkpoint at {directory!r}; run "
                                f"`cocoa-jax train-digits-clip --out {directory}` to create it")
    module = DigitsCLIP()
    abstract = jax.eval_shape(lambda: init_variables(module, jax.random.key(0)))
    abstract = {"params": abstract["params"], "batch_stats": abstract["batch_stats"]}
    # Host-local (no collective restore): the same in one process and under jax.distributed.
    variables = jax.tree_util.tree_map(jax.device_put, restore_host_local(directory, abstract))
    return make_model(module, variables)
