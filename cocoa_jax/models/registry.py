"""Architectures cocoa-jax can load, the `LoadedModel` they load into, and the on-disk format.

A converted model is a directory:
  OUT_DIR/model.json   {"format": 1, "arch": ..., "config": {...}, "notes": [...]} (human-readable)
  OUT_DIR/variables/   orbax checkpoint of the Flax variables ({"params": ..., ["batch_stats": ...]})

`load(arch, OUT_DIR)` rebuilds the Flax module from `config`, restores the variables against its
abstract shapes (so a wrong file fails loudly) and needs neither torch nor the original checkpoint.
The embedded `digits` encoder is an ordinary entry whose weights ship with the package: its
directory may also be a bare orbax checkpoint (what `cocoa-jax train-digits` writes).

Every `LoadedModel` function checks its input's static shape against `input_shape` (rank,
spatial size, channels): one unbatched image is refused instead of being read as a batch.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import warnings
from typing import Any, Callable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.models import preprocessing as pp
from cocoa_jax.models.clip import CLIP, ClipConfig
from cocoa_jax.models import small_resnet
from cocoa_jax.models.files import atomic_directory
from cocoa_jax.models.resnet import ResNet
from cocoa_jax.models import vit

FORMAT_VERSION = 1
METADATA_FILE = "model.json"
VARIABLES_DIR = "variables"

SIMCLR_HEAD_BIAS_NOTE = (
    "fc.bias comes from tonylins/simclr-converter's resnet50-1x.pth, which stored a randomly "
    "initialised bias instead of the TF linear head's bias: head logits are shifted per class "
    "(the 2048-d representation is unaffected).")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A ported encoder, ready for `cocoa_jax.targets.explain_fn(model.encode, target)`.

    Attributes:
      name: architecture name (a key of `ARCHITECTURES`).
      module: the Flax module.
      params: its Flax variables (`{"params": ...}` plus `"batch_stats"` for ResNets).
      representation_dim: D, the width of `encode`'s output.
      input_shape: (H, W, C) of ONE preprocessed input at native resolution.
      preprocess: `Preprocessing` turning a PIL image / array into one (H, W, C) input.
      encode_fn: pure `encode_fn(params, x (N, H, W, C) float) -> (N, D)`; jit it with
        params as an argument to avoid baking weights into the program as constants.
        `x` must be a BATCH whose trailing axes equal `input_shape` (a ValueError otherwise,
        also under jit/vmap: only static shapes are checked).
      head_fn: pure `head_fn(params, reps (N, D)) -> (N, num_classes)`, or None.
      encode_text_fn: CLIP only: pure `encode_text_fn(params, tokens (N, L) int) -> (N, D)`,
        L <= context_length.
      config: the module's hyper-parameters as stored in model.json.
      notes: caveats recorded at conversion (e.g. SimCLR's random head bias).
    """

    name: str
    module: Any
    params: Any
    representation_dim: int
    input_shape: Tuple[int, int, int]
    preprocess: Optional[pp.Preprocessing]
    encode_fn: Callable[[Any, jax.Array], jax.Array]
    head_fn: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    encode_text_fn: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    def encode(self, x) -> jax.Array:
        """(N, H, W, C) -> (N, D) with this model's params (jit-compiled, cached).

        `x` is checked first (`check_images`): shape, a float dtype, finite values in `input_range`.
        """
        check_images(self, x)
        return _jit(self.encode_fn)(self.params, jnp.asarray(x, jnp.float32))

    @property
    def input_range(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(low, high) per channel of ONE preprocessed input (`ArchSpec.input_range`)."""
        return _spec(self.name).input_range

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
        """CLIP only: the byte-level BPE tokenizer (see `cocoa_jax.models.tokenizer`)."""
        if self.encode_text_fn is None:
            raise ValueError(f"model {self.name!r} has no text encoder")
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
        if shape != tuple(self.input_shape) and not _spec(self.name).any_size:
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


def check_image_values(name: str, x, input_range, model_name: str, *, tolerance: float = 1e-3) -> None:
    """A float dtype always; when `x` is concrete (not traced), finite values within `input_range`
    ((low, high) per channel, widened by `tolerance` of each channel's width). Static dtypes are
    checked under jit too; values only where they are known (eager calls)."""
    low, high = (tuple(float(v) for v in bound) for bound in input_range)
    expected = _range_text(low, high)
    normalised = any(lo != 0.0 or hi != 1.0 for lo, hi in zip(low, high))
    how = ("normalise [0, 1] pixels with model.preprocess.normalize(x) (or prepare images with "
           "model.preprocess)" if normalised else "scale to [0, 1]")
    dtype = _dtype_of(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`{name}` has dtype {dtype} but model {model_name!r} takes float inputs in {expected}: "
                        f"convert, e.g. x.astype(np.float32) / 255 for 8-bit pixels"
                        + (", then normalise with model.preprocess.normalize" if normalised else ""))
    if isinstance(x, jax.core.Tracer) or not np.size(x):
        return
    values = x if isinstance(x, jax.Array) else np.asarray(x)
    xp = jnp if isinstance(values, jax.Array) else np
    axes = tuple(range(values.ndim - 1))
    finite = xp.isfinite(values)
    bad = int(values.size - int(xp.count_nonzero(finite)))
    if bad:
        raise ValueError(f"`{name}` contains {bad} NaN/inf value(s); model {model_name!r} needs finite "
                         f"inputs in {expected}")
    lows = np.asarray(xp.min(values, axis=axes), np.float64).reshape(-1)
    highs = np.asarray(xp.max(values, axis=axes), np.float64).reshape(-1)
    for c, (lo, hi, got_lo, got_hi) in enumerate(zip(low, high, lows, highs)):
        slack = tolerance * (hi - lo)
        if got_lo < lo - slack or got_hi > hi + slack:
            channel = f" (channel {c})" if len(low) > 1 else ""
            if got_hi > 2.0 and got_lo >= -slack:  # 0..255 data, the usual mistake
                cause = "; these look like 8-bit pixels: scale to [0, 1], e.g. x / 255"
                if normalised:
                    cause += ", then normalise with model.preprocess.normalize"
            else:
                cause = f"; {how}"
            raise ValueError(f"`{name}` has values in [{got_lo:.4g}, {got_hi:.4g}]{channel} but model "
                             f"{model_name!r} expects {expected}{cause}")


def check_images(model, x, name: str = "x") -> None:
    """Check images `x` for `model` (a `LoadedModel` or the digits dual encoder) before encoding.

    Raises ValueError/TypeError naming the expected shape (N, *model.input_shape), a float dtype
    and, for concrete arrays, finite values in `model.input_range` (+-0.1% of its width).
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
    check_image_values(name, x, model.input_range, model.name)


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


def _checked_encode(raw, input_shape, model_name):
    input_range = _spec(model_name).input_range

    def encode_fn(params, x):
        check_image_shape("x", x, input_shape, model_name)
        check_image_values("x", x, input_range, model_name)  # values: eager calls only
        return raw(params, x)

    return encode_fn


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


@functools.lru_cache(maxsize=None)
def _cached_tokenizer(merges_path):
    from cocoa_jax.models.tokenizer import ClipTokenizer

    return ClipTokenizer(merges_path)


@functools.lru_cache(maxsize=None)
def _jit(fn):
    return jax.jit(fn)


# ---------------------------------------------------------------------------------------------
# Architecture specifications

@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """What `load` needs to rebuild an architecture from its stored config.

    any_size: a convolutional encoder that pools any spatial size (`with_input_shape` allowed).
    default_dir: where `load(name)` finds weights when no directory is given (shipped models).
    input_range: (low, high) per channel of ONE preprocessed input: [0, 1] pixels through
      `preprocess` (normalised models: ((0 - mean) / std, (1 - mean) / std)); encode refuses
      concrete inputs outside it (`check_images`).
    """

    name: str
    description: str
    default_config: Mapping[str, Any]
    build: Callable[[Mapping[str, Any]], Any]            # config -> Flax module
    input_shape: Callable[[Mapping[str, Any]], Tuple[int, int, int]]
    preprocess: Optional[pp.Preprocessing]
    any_size: bool = True
    default_dir: Optional[str] = None
    channels: int = 3
    init: Callable[[Any, Mapping[str, Any], Tuple[int, int, int]], Any] = None  # see _init_image
    encoders: Callable[[Any, Mapping[str, Any]], "Encoders"] = None             # see _image_encoders

    def __post_init__(self):
        if self.init is None:
            object.__setattr__(self, "init", _init_image)
        if self.encoders is None:
            object.__setattr__(self, "encoders", _image_encoders)

    @property
    def input_range(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        return pp.value_range(self.preprocess, self.channels)


@dataclasses.dataclass(frozen=True)
class Encoders:
    """The raw (unchecked) pure functions of one architecture; `make_loaded` adds the checks.

    encode(params, x) -> (N, dim); head(params, reps) -> logits or None; text(params, tokens)
    -> (N, dim) or None, with tokens up to `context_length` long."""

    encode: Callable[[Any, jax.Array], jax.Array]
    dim: int
    head: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    text: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    context_length: Optional[int] = None


def _init_image(module, config, shape):
    """Default `ArchSpec.init`: every variable via the module's `init_all(images)`."""
    return module.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32), method="init_all")


def _image_encoders(module, config) -> Encoders:
    """Default `ArchSpec.encoders`: `module(x)` is the representation; `module.head` when the
    config has `num_classes`."""
    head = None
    if config.get("num_classes") is not None:
        head = lambda params, reps: module.apply(params, reps, method="head")
    return Encoders(lambda params, x: module.apply(params, x), module.representation_dim, head)


def _init_clip(module, config, shape):
    tokens = jnp.zeros((1, config["context_length"]), jnp.int32)
    return module.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32), tokens, method="init_all")


