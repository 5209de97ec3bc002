"""The architectures cocoa-jax can load: how to rebuild each one's Flax module from its stored config.

`ARCHITECTURES` maps a name to an `ArchSpec` (builder, input shape, preprocessing, how to
initialise its variables and which pure functions it exposes as `Encoders`). `init_abstract`
gives a config's abstract variables (shapes only). Re-exported by `cocoa_jax.models`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from cocoa_jax.models import preprocessing as pp
from cocoa_jax.models.clip import CLIP, ClipConfig
from cocoa_jax.models import small_resnet
from cocoa_jax.models.resnet import ResNet
from cocoa_jax.models import vit

SIMCLR_HEAD_BIAS_NOTE = (
    "fc.bias comes from tonylins/simclr-converter's resnet50-1x.pth, which stored a randomly "
    "initialised bias instead of the TF linear head's bias: head logits are shifted per class "
    "(the 2048-d representation is unaffected).")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """What `load` needs to rebuild an architecture from its stored config.

    any_size: a convolutional encoder that pools any spatial size (`with_input_shape` allowed).
    default_dir: where `load(name)` finds weights when no directory is given (shipped models).
    input_range: (low, high) per channel of what `encode_fn` takes: pixels in [0, 1] for every
      architecture (the mean/std of `preprocess` is applied inside); encode refuses concrete
      inputs outside it (`check_images`).
    network_input_range: the same for the raw network (`network_fn`, the expert path): [0, 1]
      pixels through `preprocess.normalize`, ((0 - mean) / std, (1 - mean) / std).
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
        return (0.0,) * self.channels, (1.0,) * self.channels

    @property
    def network_input_range(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
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


def list_architectures() -> Tuple[str, ...]:
    return tuple(ARCHITECTURES)


def did_you_mean(arch) -> str:
    """` (did you mean X or Y?)` naming the architectures closest to a mistyped `arch`, or "".

    Names are compared without case, dashes, underscores or spaces (`resnet-18` is resnet18);
    otherwise the close ones by difflib's ratio (at least 0.6), best first, at most three.
    """
    import difflib

    def bare(name):
        return "".join(ch for ch in str(name).lower() if ch not in "-_ ")

    names = {bare(name): name for name in ARCHITECTURES}
    close = [names[bare(arch)]] if bare(arch) in names else [
        names[key] for key in difflib.get_close_matches(bare(arch), list(names), n=3, cutoff=0.6)]
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def spec_of(arch: str) -> ArchSpec:
    """The `ArchSpec` of `arch`; ValueError listing the architectures otherwise."""
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {list_architectures()}, got {arch!r}{did_you_mean(arch)}")
    return ARCHITECTURES[arch]


def init_abstract(arch: str, config: Mapping[str, Any]):
    """(module, abstract variables) for `config`: shapes/dtypes only, nothing computed."""
    spec = spec_of(arch)
    module = spec.build(config)
    shape = tuple(spec.input_shape(config))
    return module, jax.eval_shape(lambda: spec.init(module, config, shape))
