"""Text encoders seen from the token-embedding side: the one interface every token attribution reads.

A `TextEncoder` splits a text tower in two pure functions:

    embed_fn(params, ids (N, T) int32) -> (N, T, E)       the token embeddings (no positions)
    encode_embeddings_fn(params, embeddings (N, T, E), keep (N, T) bool) -> (N, D)

`encode_embeddings_fn(params, embed_fn(params, ids), ids != padding)` is the tower's own
representation of `ids` (tested bit for bit against the tower). Position embeddings, attention,
pooling and projection live in the second function, so an attribution in embedding space moves
the token content only: positions are kept. `keep` is the attention mask: a False token is
dropped (no query attends to it, and pooling skips it), which is how padding is hidden and how
the perturbation methods drop tokens (`strategy="drop"`).

Encoders today: the CLIP text tower of a converted `clip_vit*` model (`clip_text_encoder`,
causal, pooled at EOT; SOT and EOT are special) and the shipped digits dual encoder's text tower
(`digits_text_encoder`, word-level, mean pooling, no special tokens). Another tower (a BERT
sentence encoder) plugs in as one more constructor returning a `TextEncoder`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TextEncoder", "clip_text_encoder", "digits_text_encoder", "loaded_text_encoder", "text_encoder"]


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: a key of compiled-program caches
class TextEncoder:
    """A text tower as token embeddings + attention mask -> representation.

    Attributes:
      name: the model's name ("digits_clip", "clip_vit_b32", ...).
      params: the variables both functions read (pass them as a jit argument).
      embed_fn: (params, ids (N, T) int32) -> (N, T, E) token embeddings (positions not added).
      encode_embeddings_fn: (params, embeddings (N, T, E), keep (N, T) bool) -> (N, D).
      tokenize: list of str -> (N, T) int32 ids, padded with `pad_id` to one length T.
      token_strings: ids (T,) -> the display string of each token.
      pad_id: the padding id (hidden by `keep` unless `attend_padding`).
      special_ids: ids never attributed nor perturbed (CLS/SEP, SOT/EOT, ...).
      baseline_id: the token whose embedding is the default baseline of content tokens
        ([MASK] where the vocabulary has one); None: the zero vector (see docs/text.md).
      embedding_scale: the RMS entry of the token-embedding table: noise of the noisy gradient
        methods is given in this unit (embeddings, unlike pixels, have no fixed range).
      context_length: the longest sequence the tower takes.
      attend_padding: the tower was trained seeing its padding (SigLIP: texts padded to the full
        context, no attention mask, pooled at the last position): padding stays visible (`keep` True)
        and only dropped tokens are hidden. False (default): padding is hidden by `keep`.
    """

    name: str
    params: Any
    embed_fn: Callable[[Any, jax.Array], jax.Array]
    encode_embeddings_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    tokenize: Callable[[Sequence[str]], np.ndarray]
    token_strings: Callable[[np.ndarray], list]
    pad_id: int
    special_ids: tuple
    baseline_id: Optional[int]
    embedding_scale: float
    context_length: int
    attend_padding: bool = False

    def keep_of(self, ids):
        """The attention mask of unperturbed `ids` (..., T) -> (..., T) bool: padding hidden unless
        `attend_padding`."""
        if self.attend_padding:
            return jnp.ones(jnp.shape(ids), bool)
        return jnp.asarray(ids) != self.pad_id

    def encode_ids(self, params, ids: jax.Array) -> jax.Array:
        """(N, T) ids -> (N, D) through the two halves (padding hidden unless `attend_padding`)."""
        return self.encode_embeddings_fn(params, self.embed_fn(params, ids), self.keep_of(ids))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Sentences -> (N, D) float32 representations (jit-compiled, eager convenience)."""
        ids = jnp.asarray(self.tokenize(list(texts)), jnp.int32)
        return np.asarray(jax.jit(self.encode_ids)(self.params, ids))


def _rms(table) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(table, np.float64)))))


# --------------------------------------------------------------------------------------- CLIP


