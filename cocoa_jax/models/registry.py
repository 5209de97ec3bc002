"""Architectures cocoa-jax can load, the `LoadedModel` they load into, and the on-disk format.

A converted model is a directory:
  OUT_DIR/model.json   {"format": 1, "arch": ..., "config": {...}, "notes": [...]} (human-readable)
  OUT_DIR/variables/   orbax checkpoint of the Flax variables ({"params": ..., ["batch_stats": ...]})

`load(arch, OUT_DIR)` rebuilds the Flax module from `config`, restores the variables against its
abstract shapes (so a wrong file fails loudly) and needs neither torch nor the original checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import warnings
from typing import Any, Callable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.models import preprocessing as pp
from cocoa_jax.models.clip import CLIP, ClipConfig
from cocoa_jax.models.resnet import ResNet

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
      encode_fn: pure `encode_fn(params, x (N, H, W, C) float32) -> (N, D)`; jit it with
        params as an argument to avoid baking weights into the program as constants.
      head_fn: pure `head_fn(params, reps (N, D)) -> (N, num_classes)`, or None.
      encode_text_fn: CLIP only: pure `encode_text_fn(params, tokens (N, 77) int32) -> (N, D)`.
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
        """(N, H, W, C) float32 -> (N, D) with this model's params (jit-compiled, cached)."""
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 4 or x.shape[-1] != self.input_shape[-1]:
            raise ValueError(f"x must have shape (N, H, W, {self.input_shape[-1]}) "
                             f"(native {self.input_shape}), got {tuple(x.shape)}")
        if self.encode_text_fn is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            # A ViT's positional embedding fixes the resolution (ResNets pool any size).
            raise ValueError(f"x must have shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        return _jit(self.encode_fn)(self.params, x)

    def head(self, reps) -> jax.Array:
        """(N, D) representations -> (N, num_classes) logits."""
        if self.head_fn is None:
            raise ValueError(f"model {self.name!r} was converted without a head")
        reps = jnp.asarray(reps, jnp.float32)
        if reps.ndim != 2 or reps.shape[1] != self.representation_dim:
            raise ValueError(f"reps must have shape (N, {self.representation_dim}), got {tuple(reps.shape)}")
        return _jit(self.head_fn)(self.params, reps)

    def encode_text(self, texts_or_tokens, tokenizer=None) -> jax.Array:
        """CLIP only: captions (str or list of str) or (N, context) int token ids -> (N, D)."""
        if self.encode_text_fn is None:
            raise ValueError(f"model {self.name!r} has no text encoder")
        if isinstance(texts_or_tokens, str) or (
                isinstance(texts_or_tokens, (list, tuple)) and texts_or_tokens
                and isinstance(texts_or_tokens[0], str)):
            tokenizer = tokenizer or self.tokenizer()
            tokens = tokenizer(texts_or_tokens, context_length=self.config["context_length"])
        else:
            tokens = np.asarray(texts_or_tokens)
            if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
                raise ValueError(f"tokens must be an (N, context_length) integer array, got "
                                 f"{tokens.dtype} {tokens.shape}")
        return _jit(self.encode_text_fn)(self.params, jnp.asarray(tokens, jnp.int32))

    def tokenizer(self, merges_path: Optional[str] = None):
        """CLIP only: the byte-level BPE tokenizer (see `cocoa_jax.models.tokenizer`)."""
        if self.encode_text_fn is None:
            raise ValueError(f"model {self.name!r} has no text encoder")
        return _cached_tokenizer(merges_path)


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
    """What `load` needs to rebuild an architecture from its stored config."""

    name: str
    description: str
    default_config: Mapping[str, Any]
    build: Callable[[Mapping[str, Any]], Any]            # config -> Flax module
    input_shape: Callable[[Mapping[str, Any]], Tuple[int, int, int]]
    preprocess: Optional[pp.Preprocessing]


def _build_resnet(config):
    return ResNet(block=config["block"], stage_sizes=tuple(config["stage_sizes"]),
                  stem=config["stem"], num_classes=config.get("num_classes"))


def _build_clip(config):
    return CLIP(ClipConfig(**config))


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
        _build_clip, lambda c: (c["image_resolution"], c["image_resolution"], 3), pp.CLIP),
}
CONVERTIBLE = tuple(ARCHITECTURES)
DIGITS = "digits"  # the embedded encoder (cocoa_jax.models.small_resnet); nothing to convert


def list_architectures() -> Tuple[str, ...]:
    return CONVERTIBLE + (DIGITS,)


def _spec(arch: str) -> ArchSpec:
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {list_architectures()}, got {arch!r}")
    return ARCHITECTURES[arch]


