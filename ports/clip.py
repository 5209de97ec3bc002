"""Converter for CLIP ViT (openai/CLIP layout): state_dict or TorchScript archive, fp16 or fp32.

The model's hyper-parameters are read off the tensor shapes (as openai's `build_model` does),
so ViT-B/32 and other ViT CLIPs of the same layout convert; `clip_vit_b32` records them.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Tuple

from cocoa_jax.models import registry
from cocoa_jax.models.clip import HEAD_WIDTH, ClipConfig
from .common import (CheckpointMismatchError, conv_kernel, extract_state_dict, fill_variables,
                          identity, linear_kernel, load_checkpoint)

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
    for width in (config.vision_width, config.transformer_width):
        if width % HEAD_WIDTH and width > HEAD_WIDTH:
            raise CheckpointMismatchError(f"width {width} is not a multiple of {HEAD_WIDTH} (CLIP's head size)")
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


def convert_state_dict(state_dict: Mapping, *, what: str = "CLIP checkpoint"):
    """openai CLIP state dict -> (config dict, Flax variables)."""
    config = dataclasses.asdict(infer_config(state_dict))
    _, abstract = registry.init_abstract("clip_vit_b32", config)
    variables = fill_variables(abstract, state_dict, clip_key, ignore=_ARCHIVE_SCALARS, what=what)
    return config, variables


def convert_clip(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False, overwrite=False) -> str:
    """`ViT-B-32.pt` (TorchScript archive, as `clip.load` caches it) or a CLIP state dict -> `out_dir`."""
    import torch

    checkpoint = load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle)
    state_dict = extract_state_dict(checkpoint, checkpoint_path)
    notes = []
    if any(v.dtype == torch.float16 for v in state_dict.values()):
        notes.append("converted from fp16 weights (widened exactly to float32)")
    config, variables = convert_state_dict(state_dict, what=checkpoint_path)
    if (config["vision_patch_size"], config["vision_width"], config["image_resolution"]) != (32, 768, 224):
        notes.append(f"not ViT-B/32: config {config}")
    return registry.save("clip_vit_b32", config, variables, out_dir, notes=notes, overwrite=overwrite)