def _clip_encode_embeddings(config):
    from cocoa_jax.models.clip import LN_EPSILON, Transformer

    def encode(params, embeddings, keep):
        p = params["params"]["text"]
        length = embeddings.shape[1]
        x = embeddings + p["positional_embedding"][:length]
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        # Query i sees the kept keys j <= i; SOT (position 0) is always kept, so no row is empty.
        mask = causal[None, None] & keep[:, None, None, :]
        x = Transformer(config.transformer_width, config.transformer_layers, config.transformer_heads,
                        config.activation).apply({"params": p["transformer"]}, x, mask)
        x = nn.LayerNorm(epsilon=LN_EPSILON, use_fast_variance=False).apply({"params": p["ln_final"]}, x)
        # EOT is the last kept token (padding after it is hidden; EOT is special, never dropped).
        eot = jnp.argmax(jnp.where(keep, jnp.arange(length), -1), axis=-1)
        pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0, :]
        return pooled @ p["text_projection"]

    return encode


def clip_text_encoder(model, tokenizer=None) -> TextEncoder:
    """The text tower of a loaded CLIP (`cocoa_jax.models.load("clip_vit...", dir)`).

    CLIP has no [PAD] or [MASK] token: it pads with id 0, which is the real token "!", so the
    default baseline is the zero embedding (positions kept), not a token. SOT and EOT are special.
    """
    from cocoa_jax.models.clip import ClipConfig

    if getattr(model, "encode_text_fn", None) is None or "transformer_width" not in getattr(model, "config", {}):
        raise ValueError(f"`model` must be a loaded CLIP with a text tower, got {getattr(model, 'name', model)!r}")
    fields = {f.name for f in dataclasses.fields(ClipConfig)}
    config = ClipConfig(**{k: v for k, v in model.config.items() if k in fields})
    tok = tokenizer or model.tokenizer()
    context = int(config.context_length)

    def tokenize(texts):
        ids = tok(list(texts), context_length=context, truncate=True)
        width = int(max(1, (ids != 0).sum(axis=1).max()))  # trim shared padding: shorter programs
        return ids[:, :width].astype(np.int32)

    def token_strings(ids):
        return [tok.id_to_token[int(i)].replace("</w>", "") for i in np.asarray(ids)]

    table = model.params["params"]["text"]["token_embedding"]["embedding"]
    return TextEncoder(
        name=model.name, params=model.params,
        embed_fn=lambda params, ids: params["params"]["text"]["token_embedding"]["embedding"][ids],
        encode_embeddings_fn=_clip_encode_embeddings(config), tokenize=tokenize, token_strings=token_strings,
        pad_id=0, special_ids=(int(tok.sot_id), int(tok.eot_id)), baseline_id=None,
        embedding_scale=_rms(table), context_length=context)


# ------------------------------------------------------------------------------------- digits


def _digits_encode_embeddings(module):
    from cocoa_jax.models.digits_clip import TextBlock

    width, heads, layers = module.text_width, module.text_heads, module.text_layers

    def encode(params, embeddings, keep):
        p = params["params"]["text_tower"]
        x = embeddings + p["position_embedding"][: embeddings.shape[1]]
        mask = nn.make_attention_mask(keep, keep)
        for i in range(layers):
            x = TextBlock(width, heads).apply({"params": p[f"TextBlock_{i}"]}, x, mask)
        x = nn.LayerNorm(epsilon=1e-5).apply({"params": p["LayerNorm_0"]}, x)
        weights = keep.astype(x.dtype)[..., None]
        pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return pooled @ p["Dense_0"]["kernel"]

    return encode


def digits_text_encoder(model=None) -> TextEncoder:
    """The text tower of the shipped digits dual encoder (`cocoa_jax.models.digits_clip`).

    Word-level vocabulary, no special tokens; id 0 is padding, whose embedding row was never
    trained (padding is masked), so the default baseline is the zero embedding (positions kept).
    """
    from cocoa_jax.models import digits_clip as dc

    model = model or dc.load_digits_clip()
    table = model.params["params"]["text_tower"]["Embed_0"]["embedding"]

    def tokenize(texts):
        ids = dc.tokenize(list(texts))
        width = int(max(1, (ids != 0).sum(axis=1).max()))
        return ids[:, :width].astype(np.int32)

    def token_strings(ids):
        return ["" if int(i) == 0 else dc.VOCABULARY[int(i) - 1] for i in np.asarray(ids)]

    return TextEncoder(
        name="digits_clip", params=model.params,
        embed_fn=lambda params, ids: params["params"]["text_tower"]["Embed_0"]["embedding"][ids],
        encode_embeddings_fn=_digits_encode_embeddings(model.module), tokenize=tokenize,
        token_strings=token_strings, pad_id=0, special_ids=(), baseline_id=None,
        embedding_scale=_rms(table), context_length=dc.CONTEXT_LENGTH)