def _clip_encoders(module, config) -> Encoders:
    return Encoders(lambda params, x: module.apply(params, x, method="encode_image"), int(config["embed_dim"]),
                    text=lambda params, tokens: module.apply(params, tokens, method="encode_text"),
                    context_length=int(config["context_length"]))


def _init_digits(module, config, shape):
    # Only the encoder's inference variables (training adds nothing else to restore).
    return dict(small_resnet.init_variables(module, jax.random.key(0), shape))


def _digits_encoders(module, config) -> Encoders:
    return Encoders(small_resnet.encode_fn_for(module), module.representation_dim)


def _build_resnet(config):
    return ResNet(block=config["block"], stage_sizes=tuple(config["stage_sizes"]),
                  stem=config["stem"], num_classes=config.get("num_classes"))


def _build_vit(config):
    return vit.ViT(dict(config))


def _vit_input_shape(config):
    return (int(config["image_size"]), int(config["image_size"]), 3)


def _torchvision_resnet(name: str, block: str, stage_sizes, dim: int):
    return ArchSpec(
        name, f"torchvision {name} (supervised, or an SSL backbone: MoCo v2/v3, SimSiam, Barlow Twins, VICReg, "
              f"SwAV, DINO, BYOL ports); {dim}-d pooled feature; head = fc when the checkpoint has one",
        {"block": block, "stage_sizes": list(stage_sizes), "stem": "imagenet", "num_classes": None},
        _build_resnet, lambda c: (224, 224, 3), pp.IMAGENET)


