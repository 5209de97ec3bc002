"""`LoadedModel`, the encoder every loaded architecture becomes, and its input checks.

One pixel convention: every `LoadedModel` takes float pixels in [0, 1], (N, H, W, C) channels
last, in `encode` / `encode_fn`, and applies the model's normalisation (`preprocess.normalize`,
its mean/std) inside; `model.preprocess(image)` gives such pixels. The raw network, on normalised
input, is the expert path `network_fn`. Every function checks its input's static shape against
`input_shape` (rank, spatial size, channels): one unbatched image is refused instead of being
read as a batch. Eager calls also check dtype and values (`check_images`): normalised input
given to `encode_fn` (negative values) is refused with the convention named.
Re-exported by `cocoa_jax.models`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.attribution_methods import lrp_conv_rules
from cocoa_jax.models import preprocessing as pp
from cocoa_jax.models.architectures import spec_of


@dataclasses.dataclass(frozen=True, repr=False)
class LoadedModel:
    """A ported encoder, ready for `cocoa_jax.targets.explain_fn(model.encode, target)`.

    Input: float pixels in [0, 1], (N, H, W, C) channels last; the model's mean/std is applied
    inside `encode_fn` (`input_convention` says which; so does the repr).

    Attributes:
      name: architecture name (a key of `ARCHITECTURES`).
      module: the Flax module.
      params: its Flax variables (`{"params": ...}` plus `"batch_stats"` for ResNets).
      representation_dim: D, the width of `encode`'s output.
      input_shape: (H, W, C) of ONE input at native resolution.
      preprocess: `Preprocessing` turning a PIL image / array into one (H, W, C) input of [0, 1]
        pixels (resize + crop); its `mean`/`std` are what `encode_fn` applies inside. None for
        models that take images as they are (digits).
      encode_fn: pure `encode_fn(params, x (N, H, W, C) float pixels in [0, 1]) -> (N, D)`,
        normalisation inside; jit it with params as an argument to avoid baking weights into
        the program as constants. `x` must be a BATCH whose trailing axes equal `input_shape`
        (a ValueError otherwise, also under jit/vmap: only static shapes are checked).
      network_fn: the expert path, the raw network: pure `network_fn(params, x_normalised)
        -> (N, D)` on `preprocess.normalize(pixels)` (what the original PyTorch model takes;
        values checked against `network_input_range`). `encode_fn(p, x) ==
        network_fn(p, preprocess.normalize(x))`; the same function for models without mean/std.
      head_fn: pure `head_fn(params, reps (N, D)) -> (N, num_classes)`, or None.
      encode_text_fn: CLIP only: pure `encode_text_fn(params, tokens (N, L) int) -> (N, D)`,
        L <= context_length.
      config: the module's hyper-parameters as stored in model.json.
      notes: caveats recorded at conversion (e.g. SimCLR's random head bias).
      embed_tokens_fn: text encoders in token-embedding space (what gradient methods attribute
        over): pure `embed_tokens_fn(params, tokens (N, L) int) -> (N, L, E)`, or None.
      encode_embeddings_fn: pure `encode_embeddings_fn(params, embeddings (N, L, E), mask (N, L))
        -> (N, D)`; positions are added inside, mask 0 = a token neither attended to nor pooled;
        `encode_text_fn(p, t) == encode_embeddings_fn(p, embed_tokens_fn(p, t), t != pad id)`.
      directory: the model directory it was loaded from (where a text encoder's tokenizer is).
    """

    name: str
    module: Any
    params: Any
    representation_dim: int
    input_shape: Tuple[int, int, int]
    preprocess: Optional[pp.Preprocessing]
    encode_fn: Callable[[Any, jax.Array], jax.Array]
    network_fn: Callable[[Any, jax.Array], jax.Array]
    head_fn: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    encode_text_fn: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    embed_tokens_fn: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    encode_embeddings_fn: Optional[Callable[[Any, jax.Array, jax.Array], jax.Array]] = None
    directory: Optional[str] = None

    @property
    def images(self) -> bool:
        """False for a text-only encoder (no image input)."""
        return spec_of(self.name).images

    def encode(self, x) -> jax.Array:
        """(N, H, W, C) float pixels in [0, 1] -> (N, D) with this model's params (jit-compiled,
        cached; the model's normalisation is applied inside).

        `x` is checked first (`check_images`): shape, a float dtype, finite values in [0, 1].
        """
        if not self.images:
            raise ValueError(_TEXT_ONLY.format(name=self.name))
        check_images(self, x)
        return _jit(self.encode_fn)(self.params, jnp.asarray(x, jnp.float32))

    @property
    def input_range(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(low, high) per channel of what `encode` / `encode_fn` take: [0, 1] pixels."""
        return spec_of(self.name).input_range

    @property
    def network_input_range(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(low, high) per channel of what `network_fn` takes: [0, 1] pixels normalised,
        ((0 - mean) / std, (1 - mean) / std); [0, 1] for models without mean/std."""
        return spec_of(self.name).network_input_range

    @property
    def input_convention(self) -> str:
        """What `encode` / `encode_fn` take, in words (also in the repr)."""
        return input_convention(self.input_shape, self.preprocess)

    def __repr__(self) -> str:
        head = "" if self.head_fn is None else ", head"
        text = "" if self.encode_text_fn is None else ", text encoder"
        expert = "" if _normalizer(self.preprocess) is None else "; network_fn: the raw network on normalised input"
        if not self.images:
            return (f"LoadedModel({self.name!r}, text only: (N, L <= {self.config.get('context_length')}) token ids "
                    f"or (N, L, E) token embeddings + (N, L) mask; output: (N, {self.representation_dim}))")
        return (f"LoadedModel({self.name!r}, input: {self.input_convention}; output: (N, "
                f"{self.representation_dim}){head}{text}{expert})")

    def head(self, reps) -> jax.Array:
        """(N, D) representations -> (N, num_classes) logits."""
        if self.head_fn is None:
            raise ValueError(f"model {self.name!r} was converted without a head")
        check_reps("reps", reps, self.representation_dim)
        return _jit(self.head_fn)(self.params, jnp.asarray(reps, jnp.float32))

    def encode_text(self, texts_or_tokens, tokenizer=None) -> jax.Array:
        """CLIP only: captions (str or list of str) or (N, L) int token ids -> (N, D)."""
        if self.encode_text_fn is None:
            raise ValueError(f"model {self.name!r} has no text encoder")
        if isinstance(texts_or_tokens, str) or (
                isinstance(texts_or_tokens, (list, tuple)) and texts_or_tokens
                and isinstance(texts_or_tokens[0], str)):
            tokenizer = tokenizer or self.tokenizer()
            tokens = tokenizer(texts_or_tokens, context_length=self.config["context_length"])
        else:
            tokens = np.asarray(texts_or_tokens)
        check_tokens("tokens", tokens, int(self.config["context_length"]))
        return _jit(self.encode_text_fn)(self.params, jnp.asarray(tokens, jnp.int32))

    def tokenizer(self, merges_path: Optional[str] = None):
        """The text encoder's tokenizer: CLIP's byte-level BPE (`cocoa_jax.models.tokenizer`;
        merges_path is its file), or the model's own tokenizer.json (`text_tokenizers.TextTokenizer`)."""
        if self.encode_text_fn is None:
            raise ValueError(f"model {self.name!r} has no text encoder")
        if spec_of(self.name).tokenizer is not None:
            return _cached_model_tokenizer(self.name, self.directory, tuple(sorted(
                (k, v) for k, v in self.config.items() if isinstance(v, (str, int, float, bool, type(None))))))
        return _cached_tokenizer(merges_path)

    def with_input_shape(self, input_shape) -> "LoadedModel":
        """The same model accepting (N, *input_shape) images instead of the native size.

        For convolutional encoders (they pool any spatial size; e.g. cheap tests at 64 px) and the
        DINO/DINOv2 ViTs (their positional embedding is resampled as the reference code does).
        CLIP's positional embedding fixes its resolution, so CLIP refuses any other shape.
        """
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3 or min(shape) <= 0:
            raise ValueError(f"input_shape must be (H, W, C) of positive sizes, got {input_shape!r}")
        if shape[-1] != self.input_shape[-1]:
            raise ValueError(f"input_shape must keep the model's {self.input_shape[-1]} channel(s), "
                             f"got {shape}")
        if shape != tuple(self.input_shape) and not spec_of(self.name).any_size:
            raise ValueError(f"model {self.name!r} only accepts its native input shape "
                             f"{tuple(self.input_shape)}, got input_shape={shape}")
        return make_loaded(self.name, self.config, self.params, self.notes, input_shape=shape)


# ---------------------------------------------------------------------------------------------
# Input checks (static shapes only: they run unchanged under jit and vmap)

def _dtype_of(array):
    return array.dtype if hasattr(array, "dtype") else np.asarray(array).dtype


def check_image_shape(name: str, x, input_shape, model_name: str) -> None:
    """`x` must be (N, *input_shape) of a real dtype; ValueError/TypeError saying what was expected."""
    shape, want = tuple(np.shape(x)), tuple(input_shape)
    expected = f"(N, {', '.join(map(str, want))})"
    if len(shape) == 3 and shape == want:
        raise ValueError(f"`{name}` must be a batch {expected} for model {model_name!r}; got ONE image "
                         f"of shape {shape}: add a batch axis (x[None])")
    if len(shape) != 4:
        raise ValueError(f"`{name}` must have rank 4, shape {expected} (N, H, W, C) for model "
                         f"{model_name!r}, got shape {shape}")
    if shape[-1] != want[-1]:
        raise ValueError(f"`{name}` has {shape[-1]} channel(s) but model {model_name!r} expects "
                         f"{want[-1]}: shape {expected} (channels last), got {shape}")
    if shape[1:3] != want[:2]:
        raise ValueError(f"`{name}` has spatial size {shape[1]}x{shape[2]} but model {model_name!r} expects "
                         f"{want[0]}x{want[1]}: shape {expected}, got {shape} (resize the images to "
                         f"{want[0]}x{want[1]}, which model.preprocess does where the model has one, or "
                         f"use model.with_input_shape(...) for a convolutional encoder)")
    dtype = _dtype_of(x)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a real numeric array, got dtype {dtype}")


def _range_text(low, high) -> str:
    if len(set(low)) == 1 and len(set(high)) == 1:
        return f"[{low[0]:.4g}, {high[0]:.4g}]"
    return "per channel " + ", ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(low, high))


def _numbers(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def input_convention(input_shape, preprocess=None) -> str:
    """What a model's `encode_fn` takes, in words: "(N, H, W, C) float pixels in [0, 1], normalised
    inside (mean=..., std=...)" (or "..., no normalisation" for models without mean/std)."""
    shape = "(N, " + ", ".join(map(str, input_shape)) + ")"
    mean = getattr(preprocess, "mean", None)
    inside = ("no normalisation" if mean is None else
              f"normalised inside (mean={_numbers(mean)}, std={_numbers(preprocess.std)})")
    return f"{shape} float pixels in [0, 1], channels last, {inside}"


def check_image_values(name: str, x, input_range, model_name: str, *, tolerance: float = 1e-3,
                       preprocess=None) -> None:
    """A float dtype always; when `x` is concrete (not traced), finite values within `input_range`
    ((low, high) per channel, widened by `tolerance` of each channel's width). Static dtypes are
    checked under jit too; values only where they are known (eager calls).

    `input_range` [0, 1] is the pixel convention of `encode_fn` (`preprocess`: the normalisation
    the model applies inside, named in errors: negative values "look normalised"); any other
    range is a raw network's normalised input (`network_fn`)."""
    low, high = (tuple(float(v) for v in bound) for bound in input_range)
    expected = _range_text(low, high)
    network = any(lo != 0.0 or hi != 1.0 for lo, hi in zip(low, high))
    inside = preprocess is not None and getattr(preprocess, "mean", None) is not None
    if network:
        takes = f"the network_fn of model {model_name!r} takes float normalised input, {expected}"
        how = "normalise [0, 1] pixels with model.preprocess.normalize(x), or pass the pixels to model.encode_fn"
    else:
        takes = f"model {model_name!r} takes float pixels in {expected}"
        how = "scale to [0, 1]"
        if inside:
            takes += (f" (it normalises inside: mean={_numbers(preprocess.mean)}, "
                      f"std={_numbers(preprocess.std)})")
    dtype = _dtype_of(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`{name}` has dtype {dtype} but {takes}: convert, e.g. "
                        f"x.astype(np.float32) / 255 for 8-bit pixels"
                        + (", then normalise with model.preprocess.normalize" if network else ""))
    if isinstance(x, jax.core.Tracer) or not np.size(x):
        return
    values = x if isinstance(x, jax.Array) else np.asarray(x)
    xp = jnp if isinstance(values, jax.Array) else np
    axes = tuple(range(values.ndim - 1))
    finite = xp.isfinite(values)
    bad = int(values.size - int(xp.count_nonzero(finite)))
    if bad:
        raise ValueError(f"`{name}` contains {bad} NaN/inf value(s); {takes}")
    lows = np.asarray(xp.min(values, axis=axes), np.float64).reshape(-1)
    highs = np.asarray(xp.max(values, axis=axes), np.float64).reshape(-1)
    for c, (lo, hi, got_lo, got_hi) in enumerate(zip(low, high, lows, highs)):
        slack = tolerance * (hi - lo)
        if got_lo < lo - slack or got_hi > hi + slack:
            channel = f" (channel {c})" if len(low) > 1 else ""
            all_lo, all_hi = float(lows.min()), float(highs.max())
            if all_hi > 3.0 and all_lo >= -slack:  # 0..255 data, the usual mistake
                cause = "these look like 8-bit pixels: scale to [0, 1], e.g. x / 255"
                if network:
                    cause += ", then normalise with model.preprocess.normalize"
            elif inside and all_lo < -slack:  # (x - mean) / std applied already: negative values
                cause = ("these look normalised (mean/std already applied): pass the [0, 1] pixels "
                         "(model.preprocess(image) gives them); normalised input is for model.network_fn")
            elif inside:
                cause = "scale to [0, 1] (if mean/std was applied already, pass the [0, 1] pixels instead)"
            else:
                cause = how
            raise ValueError(f"`{name}` has values in [{got_lo:.4g}, {got_hi:.4g}]{channel} but {takes}; {cause}")


def check_images(model, x, name: str = "x") -> None:
    """Check images `x` for `model` (a `LoadedModel` or the digits dual encoder) before encoding.

    Every model takes float pixels in [0, 1] (its normalisation, if any, is applied inside).
    Raises ValueError/TypeError naming the expected shape (N, *model.input_shape), a float dtype
    and, for concrete arrays, finite values in `model.input_range` = [0, 1] (+-0.1% of its
    width): normalised input (negative values) is refused with the convention named.
    `model.encode` and eager calls of `model.encode_fn` run it; inside jit/vmap/grad values are
    unknown and only shape and dtype are checked, so call it on the data before jitting:

        check_images(model, x)                          # eager, cheap (a min/max per channel)
        reps = jax.jit(model.encode_fn)(model.params, x)
    """
    input_shape = tuple(model.input_shape)
    if isinstance(model, LoadedModel):
        check_image_shape(name, x, input_shape, model.name)
    else:  # size-agnostic towers (the digits dual encoder): rank and channels only
        shape = tuple(np.shape(x))
        if len(shape) != 4 or shape[-1] != input_shape[-1]:
            raise ValueError(f"`{name}` must have shape (N, H, W, {input_shape[-1]}) for model "
                             f"{model.name!r}, got {shape}")
    check_image_values(name, x, model.input_range, model.name, preprocess=getattr(model, "preprocess", None))


def check_reps(name: str, reps, dim: int) -> None:
    """`reps` must be (N, dim)."""
    shape = tuple(np.shape(reps))
    if len(shape) != 2 or shape[1] != dim:
        raise ValueError(f"`{name}` must have shape (N, {dim}), got {shape}")


def check_tokens(name: str, tokens, context_length: int) -> None:
    """`tokens` must be (N, L) integers with 1 <= L <= context_length."""
    shape, dtype = tuple(np.shape(tokens)), _dtype_of(tokens)
    if len(shape) != 2 or not 1 <= shape[1] <= context_length:
        raise ValueError(f"`{name}` must have shape (N, L) with L <= {context_length} (the context "
                         f"length), got {shape}")
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"`{name}` must be integer token ids, got dtype {dtype}")


def _normalizer(preprocess):
    """x -> preprocess.normalize(x), or None for models that take [0, 1] pixels as they are."""
    if preprocess is None or preprocess.mean is None:
        return None
    return preprocess.normalize


def _checked_encode(raw, input_shape, model_name, preprocess, normalization=None):
    """`encode_fn`: [0, 1] pixels, checked, then normalised inside, then the raw network.
    `normalization(normalize, x)`: how the normalisation is applied (differentiated), or None: as is."""
    spec = spec_of(model_name)
    input_range, normalize = spec.input_range, _normalizer(preprocess)
    if normalize is not None and normalization is not None:
        normalize = functools.partial(normalization, normalize)

    def encode_fn(params, x):
        check_image_shape("x", x, input_shape, model_name)
        check_image_values("x", x, input_range, model_name, preprocess=preprocess)  # values: eager only
        return raw(params, x if normalize is None else normalize(x))

    return encode_fn


def _with_token_access(encode_fn, access, preprocess):
    """`encode_fn.token_access`: the ViT's `token_drop.TokenAccess` on [0, 1] pixels (normalised
    inside, as `encode_fn`), which the explicand program reads for token-level methods."""
    if access is not None:
        normalize = _normalizer(preprocess) or (lambda x: x)
        encode_fn.token_access = dataclasses.replace(
            access, encode=lambda params, x, keep, valid=None: access.encode(params, normalize(x), keep, valid),
            attention=lambda params, x: access.attention(params, normalize(x)))
    return encode_fn


# How a model mode's encode differentiates the input normalisation (absent: as the plain encode).
# "relevance" (the ResNets' LRP mode): its gradient is relevance, which the element-wise
# normalisation passes to the pixels unchanged.
_MODE_NORMALIZATION = {"relevance": lrp_conv_rules.pass_relevance}


def _with_modes(encode_fn, modes, input_shape, model_name, preprocess):
    """`encode_fn.modes`: {mode: the same checked encode with the network in that mode} (e.g.
    "lrp" for AttnLRP), which the explicand program reads for methods with a `model_mode`."""
    encode_fn.modes = {mode: _checked_encode(raw, input_shape, model_name, preprocess, _MODE_NORMALIZATION.get(mode))
                       for mode, raw in modes.items()}
    return encode_fn


def _checked_network(raw, input_shape, model_name):
    """`network_fn`: the raw network's input (normalised), checked against its range."""
    input_range = spec_of(model_name).network_input_range

    def network_fn(params, x):
        check_image_shape("x", x, input_shape, model_name)
        check_image_values("x", x, input_range, model_name)  # values: eager calls only
        return raw(params, x)

    return network_fn


def _checked_head(raw, dim):
    def head_fn(params, reps):
        check_reps("reps", reps, dim)
        return raw(params, reps)

    return head_fn


def _checked_text(raw, context_length):
    def encode_text_fn(params, tokens):
        check_tokens("tokens", tokens, context_length)
        return raw(params, tokens)

    return encode_text_fn


_TEXT_ONLY = ("model {name!r} encodes text only: it takes no images (use encode_text, encode_text_fn or "
              "encode_embeddings_fn)")


def _text_only_images(model_name):
    """encode_fn / network_fn of a text-only encoder: refuse, naming what to use instead."""
    def refuse(params, x):
        raise ValueError(_TEXT_ONLY.format(name=model_name))

    return refuse


def _checked_embed_tokens(raw, context_length):
    def embed_tokens_fn(params, tokens):
        check_tokens("tokens", tokens, context_length)
        return raw(params, tokens)

    return embed_tokens_fn


def check_embeddings(embeddings, mask, context_length: int) -> None:
    """`embeddings` (N, L, E) floats and `mask` (N, L) with 1 <= L <= context_length."""
    shape, mask_shape = tuple(np.shape(embeddings)), tuple(np.shape(mask))
    if len(shape) != 3 or not 1 <= shape[1] <= context_length:
        raise ValueError(f"`embeddings` must have shape (N, L, E) with L <= {context_length} (the context "
                         f"length), got {shape}")
    if not jnp.issubdtype(_dtype_of(embeddings), jnp.floating):
        raise TypeError(f"`embeddings` must be floats, got dtype {_dtype_of(embeddings)}")
    if mask_shape != shape[:2]:
        raise ValueError(f"`mask` must have shape (N, L) = {shape[:2]} (one entry per token of `embeddings`), "
                         f"got {mask_shape}")


def _checked_embeddings(raw, context_length):
    def encode_embeddings_fn(params, embeddings, mask):
        check_embeddings(embeddings, mask, context_length)
        return raw(params, embeddings, mask)

    return encode_embeddings_fn


@functools.lru_cache(maxsize=None)
def _cached_model_tokenizer(arch, directory, config_items):
    return spec_of(arch).tokenizer(dict(config_items), directory)


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(merges_path):
    from cocoa_jax.models.tokenizer import ClipTokenizer

    return ClipTokenizer(merges_path)


@functools.lru_cache(maxsize=None)
def _jit(fn):
    return jax.jit(fn)



def make_loaded(arch: str, config: Mapping[str, Any], variables, notes=(), *,
                input_shape: Optional[Tuple[int, int, int]] = None, directory: Optional[str] = None) -> LoadedModel:
    """Wrap module + variables of `arch` as a `LoadedModel` (input checks included).

    input_shape: accept (N, *input_shape) images instead of the native shape (see
    `LoadedModel.with_input_shape`).
    directory: the model directory (a text encoder reads its tokenizer there).
    """
    spec = spec_of(arch)
    module = spec.build(config)
    fns = spec.encoders(module, config)
    if not spec.images:
        return _text_only_loaded(arch, spec, module, fns, config, variables, notes, directory)
    head_fn = None if fns.head is None else _checked_head(fns.head, fns.dim)
    encode_text_fn = None if fns.text is None else _checked_text(fns.text, int(fns.context_length))
    shape = tuple(input_shape or spec.input_shape(config))
    # The table's preprocessing is for its usual size; a checkpoint of another native size (read
    # from its config) crops its own size, or model.preprocess(image) could not feed the model.
    # An input_shape asked for explicitly (cheap tests at 64 px) keeps the table's.
    preprocess = spec.preprocess if spec.preprocess_for is None else spec.preprocess_for(config)
    if spec.preprocess_for is None and preprocess is not None and input_shape is None and shape[0] == shape[1]:
        preprocess = preprocess.at_size(shape[0])
    return LoadedModel(name=arch, module=module, params=variables, representation_dim=fns.dim,
                       input_shape=shape, preprocess=preprocess,
                       encode_fn=_with_modes(_with_token_access(_checked_encode(fns.encode, shape, arch, preprocess),
                                                                fns.tokens, preprocess),
                                             fns.modes, shape, arch, preprocess),
                       network_fn=_checked_network(fns.encode, shape, arch), head_fn=head_fn,
                       encode_text_fn=encode_text_fn, config=dict(config), notes=tuple(notes),
                       embed_tokens_fn=None if fns.embed_tokens is None else _checked_embed_tokens(
                           fns.embed_tokens, int(fns.context_length)),
                       encode_embeddings_fn=None if fns.encode_embeddings is None else _checked_embeddings(
                           fns.encode_embeddings, int(fns.context_length)), directory=directory)


def _text_only_loaded(arch, spec, module, fns, config, variables, notes, directory) -> LoadedModel:
    """A text-only encoder's `LoadedModel`: text and token-embedding functions; images refused."""
    length = int(fns.context_length)
    return LoadedModel(name=arch, module=module, params=variables, representation_dim=fns.dim, input_shape=(),
                       preprocess=None, encode_fn=_text_only_images(arch), network_fn=_text_only_images(arch),
                       encode_text_fn=_checked_text(fns.text, length), config=dict(config), notes=tuple(notes),
                       embed_tokens_fn=_checked_embed_tokens(fns.embed_tokens, length),
                       encode_embeddings_fn=_checked_embeddings(fns.encode_embeddings, length), directory=directory)