# ------------------------------------------------------------------- token-embedding LoadedModels


def _display(piece: str) -> str:
    """A vocabulary piece as shown on the page: SentencePiece's and byte-level BPE's word-start marks
    dropped ("\u2581dog", "\u0120dog" -> "dog"); WordPiece's "##" kept (it says "inside a word")."""
    return piece[1:] if piece[:1] in ("\u2581", "\u0120") and len(piece) > 1 else piece


def loaded_text_encoder(model, tokenizer=None) -> TextEncoder:
    """The text tower of a loaded model that exposes token embeddings (`LoadedModel.embed_tokens_fn`
    and `encode_embeddings_fn`: `sentence_bert`, `siglip`) with its tokenizer.json (`model.tokenizer()`).

    Special tokens are the tokenizer's ([CLS]/[SEP], <s>/</s>, SigLIP's </s>) and padding. The default
    baseline is the model's [MASK] (`config["mask_token_id"]`) where it has one, else the zero embedding.
    A tower that pools a fixed position of the padded context (SigLIP: the last) gets every text padded
    to `context_length` and sees its padding (`attend_padding`); the others are trimmed to the longest text.
    """
    if getattr(model, "embed_tokens_fn", None) is None or getattr(model, "encode_embeddings_fn", None) is None:
        raise ValueError(f"`model` {getattr(model, 'name', model)!r} exposes no token embeddings "
                         "(embed_tokens_fn / encode_embeddings_fn)")
    tok = tokenizer or model.tokenizer()
    context = int(model.config["context_length"])
    attend_padding = bool(getattr(model.module, "attends_padding", False))  # the module says (SigLIP)

    def tokenize(texts):
        ids = tok.batch(list(texts)).ids
        if attend_padding:
            return ids.astype(np.int32)
        width = int(max(1, (ids != tok.pad_id).sum(axis=1).max()))
        return ids[:, :width].astype(np.int32)

    def token_strings(ids):
        return [_display(tok.id_to_token(int(i))) for i in np.asarray(ids)]

    vocab = int(model.config.get("vocab_size") or tok.vocab_size)
    table = model.embed_tokens_fn(model.params, jnp.arange(vocab, dtype=jnp.int32)[:, None])  # (V, 1, E)
    mask_id = model.config.get("mask_token_id")
    return TextEncoder(
        name=model.name, params=model.params, embed_fn=model.embed_tokens_fn,
        encode_embeddings_fn=lambda params, words, keep: model.encode_embeddings_fn(params, words, keep.astype(jnp.int32)),
        tokenize=tokenize, token_strings=token_strings, pad_id=int(tok.pad_id),
        special_ids=tuple(int(i) for i in tok.special_ids), baseline_id=None if mask_id is None else int(mask_id),
        embedding_scale=_rms(table), context_length=context, attend_padding=attend_padding)


def text_encoder(model) -> TextEncoder:
    """The `TextEncoder` of a model with a text tower: a `TextEncoder` is returned as is; the digits
    dual encoder and loaded CLIPs are wrapped. Anything else is a ValueError naming it."""
    from cocoa_jax.models.digits_clip import DigitsClipModel

    if isinstance(model, TextEncoder):
        return model
    if isinstance(model, DigitsClipModel):
        return digits_text_encoder(model)
    if getattr(model, "encode_text_fn", None) is not None and "transformer_width" in getattr(model, "config", {}):
        return clip_text_encoder(model)
    if getattr(model, "embed_tokens_fn", None) is not None:
        return loaded_text_encoder(model)
    raise ValueError(f"`model` has no text tower this package can explain: {getattr(model, 'name', type(model).__name__)!r} "
                     "(expected the digits dual encoder, a loaded CLIP, SigLIP or sentence_bert, or a TextEncoder)")