def _build_clip(config):
    return CLIP(ClipConfig(**config))


def _build_digits(config):
    return small_resnet.SmallResNet(widths=tuple(config["widths"]), blocks=tuple(config["blocks"]),
                                    strides=tuple(config["strides"]), stem_width=int(config["stem_width"]),
                                    stem_pool=int(config["stem_pool"]))


DIGITS = "digits"  # the embedded encoder, shipped inside the package (nothing to convert)
DIGITS_CONFIG = {"widths": list(small_resnet.DEFAULT_WIDTHS), "blocks": list(small_resnet.DEFAULT_BLOCKS),
                 "strides": list(small_resnet.DEFAULT_STRIDES), "stem_width": small_resnet.STEM_WIDTH,
                 "stem_pool": 2}

ARCHITECTURES = {
    "simclr_resnet50": ArchSpec(
        "simclr_resnet50", "SimCLR v1 ResNet-50 (1x), ImageNet; 2048-d; inputs in [0, 1], no mean/std",
        {"block": "bottleneck", "stage_sizes": [3, 4, 6, 3], "stem": "imagenet", "num_classes": 1000},
        _build_resnet, lambda c: (224, 224, 3), pp.IMAGENET_RAW),
    "simsiam_cifar_resnet18": ArchSpec(
        "simsiam_cifar_resnet18", "SimSiam CIFAR-10 ResNet-18 (3x3 stem, no max-pool); 512-d; head 512->10",
        {"block": "basic", "stage_sizes": [2, 2, 2, 2], "stem": "cifar", "num_classes": 10},
        _build_resnet, lambda c: (32, 32, 3), pp.CIFAR),
    "resnet18_classifier": ArchSpec(
        "resnet18_classifier", "torchvision ResNet-18 classifier (the paper's MURA model); 512-d; head 512->2",
        {"block": "basic", "stage_sizes": [2, 2, 2, 2], "stem": "imagenet", "num_classes": 2},
        _build_resnet, lambda c: (224, 224, 3), pp.IMAGENET),
    "clip_vit_b32": ArchSpec(
        "clip_vit_b32", "CLIP ViT-B/32 image + text encoders; 512-d joint embedding",
        dataclasses.asdict(ClipConfig()),
        _build_clip, lambda c: (c["image_resolution"], c["image_resolution"], 3), pp.CLIP, any_size=False,
        init=_init_clip, encoders=_clip_encoders),
    "resnet18": _torchvision_resnet("resnet18", "basic", (2, 2, 2, 2), 512),
    "resnet34": _torchvision_resnet("resnet34", "basic", (3, 4, 6, 3), 512),
    "resnet50": _torchvision_resnet("resnet50", "bottleneck", (3, 4, 6, 3), 2048),
    "resnet101": _torchvision_resnet("resnet101", "bottleneck", (3, 4, 23, 3), 2048),
    "resnet152": _torchvision_resnet("resnet152", "bottleneck", (3, 8, 36, 3), 2048),
    "dino_vit": ArchSpec(
        "dino_vit", "DINO ViT (facebookresearch/dino; S/B, patch 8/16, size read from the checkpoint); "
                    "class token after the final norm",
        {**vit.DEFAULT_CONFIG, "patch_size": 16, "pos_grid": 14, "layer_scale": False},
        _build_vit, _vit_input_shape, pp.IMAGENET_BICUBIC),
    "dinov2_vit": ArchSpec(
        "dinov2_vit", "DINOv2 ViT (facebookresearch/dinov2; S/B/L/g, patch 14, with or without registers); "
                      "class token after the final norm",
        dict(vit.DEFAULT_CONFIG), _build_vit, _vit_input_shape, pp.IMAGENET_BICUBIC),
    "clip_vit": ArchSpec(
        "clip_vit", "CLIP ViT of any size (OpenAI or open_clip; B/32, B/16, L/14, L/14@336 ...) image + text "
                    "encoders; joint embedding",
        dataclasses.asdict(ClipConfig()),
        _build_clip, lambda c: (c["image_resolution"], c["image_resolution"], 3), pp.CLIP, any_size=False,
        init=_init_clip, encoders=_clip_encoders),
    DIGITS: ArchSpec(
        DIGITS, "SimCLR SmallResNet on scikit-learn digits (shipped); 128-d; 32x32x1 in [0, 1]",
        DIGITS_CONFIG, _build_digits, lambda c: small_resnet.INPUT_SHAPE, None,
        default_dir=small_resnet.WEIGHTS_DIR, channels=small_resnet.INPUT_SHAPE[-1],
        init=_init_digits, encoders=_digits_encoders),
}
# Architectures `cocoa-jax convert` produces (the others ship with the package).
CONVERTIBLE = tuple(name for name, spec in ARCHITECTURES.items() if spec.default_dir is None)


