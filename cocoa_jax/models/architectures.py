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

from cocoa_jax.attribution_methods import token_drop
from cocoa_jax.models import bert
from cocoa_jax.models import digits_vit
from cocoa_jax.models import naflex
from cocoa_jax.models import siglip
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
    trained_by: for a shipped model, the command that trains its weights into a directory.
    input_range: (low, high) per channel of what `encode_fn` takes: pixels in [0, 1] for every
      architecture (the mean/std of `preprocess` is applied inside); encode refuses concrete
      inputs outside it (`check_images`).
    network_input_range: the same for the raw network (`network_fn`, the expert path): [0, 1]
      pixels through `preprocess.normalize`, ((0 - mean) / std, (1 - mean) / std).
    images: False for a text-only encoder (`sentence_bert`): no image input, `encode` refuses.
    tokenizer: (config, model directory) -> the model's tokenizer, or None (CLIP: its BPE).
    joint_text: an image-text dual encoder whose text tower maps into the image representation
      space (`encode_text` and `encode` give vectors of one space: CLIP, SigLIP), so captions can be
      the corpus or foil of images and images those of captions (cross-modal COCOA); front ends
      read this flag, never the architecture's name.
    """

    name: str
    description: str
    default_config: Mapping[str, Any]
    build: Callable[[Mapping[str, Any]], Any]            # config -> Flax module
    input_shape: Callable[[Mapping[str, Any]], Tuple[int, int, int]]
    preprocess: Optional[pp.Preprocessing]
    any_size: bool = True
    default_dir: Optional[str] = None
    trained_by: Optional[str] = None
    channels: int = 3
    init: Callable[[Any, Mapping[str, Any], Tuple[int, int, int]], Any] = None  # see _init_image
    encoders: Callable[[Any, Mapping[str, Any]], "Encoders"] = None             # see _image_encoders
    images: bool = True
    tokenizer: Optional[Callable[[Mapping[str, Any], Optional[str]], Any]] = None
    joint_text: bool = False
    # config -> the preprocessing, where it depends on the checkpoint (NaFlex: patch size, budget);
    # None: `preprocess` (at the native size).
    preprocess_for: Optional[Callable[[Mapping[str, Any]], pp.Preprocessing]] = None

    def __post_init__(self):
        if self.init is None:
            object.__setattr__(self, "init", _init_image)
        if self.encoders is None:
            object.__setattr__(self, "encoders", _image_encoders)

    @property
    def text_tower(self) -> bool:
        """Has a text encoder (`encode_text`): a dual encoder (`joint_text`) or a text-only one."""
        return self.joint_text or not self.images

    @property
    def input_range(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        return (0.0,) * self.channels, (1.0,) * self.channels

    @property
    def network_input_range(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        return pp.value_range(self.preprocess, self.channels)


@dataclasses.dataclass(frozen=True)
class Encoders:
    """The raw (unchecked) pure functions of one architecture; `make_loaded` adds the checks.

    encode(params, x) -> (N, dim), or None for a text-only encoder; head(params, reps) -> logits
    or None; text(params, tokens) -> (N, dim) or None, with tokens up to `context_length` long.
    Text in token-embedding space (what gradient methods attribute over): embed_tokens(params,
    ids (N, L)) -> (N, L, E); encode_embeddings(params, embeddings (N, L, E), mask (N, L)) ->
    (N, dim), positions added inside, mask 0 = the token is neither attended to nor pooled."""

    encode: Optional[Callable[[Any, jax.Array], jax.Array]]
    dim: int
    head: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    text: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    context_length: Optional[int] = None
    tokens: Optional[token_drop.TokenAccess] = None  # ViTs: kept-token encode and attention maps (raw input)
    # Model modes a method may ask for (`Method.model_mode`): {"lrp": encode with the AttnLRP rules' backward
    # (ViTs)}, {"relevance": encode whose input gradient is the LRP relevance (ResNets, the `lrp` method)}.
    modes: Mapping[str, Callable[[Any, jax.Array], jax.Array]] = dataclasses.field(default_factory=dict)
    embed_tokens: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    encode_embeddings: Optional[Callable[[Any, jax.Array, jax.Array], jax.Array]] = None


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


def _attention_stack(state) -> jax.Array:
    """The sown attention weights of every block, in block order: (layers, N, heads, L, L)."""
    found = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state["intermediates"]):
        names = [str(getattr(part, "key", "")) for part in path]
        block = next(name for name in reversed(names) if name.rsplit("_", 1)[-1].isdigit())
        found.append((int(block.rsplit("_", 1)[-1]), leaf))
    return jnp.stack([leaf for _, leaf in sorted(found, key=lambda item: item[0])])


def _token_access(module, patch_size: int, prefix: int, method=None) -> token_drop.TokenAccess:
    """Kept-token encode and attention maps of a ViT module (`keep` its second argument)."""
    def encode(params, x, keep, valid=None):
        return module.apply(params, x, keep, valid, method=method)

    def attention(params, x):
        return _attention_stack(module.apply(params, x, method=method, mutable=["intermediates"])[1])

    return token_drop.TokenAccess(encode, attention, patch_size, prefix)


def _vit_encoders(module, config) -> Encoders:
    lrp = module.clone(lrp=True)
    return dataclasses.replace(_image_encoders(module, config), tokens=_token_access(
        module, int(config["patch_size"]), 1 + int(config.get("num_register_tokens", 0))),
        modes={"lrp": lambda params, x: lrp.apply(params, x)})


def _init_clip(module, config, shape):
    tokens = jnp.zeros((1, config["context_length"]), jnp.int32)
    return module.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32), tokens, method="init_all")


def _clip_encoders(module, config) -> Encoders:
    lrp = module.clone(lrp=True)
    return Encoders(lambda params, x: module.apply(params, x, method="encode_image"), int(config["embed_dim"]),
                    text=lambda params, tokens: module.apply(params, tokens, method="encode_text"),
                    context_length=int(config["context_length"]),
                    tokens=_token_access(module, int(config["vision_patch_size"]), 1, method="encode_image"),
                    modes={"lrp": lambda params, x: lrp.apply(params, x, method="encode_image")})


def _init_sentence_bert(module, config, shape):
    return module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))


def _sentence_bert_encoders(module, config) -> Encoders:
    return Encoders(None, module.config.dim,
                    text=lambda params, ids: module.apply(params, ids, method="encode_text"),
                    context_length=int(config["context_length"]),
                    embed_tokens=lambda params, ids: module.apply(params, ids, method="embed_tokens"),
                    encode_embeddings=lambda params, words, mask: module.apply(params, words, mask,
                                                                               method="encode_embeddings"))


def _sentence_bert_tokenizer(config, directory):
    """The converted model's tokenizer.json (copied there by `cocoa-jax convert sentence_bert|siglip`)."""
    import os

    from cocoa_jax.models.text_tokenizers import TOKENIZER_FILE, TextTokenizer

    if directory is None or config.get("pad_token") is None:
        raise ValueError("this model has no tokenizer.json (or no directory to read it from): load it with "
                         "cocoa_jax.models.load(ARCH, OUT_DIR) from a conversion that had one, or pass token ids")
    return TextTokenizer.from_file(os.path.join(directory, TOKENIZER_FILE), context_length=int(config["context_length"]),
                                   pad_token=config["pad_token"], lowercase=bool(config.get("lowercase", False)))


