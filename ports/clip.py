"""Converter for CLIP ViTs (openai/CLIP layout): state_dict or TorchScript archive, fp16 or fp32.

The model's hyper-parameters are read off the tensor shapes (as openai's `build_model` does),
so every ViT size converts (B/32, B/16, L/14, L/14@336, ...), into `clip_vit` (or the older name
`clip_vit_b32`, which records any size too). open_clip's standard ViT CLIPs share the layout:
its `open_clip_pytorch_model.bin` state dicts and its training checkpoints
({'epoch', 'name', 'state_dict': module.*}) convert. Two things are not in the weights and are
options: `activation` ("quick_gelu", OpenAI's and open_clip's "*-quickgelu" models; "gelu", every
other open_clip model) and `vision_head_width` (64; open_clip's ViT-H-14 80, ViT-g-14 88,
ViT-bigG-14 104). A TorchScript archive is OpenAI's own release, so QuickGELU for sure; for a
state dict without `activation`, QuickGELU is assumed and a note says so.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Tuple

from cocoa_jax import models
from cocoa_jax.models.clip import ACTIVATIONS, HEAD_WIDTH, ClipConfig
from .common import (CheckpointMismatchError, conv_kernel, extract_state_dict, fill_variables,
                     identity, is_torchscript_archive, linear_kernel, load_checkpoint)

# Scalars the TorchScript archive carries beside the weights; checked against the shapes.
_ARCHIVE_SCALARS = ("input_resolution", "context_length", "vocab_size")
_RAW_PARAMS = {"class_embedding", "positional_embedding", "proj", "text_projection", "logit_scale"}


def _count_layers(state_dict: Mapping, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"resblocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    if indices != set(range(len(indices))):
        raise CheckpointMismatchError(f"{prefix}resblocks indices are not contiguous: {sorted(indices)}")
    return len(indices)


def infer_config(state_dict: Mapping) -> ClipConfig:
    """ClipConfig from tensor shapes; CheckpointMismatchError naming the key it needed."""
    def shape(key):
        if key not in state_dict:
            raise CheckpointMismatchError(f"CLIP checkpoint: missing key {key!r}")
        return tuple(state_dict[key].shape)

    if "visual.layer1.0.conv1.weight" in state_dict or "visual.attnpool.c_proj.weight" in state_dict:
        raise CheckpointMismatchError("this is a CLIP ResNet (ModifiedResNet) checkpoint; only ViT CLIPs "
                                      "are supported")
    vision_width, _, patch, _ = shape("visual.conv1.weight")
    n_positions = shape("visual.positional_embedding")[0]
    grid = round((n_positions - 1) ** 0.5)
    if grid * grid + 1 != n_positions:
        raise CheckpointMismatchError(f"visual.positional_embedding has {n_positions} rows, not grid^2 + 1")
    config = ClipConfig(
        embed_dim=shape("text_projection")[1], image_resolution=patch * grid,
        vision_layers=_count_layers(state_dict, "visual.transformer."), vision_width=vision_width,
        vision_patch_size=patch, context_length=shape("positional_embedding")[0],
        vocab_size=shape("token_embedding.weight")[0], transformer_width=shape("ln_final.weight")[0],
        transformer_layers=_count_layers(state_dict, "transformer."))
    width = config.transformer_width  # the image tower's head width is an option (checked by the caller)
    if width % HEAD_WIDTH and width > HEAD_WIDTH:
        raise CheckpointMismatchError(f"text width {width} is not a multiple of {HEAD_WIDTH} (CLIP's head size)")
    for name in _ARCHIVE_SCALARS:
        if name in state_dict:
            stored = int(state_dict[name])
            expected = {"input_resolution": config.image_resolution,
                        "context_length": config.context_length, "vocab_size": config.vocab_size}[name]
            if stored != expected:
                raise CheckpointMismatchError(f"CLIP checkpoint: {name!r} = {stored} but the weights imply {expected}")
    return config


def clip_key(path: Tuple[str, ...], shape: Tuple[int, ...]):
    """Flax path of `cocoa_jax.models.clip.CLIP` -> (openai state-dict key, layout transform)."""
    _, tower, *rest = path  # ('params', 'visual'|'text'|'logit_scale', ...)
    if tower == "logit_scale":
        return "logit_scale", identity
    prefix = ["visual"] if tower == "visual" else []  # the text tower's keys are top-level
    *modules, leaf = rest
    parts = [re.sub(r"^resblocks_(\d+)$", r"resblocks.\1", m) for m in modules]
    if leaf in _RAW_PARAMS and not modules:
        return ".".join(prefix + [leaf]), identity  # stored as used: x @ proj, + embedding
    if modules and modules[-1] == "in_proj":  # MultiheadAttention's fused q/k/v projection
        name = "in_proj_weight" if leaf == "kernel" else "in_proj_bias"
        return ".".join(prefix + parts[:-1] + [name]), linear_kernel if leaf == "kernel" else identity
    if leaf == "kernel":
        return ".".join(prefix + parts + ["weight"]), conv_kernel if len(shape) == 4 else linear_kernel
    leaf_name = {"scale": "weight", "bias": "bias", "embedding": "weight"}[leaf]
    return ".".join(prefix + parts + [leaf_name]), identity


def convert_state_dict(state_dict: Mapping, *, what: str = "CLIP checkpoint", activation: str = "quick_gelu",
                       vision_head_width: int = HEAD_WIDTH, arch: str = "clip_vit", stored_key=None):
    """openai CLIP state dict -> (config dict, Flax variables)."""
    config = dataclasses.replace(infer_config(state_dict), activation=activation,
                                 vision_head_width=int(vision_head_width))
    if config.vision_width % config.vision_head_width and config.vision_width > config.vision_head_width:
        raise CheckpointMismatchError(f"{what}: visual width {config.vision_width} is not a multiple of "
                                      f"vision_head_width {config.vision_head_width} (open_clip ViT-H-14: "
                                      f"--option vision_head_width=80, ViT-g-14: 88, ViT-bigG-14: 104)")
    config = dataclasses.asdict(config)
    _, abstract = models.init_abstract(arch, config)
    variables = fill_variables(abstract, state_dict, clip_key, ignore=_ARCHIVE_SCALARS, what=what, stored_key=stored_key)
    return config, variables


def _converter(arch: str):
    def convert(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False, overwrite=False,
                activation=None, vision_head_width=None) -> str:
        """OpenAI `ViT-*.pt` (TorchScript archive, as `clip.load` caches it), a CLIP state dict or an
        open_clip state dict / training checkpoint -> `out_dir`."""
        import torch

        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"option activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        checkpoint = load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle)
        state_dict = extract_state_dict(checkpoint, checkpoint_path)
        notes, stored_key = [], None
        if all(k.startswith("module.") for k in state_dict):  # open_clip (DDP) training checkpoint
            state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
            stored_key = lambda key: "module." + key
            notes.append("stripped the prefix 'module.' (open_clip training checkpoint)")
        if any(v.dtype in (torch.float16, torch.bfloat16) for v in state_dict.values()):
            notes.append("converted from fp16/bf16 (16-bit) weights (widened exactly to float32)")
        if activation is None:
            activation = "quick_gelu"
            if not is_torchscript_archive(checkpoint_path):
                notes.append("activation not given: assumed quick_gelu (OpenAI CLIP); an open_clip model not named "
                             "*-quickgelu was trained with GELU: reconvert with --option activation=gelu")
        config, variables = convert_state_dict(state_dict, what=checkpoint_path, activation=activation,
                                               vision_head_width=vision_head_width or HEAD_WIDTH, arch=arch,
                                               stored_key=stored_key)
        notes.append(f"CLIP ViT-{_size_name(config)}/{config['vision_patch_size']} at {config['image_resolution']} px, "
                     f"{config['embed_dim']}-d, activation {config['activation']}")
        return models.save(arch, config, variables, out_dir, notes=notes, overwrite=overwrite)

    convert.__name__ = f"convert_{arch}"
    return convert


def _size_name(config) -> str:
    return {768: "B", 1024: "L", 1280: "H", 1408: "g", 1664: "bigG"}.get(config["vision_width"],
                                                                         f"w{config['vision_width']}")


convert_clip = _converter("clip_vit_b32")  # the older name, kept: any size
convert_clip_vit = _converter("clip_vit")
OPTIONS = ("activation", "vision_head_width")