def input_shape_of(arch: str, directory: Optional[str] = None) -> Optional[Tuple[int, int, int]]:
    """(H, W, C) of ONE input of `arch` (stored in `directory`'s model.json), without loading weights;
    None when it cannot be told here (unknown arch, unreadable directory: `load` reports those)."""
    spec = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if spec is None:
        return None
    config = spec.default_config
    if directory is not None:
        path = os.path.join(os.path.expanduser(directory), METADATA_FILE)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    config = json.load(f)["config"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
        elif spec.default_dir is None:
            return None
    try:
        return tuple(int(v) for v in spec.input_shape(config))
    except (KeyError, TypeError, ValueError):
        return None


def list_architectures() -> Tuple[str, ...]:
    return tuple(ARCHITECTURES)


def _spec(arch: str) -> ArchSpec:
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {list_architectures()}, got {arch!r}")
    return ARCHITECTURES[arch]


def init_abstract(arch: str, config: Mapping[str, Any]):
    """(module, abstract variables) for `config`: shapes/dtypes only, nothing computed."""
    spec = _spec(arch)
    module = spec.build(config)
    shape = tuple(spec.input_shape(config))
    return module, jax.eval_shape(lambda: spec.init(module, config, shape))


def make_loaded(arch: str, config: Mapping[str, Any], variables, notes=(), *,
                input_shape: Optional[Tuple[int, int, int]] = None) -> LoadedModel:
    """Wrap module + variables of `arch` as a `LoadedModel` (input checks included).

    input_shape: accept (N, *input_shape) images instead of the native shape (see
    `LoadedModel.with_input_shape`).
    """
    spec = _spec(arch)
    module = spec.build(config)
    fns = spec.encoders(module, config)
    head_fn = None if fns.head is None else _checked_head(fns.head, fns.dim)
    encode_text_fn = None if fns.text is None else _checked_text(fns.text, int(fns.context_length))
    shape = tuple(input_shape or spec.input_shape(config))
    return LoadedModel(name=arch, module=module, params=variables, representation_dim=fns.dim,
                       input_shape=shape, preprocess=spec.preprocess,
                       encode_fn=_checked_encode(fns.encode, shape, arch), head_fn=head_fn,
                       encode_text_fn=encode_text_fn, config=dict(config), notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# Disk format

class ModelDirError(ValueError):
    """A model directory is damaged: a file is missing, truncated or unreadable."""


def save(arch: str, config: Mapping[str, Any], variables, out_dir: str, notes=(),
         overwrite: bool = False) -> str:
    """Write a converted model to `out_dir` (see module docstring); returns the absolute path.

    `variables` must match the abstract variables of `arch` with `config` exactly (structure,
    shapes, float32 dtype); anything else is a ValueError naming the leaf. A non-empty `out_dir`
    is refused unless `overwrite` (`--overwrite` on the command line). The model is written to
    a temporary sibling directory and moved into place, so a failure leaves no partial model.
    """
    import orbax.checkpoint as ocp

    _, abstract = init_abstract(arch, config)
    check_variables(variables, abstract)
    out_dir = os.path.abspath(out_dir)
    check_out_dir(out_dir, overwrite=overwrite)
    with atomic_directory(out_dir) as tmp_dir:
        os.makedirs(tmp_dir)
        tree = jax.tree_util.tree_map(lambda a: np.asarray(a), variables)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.join(tmp_dir, VARIABLES_DIR), tree)
            checkpointer.wait_until_finished()
        meta = {"format": FORMAT_VERSION, "arch": arch, "config": dict(config), "notes": list(notes)}
        with open(os.path.join(tmp_dir, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2)
    return out_dir


def check_out_dir(out_dir: str, *, overwrite: bool) -> None:
    """Refuse an `out_dir` that is a file, or a non-empty directory unless `overwrite`."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"out_dir {out_dir!r} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"out_dir {out_dir!r} exists and is not empty (pass --overwrite to replace it)")


def check_variables(variables, abstract) -> None:
    """Raise ValueError naming the first leaf whose path, shape or dtype differs."""
    got = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(variables)}
    want = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(abstract)}
    for key in sorted(set(want) - set(got)):
        raise ValueError(f"variables are missing leaf {key} (shape {want[key].shape})")
    for key in sorted(set(got) - set(want)):
        raise ValueError(f"variables have unexpected leaf {key}")
    for key, ref in want.items():
        leaf = got[key]
        if tuple(np.shape(leaf)) != tuple(ref.shape):
            raise ValueError(f"leaf {key} has shape {tuple(np.shape(leaf))}, expected {tuple(ref.shape)}")
        if np.asarray(leaf).dtype != ref.dtype:
            raise ValueError(f"leaf {key} has dtype {np.asarray(leaf).dtype}, expected {ref.dtype}")


def read_metadata(directory: str) -> dict:
    """model.json of a model directory; ModelDirError naming the file if it is missing or broken."""
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model directory {directory!r} has no {METADATA_FILE}: is it the "
                                f"out_dir of `cocoa-jax convert`?")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} is not valid JSON "
                            f"(truncated or damaged: {type(err).__name__} at {getattr(err, 'pos', '?')}); "
                            f"re-run `cocoa-jax convert`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} has format {found!r}, "
                            f"expected {FORMAT_VERSION}")
    for field in ("arch", "config"):
        if field not in meta:
            raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} lacks the field {field!r}")
    return meta


# Files every orbax checkpoint directory has; checked first so a missing one is named plainly.
_CHECKPOINT_FILES = ("_METADATA", "manifest.ocdbt")


class _DropAbslNotice(logging.Filter):
    """Hides orbax's notice that size logging is off for `primary_host=None` (expected here)."""

    def filter(self, record):
        return "primary_host=None" not in record.getMessage()


def restore_host_local(checkpoint_dir: str, abstract=None):
    """An orbax checkpoint restored by THIS process alone, every leaf a host `np.ndarray`.

    Why: orbax's default restore is collective (barriers over every process, arrays placed
    with the topology they were saved with), so under `jax.distributed` it hangs or fails on
    another topology. Here this process is orbax's only participant and no device is touched:
    the same in one process and in each process of any job. The on-disk format is unchanged.
    abstract: the expected tree (leaves with shape/dtype; restored leaves take its dtypes), or
    None for the checkpoint's own tree.
    """
    import orbax.checkpoint as ocp

    alone = ocp.options.MultiprocessingOptions(primary_host=None, active_processes={jax.process_index()})
    notice = _DropAbslNotice()
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(notice)
    try:
        handler = ocp.PyTreeCheckpointHandler(multiprocessing_options=alone)
        with ocp.Checkpointer(handler, multiprocessing_options=alone) as checkpointer:
            if abstract is None:
                abstract = checkpointer.metadata(checkpoint_dir).item_metadata.tree
                restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
            else:
                restore_args = jax.tree_util.tree_map(
                    lambda leaf: ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype), abstract)
            return checkpointer.restore(checkpoint_dir,
                                        args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args))
    finally:
        absl_logger.removeFilter(notice)