def _build_siglip(config):
    fields = {f.name for f in dataclasses.fields(siglip.SiglipConfig)}
    return siglip.SigLIP(siglip.SiglipConfig(**{k: v for k, v in config.items() if k in fields}))


def _init_siglip(module, config, shape):
    ids = jnp.zeros((1, int(config["context_length"])), jnp.int32)
    return module.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32), ids, method="init_all")


def _siglip_encoders(module, config) -> Encoders:
    lrp = module.clone(lrp=True)
    return Encoders(lambda params, x: module.apply(params, x, method="encode_image"), int(config["vision_width"]),
                    modes={"lrp": lambda params, x: lrp.apply(params, x, method="encode_image")},
                    text=lambda params, ids: module.apply(params, ids, method="encode_text"),
                    context_length=int(config["context_length"]),
                    embed_tokens=lambda params, ids: module.apply(params, ids, method="embed_tokens"),
                    encode_embeddings=lambda params, words, mask: module.apply(params, words, mask,
                                                                               method="encode_embeddings"))


def _build_siglip2_naflex(config):
    return _build_siglip({**config, "naflex": True})


def _build_siglip2_naflex_vision(config):
    return _build_siglip({**config, "naflex": True, "text_tower": False})


def _siglip_image_encoders(module, config) -> Encoders:
    """An image tower alone (`text_tower=False`): encode and its AttnLRP mode."""
    lrp = module.clone(lrp=True)
    return Encoders(lambda params, x: module.apply(params, x, method="encode_image"), int(config["vision_width"]),
                    modes={"lrp": lambda params, x: lrp.apply(params, x, method="encode_image")})


