"""Converters for DINO and DINOv2 ViTs (facebookresearch layouts) -> `cocoa_jax.models.vit.ViT`.

The size is read off the tensor shapes (width from `cls_token`, patch from `patch_embed.proj`,
stored grid from `pos_embed`, depth from `blocks.*`, registers from `register_tokens`, LayerScale
from `ls1.gamma`, MLP or SwiGLU FFN and its width); the head count is `embed_dim // 64` (true of
every released DINO/DINOv2 model: S 6, B 12, L 16, g 24), overridable with the option
`num_heads`. Accepted files:
  * backbone state dicts as published (dino_deitsmall16_pretrain.pth, dinov2_vits14_pretrain.pth,
    dinov2_vits14_reg4_pretrain.pth, ...);
  * DINO full checkpoints ({'teacher': backbone.* + head.*, 'student': module.backbone.* ...};
    the teacher is used, as DINO evaluates it) and DINOv2 teacher checkpoints
    ({'teacher': backbone.* + dino_head.* / ibot_head.*}), heads dropped and reported;
  * DINOv2 FSDP block chunks (`blocks.C.I.*` -> `blocks.I.*`).
DINOv2's `mask_token` (masked-image-modelling input, unused at inference) is dropped and reported.
"""
from __future__ import annotations

import re
from typing import Mapping

from cocoa_jax.models import registry
from .common import CheckpointMismatchError, conv_kernel, fill_variables, identity, linear_kernel, load_checkpoint
from .torchvision_resnet import unwrap

HEAD_WIDTH = 64
# (backbone prefix, {dropped prefix: what it is}), most specific first.
_LAYOUTS = (
    ("teacher.backbone.", {"teacher.dino_head.": "DINOv2 head", "teacher.ibot_head.": "iBOT head",
                           "student.": "student network"}),
    ("module.backbone.", {"module.head.": "DINO head"}),
    ("backbone.", {"head.": "DINO head", "dino_head.": "DINOv2 head", "ibot_head.": "iBOT head"}),
    ("module.", {}),
    ("", {}),
)
_UNUSED = {"mask_token": "DINOv2 mask token (masked-image-modelling input, unused at inference)"}


def canonical_state_dict(state_dict: Mapping):
    """(reference-key dict, canonical key -> key in the file, notes)."""
    prefix, dropped_prefixes = next(((p, d) for p, d in _LAYOUTS if p + "cls_token" in state_dict), (None, None))
    if prefix is None:
        raise CheckpointMismatchError(
            f"no ViT class token found: expected 'cls_token' under one of the prefixes "
            f"{', '.join(repr(p) for p, _ in _LAYOUTS)}; first keys: {', '.join(repr(k) for k in list(state_dict)[:5])}")
    canonical, names, dropped = {}, {}, {}
    chunked = any(re.match(re.escape(prefix) + r"blocks\.\d+\.\d+\.", k) for k in state_dict)
    for key, value in state_dict.items():
        reason = next((why for p, why in dropped_prefixes.items() if key.startswith(p)), None)
        if reason is None and not key.startswith(prefix):
            raise CheckpointMismatchError(f"unexpected key {key!r}: backbone keys start with {prefix!r} and the "
                                          f"known heads with {', '.join(sorted(dropped_prefixes)) or 'nothing'}")
        new = key[len(prefix):]
        if reason is None:
            reason = _UNUSED.get(new)
        if reason is not None:
            dropped.setdefault(reason, []).append(key)
            continue
        if chunked:
            new = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", new)
        canonical[new], names[new] = value, key
    notes = []
    if prefix:
        notes.append(f"stripped the prefix {prefix!r}")
    if chunked:
        notes.append("renamed FSDP block chunks blocks.C.I.* to blocks.I.*")
    for reason, keys in dropped.items():
        notes.append(f"dropped {len(keys)} key(s) of the {reason}: "
                     + ", ".join(repr(k) for k in keys[:4]) + (f" ... (+{len(keys) - 4})" if len(keys) > 4 else ""))
    return canonical, (lambda key: names.get(key, prefix + key)), tuple(notes)