def restore_variables(checkpoint_dir: str, abstract, directory: str):
    """Restore a model's checkpoint against `abstract` (host-local, see `restore_host_local`).

    ModelDirError names what is missing or broken. A JAX runtime error (e.g. a failing
    `jax.distributed` job) is re-raised as it is: it says nothing about the directory.
    """
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"model directory {directory!r} has no checkpoint folder "
                                f"{os.path.relpath(checkpoint_dir, directory)!r}")
    for name in _CHECKPOINT_FILES:
        if not os.path.isfile(os.path.join(checkpoint_dir, name)):
            raise ModelDirError(f"model directory {directory!r}: checkpoint file "
                                f"{os.path.relpath(os.path.join(checkpoint_dir, name), directory)!r} is missing")
    try:
        host = restore_host_local(checkpoint_dir, abstract)
    except jax.errors.JaxRuntimeError:
        raise
    except Exception as err:  # orbax/tensorstore raise many types with multi-line dumps
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelDirError(f"model directory {directory!r}: the checkpoint in "
                            f"{os.path.relpath(checkpoint_dir, directory) or '.'!r} could not be restored "
                            f"(files missing or damaged: {type(err).__name__}: {first})") from None
    # On this process's default device (as before); `sharding.global_array` places them on a mesh.
    return jax.tree_util.tree_map(jnp.asarray, host)