def _naflex_preprocess(config):
    return naflex.preprocessing(int(config["patch_size"]), int(config["max_num_patches"]))


def _naflex_input_shape(config):
    side = naflex.default_side(int(config["patch_size"]), int(config["max_num_patches"]))
    return (side, side, 3)


def _init_digits(module, config, shape):
    # Only the encoder's inference variables (training adds nothing else to restore).
    return dict(small_resnet.init_variables(module, jax.random.key(0), shape))


def _digits_encoders(module, config) -> Encoders:
    """The digits encoder with its "relevance" mode (`SmallResNet(lrp=True)`, as the ResNets')."""
    return Encoders(small_resnet.encode_fn_for(module), module.representation_dim,
                    modes={"relevance": small_resnet.encode_fn_for(module.clone(lrp=True))})


def _resnet_encoders(module, config) -> Encoders:
    """A ResNet's encoders with its "relevance" mode (`resnet.ResNet(lrp=True)`: zennit's
    EpsilonPlusFlat backward, whose input gradient is the LRP relevance; the `lrp` method)."""
    lrp = module.clone(lrp=True)
    return dataclasses.replace(_image_encoders(module, config),
                               modes={"relevance": lambda params, x: lrp.apply(params, x)})


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
        _build_resnet, lambda c: (224, 224, 3), pp.IMAGENET, encoders=_resnet_encoders)


def _build_clip(config):
    return CLIP(ClipConfig(**config))