def init_abstract(arch: str, config: Mapping[str, Any]):
    """(module, abstract variables) for `config`: shapes/dtypes only, nothing computed."""
    spec = _spec(arch)
    module = spec.build(config)
    h, w, c = spec.input_shape(config)
    image = jnp.zeros((1, h, w, c), jnp.float32)
    if arch == "clip_vit_b32":
        tokens = jnp.zeros((1, config["context_length"]), jnp.int32)
        init = lambda: module.init(jax.random.key(0), image, tokens, method="init_all")
    else:
        init = lambda: module.init(jax.random.key(0), image, method="init_all")
    return module, jax.eval_shape(init)


def make_loaded(arch: str, config: Mapping[str, Any], variables, notes=()) -> LoadedModel:
    """Wrap module + variables of `arch` as a `LoadedModel`."""
    spec = _spec(arch)
    module = spec.build(config)
    head_fn = encode_text_fn = None
    if arch == "clip_vit_b32":
        encode_fn = lambda params, x: module.apply(params, x, method="encode_image")
        encode_text_fn = lambda params, tokens: module.apply(params, tokens, method="encode_text")
        rep_dim = int(config["embed_dim"])
    else:
        encode_fn = lambda params, x: module.apply(params, x)
        if config.get("num_classes") is not None:
            head_fn = lambda params, reps: module.apply(params, reps, method="head")
        rep_dim = module.representation_dim
    return LoadedModel(name=arch, module=module, params=variables, representation_dim=rep_dim,
                       input_shape=tuple(spec.input_shape(config)), preprocess=spec.preprocess,
                       encode_fn=encode_fn, head_fn=head_fn, encode_text_fn=encode_text_fn,
                       config=dict(config), notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# Disk format

def save(arch: str, config: Mapping[str, Any], variables, out_dir: str, notes=(),
         overwrite: bool = False) -> str:
    """Write a converted model to `out_dir` (see module docstring); returns the absolute path.

    `variables` must match the abstract variables of `arch` with `config` exactly (structure,
    shapes, float32 dtype); anything else is a ValueError naming the leaf.
    """
    import orbax.checkpoint as ocp

    _, abstract = init_abstract(arch, config)
    check_variables(variables, abstract)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        if not overwrite and os.listdir(out_dir):
            raise FileExistsError(f"out_dir {out_dir!r} exists and is not empty (use overwrite=True)")
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    tree = jax.tree_util.tree_map(lambda a: np.asarray(a), variables)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(out_dir, VARIABLES_DIR), tree)
        checkpointer.wait_until_finished()
    meta = {"format": FORMAT_VERSION, "arch": arch, "config": dict(config), "notes": list(notes)}
    with open(os.path.join(out_dir, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return out_dir


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
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} not found: is {directory!r} the out_dir of `cocoa-jax convert`?")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path!r} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return meta


def load(arch: str, directory: Optional[str] = None) -> LoadedModel:
    """Restore a converted model (no torch needed).

    arch: one of `list_architectures()`; must match the arch recorded at conversion.
    directory: the `out_dir` given to `cocoa-jax convert`. For "digits" (the embedded encoder)
      it is optional and defaults to the checkpoint shipped in the package.
    """
    if arch == DIGITS:
        return _load_digits(directory)
    _spec(arch)
    if directory is None:
        raise ValueError(f"directory is required for arch {arch!r}: the out_dir of "
                         f"`cocoa-jax convert {arch} CHECKPOINT OUT_DIR`")
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    meta = read_metadata(directory)
    if meta["arch"] != arch:
        raise ValueError(f"arch {arch!r} does not match the converted model in {directory!r} "
                         f"({meta['arch']!r})")
    config = meta["config"]
    _, abstract = init_abstract(arch, config)
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(os.path.join(directory, VARIABLES_DIR), abstract)
    notes = tuple(meta.get("notes", ()))
    if SIMCLR_HEAD_BIAS_NOTE in notes:
        warnings.warn(SIMCLR_HEAD_BIAS_NOTE, stacklevel=2)
    return make_loaded(arch, config, variables, notes)


def _load_digits(directory: Optional[str]) -> LoadedModel:
    """The embedded digits encoder, re-wrapped as a `LoadedModel` when it is not one already."""
    from cocoa_jax.models import small_resnet  # imported lazily: it belongs to the demo

    encoder = small_resnet.load_digits_encoder(directory) if directory else small_resnet.load_digits_encoder()
    if isinstance(encoder, LoadedModel):
        return encoder
    return LoadedModel(name=DIGITS, module=encoder.module, params=encoder.params,
                       representation_dim=int(encoder.representation_dim),
                       input_shape=tuple(encoder.input_shape), preprocess=None,
                       encode_fn=encoder.encode_fn)