def infer_config(arch: str, sd: Mapping, *, num_heads=None, image_size=None, what="checkpoint") -> dict:
    def shape(key):
        if key not in sd:
            raise CheckpointMismatchError(f"{what}: missing key {key!r}")
        return tuple(sd[key].shape)

    dim = shape("cls_token")[-1]
    patch = shape("patch_embed.proj.weight")[-1]
    rows = shape("pos_embed")[1]
    grid = round((rows - 1) ** 0.5)
    if grid * grid + 1 != rows:
        raise CheckpointMismatchError(f"{what}: 'pos_embed' has {rows} rows, not 1 + a square grid")
    depth_ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if depth_ids != set(range(len(depth_ids))) or not depth_ids:
        raise CheckpointMismatchError(f"{what}: blocks.* indices are not 0..n-1: {sorted(depth_ids)}")
    swiglu = "blocks.0.mlp.w12.weight" in sd
    hidden = shape("blocks.0.mlp.w3.weight")[1] if swiglu else shape("blocks.0.mlp.fc1.weight")[0]
    layer_scale = "blocks.0.ls1.gamma" in sd
    registers = shape("register_tokens")[1] if "register_tokens" in sd else 0
    if arch == "dino_vit" and (layer_scale or registers):
        key = "blocks.0.ls1.gamma" if layer_scale else "register_tokens"
        raise CheckpointMismatchError(f"{what}: key {key!r} belongs to a DINOv2 ViT: convert it as dinov2_vit")
    if arch == "dinov2_vit" and not layer_scale:
        raise CheckpointMismatchError(f"{what}: no LayerScale (missing key 'blocks.0.ls1.gamma'): every DINOv2 "
                                      f"ViT has one; a DINO (v1) ViT converts as dino_vit")
    heads = int(num_heads) if num_heads is not None else max(dim // HEAD_WIDTH, 1)
    if dim % heads:
        raise CheckpointMismatchError(f"{what}: width {dim} is not divisible by {heads} heads (option num_heads)")
    return {"embed_dim": dim, "depth": len(depth_ids), "num_heads": heads, "patch_size": patch, "pos_grid": grid,
            "num_register_tokens": registers, "layer_scale": layer_scale, "ffn": "swiglu" if swiglu else "mlp",
            "ffn_hidden": hidden, "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
            "image_size": int(image_size) if image_size is not None else 224,
            "interpolate_offset": 0.1, "interpolate_antialias": False}


def vit_key(path, shape):
    """Flax path of `ViT` -> (reference state-dict key, layout transform)."""
    _, *modules, leaf = path
    if not modules:  # cls_token, pos_embed, register_tokens: stored as used
        return leaf, identity
    parts = ["patch_embed.proj" if m == "patch_embed_proj" else re.sub(r"^blocks_(\d+)$", r"blocks.\1", m)
             for m in modules]
    if leaf == "kernel":
        return ".".join(parts + ["weight"]), conv_kernel if len(shape) == 4 else linear_kernel
    return ".".join(parts + [{"scale": "weight", "bias": "bias", "gamma": "gamma"}[leaf]]), identity


def convert_state_dict(arch: str, state_dict: Mapping, *, what="checkpoint", stored_key=None, num_heads=None,
                       image_size=None):
    config = infer_config(arch, state_dict, num_heads=num_heads, image_size=image_size, what=what)
    _, abstract = registry.init_abstract(arch, config)
    return config, fill_variables(abstract, state_dict, vit_key, what=what, stored_key=stored_key)


def _converter(arch: str):
    def convert(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False, overwrite=False,
                num_heads=None, image_size=None) -> str:
        import torch

        raw, notes = unwrap(load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle))
        canonical, to_file, layout_notes = canonical_state_dict(raw)
        config, variables = convert_state_dict(arch, canonical, what=checkpoint_path, stored_key=to_file,
                                               num_heads=num_heads, image_size=image_size)
        notes = notes + layout_notes
        if any(v.dtype in (torch.float16, torch.bfloat16) for v in canonical.values()):
            notes += ("converted from 16-bit weights (widened exactly to float32)",)
        notes += (f"ViT width {config['embed_dim']}, depth {config['depth']}, {config['num_heads']} heads, patch "
                  f"{config['patch_size']}, stored grid {config['pos_grid']}x{config['pos_grid']} "
                  f"({config['num_register_tokens']} registers); representation: class token after the final norm",)
        return registry.save(arch, config, variables, out_dir, notes=notes, overwrite=overwrite)

    convert.__name__ = f"convert_{arch}"
    return convert


convert_dino_vit = _converter("dino_vit")
convert_dinov2_vit = _converter("dinov2_vit")
OPTIONS = ("num_heads", "image_size")