def _build_sentence_bert(config):
    return bert.SentenceBert(bert.config_from_dict(config))


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
        _build_resnet, lambda c: (224, 224, 3), pp.IMAGENET_RAW, encoders=_resnet_encoders),
    "simsiam_cifar_resnet18": ArchSpec(
        "simsiam_cifar_resnet18", "SimSiam CIFAR-10 ResNet-18 (3x3 stem, no max-pool); 512-d; head 512->10",
        {"block": "basic", "stage_sizes": [2, 2, 2, 2], "stem": "cifar", "num_classes": 10},
        _build_resnet, lambda c: (32, 32, 3), pp.CIFAR, encoders=_resnet_encoders),
    "resnet18_classifier": ArchSpec(
        "resnet18_classifier", "torchvision ResNet-18 classifier (the paper's MURA model); 512-d; head 512->2",
        {"block": "basic", "stage_sizes": [2, 2, 2, 2], "stem": "imagenet", "num_classes": 2},
        _build_resnet, lambda c: (224, 224, 3), pp.IMAGENET, encoders=_resnet_encoders),
    "clip_vit_b32": ArchSpec(
        "clip_vit_b32", "CLIP ViT-B/32 image + text encoders; 512-d joint embedding",
        dataclasses.asdict(ClipConfig()),
        _build_clip, lambda c: (c["image_resolution"], c["image_resolution"], 3), pp.CLIP, any_size=False,
        init=_init_clip, encoders=_clip_encoders, joint_text=True),
    "resnet18": _torchvision_resnet("resnet18", "basic", (2, 2, 2, 2), 512),
    "resnet34": _torchvision_resnet("resnet34", "basic", (3, 4, 6, 3), 512),
    "resnet50": _torchvision_resnet("resnet50", "bottleneck", (3, 4, 6, 3), 2048),
    "resnet101": _torchvision_resnet("resnet101", "bottleneck", (3, 4, 23, 3), 2048),
    "resnet152": _torchvision_resnet("resnet152", "bottleneck", (3, 8, 36, 3), 2048),
    "dino_vit": ArchSpec(
        "dino_vit", "DINO ViT (facebookresearch/dino; S/B, patch 8/16, size read from the checkpoint); "
                    "class token after the final norm",
        {**vit.DEFAULT_CONFIG, "patch_size": 16, "pos_grid": 14, "layer_scale": False},
        _build_vit, _vit_input_shape, pp.IMAGENET_BICUBIC, encoders=_vit_encoders),
    "dinov2_vit": ArchSpec(
        "dinov2_vit", "DINOv2 ViT (facebookresearch/dinov2; S/B/L/g, patch 14, with or without registers); "
                      "class token after the final norm",
        dict(vit.DEFAULT_CONFIG), _build_vit, _vit_input_shape, pp.IMAGENET_BICUBIC, encoders=_vit_encoders),
    "clip_vit": ArchSpec(
        "clip_vit", "CLIP ViT of any size (OpenAI or open_clip; B/32, B/16, L/14, L/14@336 ...) image + text "
                    "encoders; joint embedding",
        dataclasses.asdict(ClipConfig()),
        _build_clip, lambda c: (c["image_resolution"], c["image_resolution"], 3), pp.CLIP, any_size=False,
        init=_init_clip, encoders=_clip_encoders, joint_text=True),
    "sentence_bert": ArchSpec(
        "sentence_bert", "BERT-family sentence encoder as sentence-transformers packs it (all-MiniLM, BGE, E5, "
                         "GTE; XLM-RoBERTa layout): BertModel, pooling (mean/CLS/max ...), optional L2 "
                         "normalisation; text only",
        dataclasses.asdict(bert.BertConfig()), _build_sentence_bert, lambda c: (), None, any_size=False,
        init=_init_sentence_bert, encoders=_sentence_bert_encoders, images=False,
        tokenizer=_sentence_bert_tokenizer),
    "siglip": ArchSpec(
        "siglip", "SigLIP (Hugging Face SiglipModel layout, any size) image tower (MAP head; its width is "
                  "the image representation) + text tower (last position, head); mean = std = 0.5",
        dataclasses.asdict(siglip.SiglipConfig()), _build_siglip, lambda c: (c["image_size"], c["image_size"], 3),
        pp.Preprocessing(resize=224, crop=224, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3),
        any_size=False, init=_init_siglip, encoders=_siglip_encoders, tokenizer=_sentence_bert_tokenizer,
        joint_text=True),
    "siglip2_naflex": ArchSpec(
        "siglip2_naflex", "SigLIP 2 NaFlex (Hugging Face Siglip2Model layout): SigLIP's towers, the image tower at "
                          "any patch grid (H, W multiples of the patch; positions resized, bilinear antialiased); "
                          "one size per call; preprocess keeps the aspect ratio within max_num_patches",
        {**dataclasses.asdict(siglip.SiglipConfig(patch_size=16, image_size=256)), "naflex": True},
        _build_siglip2_naflex, _naflex_input_shape, naflex.preprocessing(16, 256), any_size=True,
        init=_init_siglip, encoders=_siglip_encoders, tokenizer=_sentence_bert_tokenizer, joint_text=True,
        preprocess_for=_naflex_preprocess),
    "siglip2_naflex_vision": ArchSpec(
        "siglip2_naflex_vision", "SigLIP 2 NaFlex image tower alone (Hugging Face Siglip2VisionModel layout): "
                                 "as siglip2_naflex, no text tower",
        {**dataclasses.asdict(siglip.SiglipConfig(patch_size=16, image_size=256)), "naflex": True, "text_tower": False},
        _build_siglip2_naflex_vision, _naflex_input_shape, naflex.preprocessing(16, 256), any_size=True,
        encoders=_siglip_image_encoders, preprocess_for=_naflex_preprocess),
    DIGITS: ArchSpec(
        DIGITS, "SimCLR SmallResNet on scikit-learn digits (shipped); 128-d; 32x32x1 in [0, 1]",
        DIGITS_CONFIG, _build_digits, lambda c: small_resnet.INPUT_SHAPE, None,
        default_dir=small_resnet.WEIGHTS_DIR, channels=small_resnet.INPUT_SHAPE[-1],
        init=_init_digits, encoders=_digits_encoders, trained_by="cocoa-jax train-digits --out DIR"),
    "digits_vit": ArchSpec(
        "digits_vit", "tiny ViT (4 blocks, 64 wide, 4 px patches) trained with SimCLR on scikit-learn digits "
                      "(shipped; the trained model of AttnLRP, rollout and token drop); 64-d; 32x32x1 in [0, 1]",
        dict(digits_vit.CONFIG), _build_vit, digits_vit.input_shape, None, any_size=False,
        default_dir=digits_vit.WEIGHTS_DIR, channels=digits_vit.INPUT_SHAPE[-1], encoders=_vit_encoders,
        trained_by="python -m cocoa_jax.training.digits_vit --out DIR"),
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