def _is_bare_checkpoint(directory: str) -> bool:
    """A bare orbax checkpoint (what `cocoa-jax train-digits` writes), not a model directory."""
    return (not os.path.exists(os.path.join(directory, METADATA_FILE))
            and os.path.exists(os.path.join(directory, "_CHECKPOINT_METADATA")))


def load(arch: str, directory: Optional[str] = None) -> LoadedModel:
    """Restore a model (no torch needed).

    arch: one of `list_architectures()`; must match the arch recorded at conversion.
    directory: the `out_dir` given to `cocoa-jax convert`. For shipped models ("digits") it is
      optional and defaults to the checkpoint inside the package; for "digits" it may also be
      a checkpoint written by `cocoa-jax train-digits --out DIR`.
    Raises ValueError for an unknown arch, FileNotFoundError for a missing directory or file,
    and `ModelDirError` (a ValueError) naming the broken file of a damaged directory.
    """
    spec = _spec(arch)
    if directory is None:
        if spec.default_dir is None:
            raise ValueError(f"directory is required for arch {arch!r}: the out_dir of "
                             f"`cocoa-jax convert {arch} CHECKPOINT OUT_DIR`")
        directory = spec.default_dir
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        hint = ("run `cocoa-jax train-digits` to create it" if spec.default_dir is not None
                else f"the out_dir of `cocoa-jax convert {arch} CHECKPOINT OUT_DIR`")
        raise FileNotFoundError(f"model directory {directory!r} does not exist ({hint})")
    if spec.default_dir is not None and _is_bare_checkpoint(directory):
        config, notes, checkpoint_dir = dict(spec.default_config), (), directory
    else:
        meta = read_metadata(directory)
        if meta["arch"] != arch:
            raise ValueError(f"arch {arch!r} does not match the converted model in {directory!r} "
                             f"({meta['arch']!r})")
        config, notes = meta["config"], tuple(meta.get("notes", ()))
        checkpoint_dir = os.path.join(directory, VARIABLES_DIR)
    try:
        _, abstract = init_abstract(arch, config)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} has an invalid config "
                            f"for {arch!r} ({type(err).__name__}: {err})") from None
    variables = restore_variables(checkpoint_dir, abstract, directory)
    if SIMCLR_HEAD_BIAS_NOTE in notes:
        warnings.warn(SIMCLR_HEAD_BIAS_NOTE, stacklevel=2)
    return make_loaded(arch, config, variables, notes)
