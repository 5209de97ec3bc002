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
  * DINOv2 FSDP block chunks (`blocks.C.I.*` -> `blocks.I.*`);
  * timm's layout (option `layout=timm`; `vit_small_patch14_dinov2.lvd142m`,
    `vit_small_patch14_reg4_dinov2.lvd142m`, `vit_small_patch16_224.dino`, ..., as
    `model.state_dict()`, `pytorch_model.bin` or `model.safetensors`), described below.
DINOv2's `mask_token` (masked-image-modelling input, unused at inference) is dropped and reported.

Positional-embedding resampling at other input sizes (config `interpolate_offset`,
`interpolate_antialias`; see `cocoa_jax.models.vit`) is not in the weights: it is a setting of the
code that built the model, recorded in model.json (`RESAMPLING`):
  * facebookresearch layout without registers (DINO; DINOv2 hub `dinov2_vit*14`): bicubic, no
    antialias, `scale_factor = (grid + 0.1) / M` (offset 0.1, `DinoVisionTransformer`'s default);
  * facebookresearch layout with `register_tokens` (DINOv2 hub `dinov2_vit*14_reg`, whose entries
    pass `interpolate_antialias=True, interpolate_offset=0.0`; so do the `*_reg4` eval configs):
    antialiased bicubic to the output size;
  * timm's layout (with or without `reg_token`): antialiased bicubic to the output size.
The options `interpolate_offset` (a number >= 0) and `interpolate_antialias` (true/false) replace
them, e.g. for a register model trained with dinov2's training defaults (0.1, false).

timm's layout (`timm/models/vision_transformer.py`, `VisionTransformer` and its `_convert_dinov2`)
has the same block, norm, patch-embedding and `cls_token` names, and differs in:
  * registers are `reg_token` (facebookresearch: `register_tokens`);
  * with `no_embed_class=True` (every timm `*_reg4_dinov2` model) `pos_embed` holds only the M x M
    patch rows; the class token's position is folded into `cls_token` (`cls_token + pos_embed[:, 0]`);
    the converter adds a zero class row, which computes the same thing. Registers in a model
    with `no_embed_class=False` have position rows too; they are folded into the tokens (timm
    never resamples prefix rows, so this is exact at every size);
  * the SwiGLU FFN (`vit_giant_patch14_dinov2`, `SwiGLUPacked`) is `mlp.fc1`/`mlp.fc2`
    (facebookresearch: `mlp.w12`/`mlp.w3`), the same computation silu(first half) * second half;
  * `head.*` (a classifier, when num_classes > 0) is dropped and reported; `fc_norm` / `norm_pre`
    / `attn_pool` (other poolings, pre-norm CLIP-style ViTs) are refused;
  * the positional embedding at other input sizes is resampled with `resample_abs_pos_embed`:
    torch's bicubic with antialias=True, to the output size (no 0.1 offset), so the converted
    config has `interpolate_antialias=True`, `interpolate_offset=0`.
The keys alone tell the two layouts apart only through `reg_token`/`register_tokens`, `mask_token`,
a prefix-free `pos_embed` or the FFN names; a file with none of these (DINO v1, DINOv2 without
registers) is read as facebookresearch's unless `layout=timm` is given, and a note says so: the
weights are the same, only the resampling at other input sizes differs.
"""
from __future__ import annotations

import re
from typing import Mapping

from cocoa_jax import models
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


LAYOUTS = ("facebookresearch", "timm")
# timm keys that are not part of the class-token representation, dropped and reported.
_TIMM_DROPPED = {"head.": "classifier head (timm num_classes > 0; the representation is the class token before it)"}
# timm modules this port does not implement: a different pooling or a pre-norm (CLIP-style) ViT.
_TIMM_REFUSED = {"fc_norm.": "global_pool='avg' (fc_norm)", "norm_pre.": "pre_norm=True (norm_pre)",
                 "attn_pool.": "global_pool='map' (attn_pool)"}


def _square(n: int) -> bool:
    return n > 0 and round(n ** 0.5) ** 2 == n


def _layout_evidence(sd: Mapping, had_mask_token: bool):
    """(timm evidence, facebookresearch evidence): a key name (or fact) that only one layout has."""
    timm = fb = None
    if "reg_token" in sd:
        timm = "key 'reg_token'"
    elif "pos_embed" in sd and len(sd["pos_embed"].shape) == 3 and _square(sd["pos_embed"].shape[1]):
        timm = f"'pos_embed' has {sd['pos_embed'].shape[1]} rows, a square grid without a class row (no_embed_class)"
    elif "blocks.0.mlp.fc1.weight" in sd and "blocks.0.mlp.fc2.weight" in sd and \
            sd["blocks.0.mlp.fc1.weight"].shape[0] == 2 * sd["blocks.0.mlp.fc2.weight"].shape[1]:
        timm = "SwiGLU FFN named 'mlp.fc1'/'mlp.fc2' (SwiGLUPacked)"
    if "register_tokens" in sd:
        fb = "key 'register_tokens'"
    elif had_mask_token:
        fb = "key 'mask_token'"
    elif "blocks.0.mlp.w12.weight" in sd:
        fb = "SwiGLU FFN named 'mlp.w12'/'mlp.w3'"
    return timm, fb


def resolve_layout(sd: Mapping, had_mask_token: bool, layout=None, what="checkpoint"):
    """(layout, notes): the `layout` option checked against what the keys show, or what they show."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"option layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    timm, fb = _layout_evidence(sd, had_mask_token)
    if timm and fb:
        raise CheckpointMismatchError(f"{what}: mixes timm's layout ({timm}) and facebookresearch's ({fb})")
    shown = "timm" if timm else "facebookresearch" if fb else None
    if layout is not None and shown is not None and layout != shown:
        raise CheckpointMismatchError(f"{what}: option layout={layout}, but the file is in {shown}'s layout "
                                      f"({timm or fb}); leave the option out or pass layout={shown}")
    if layout is None and shown is None:
        return "facebookresearch", ("layout: facebookresearch assumed (its keys are also timm's for DINO and DINOv2 "
                                    "without registers); for a timm file reconvert with --option layout=timm, "
                                    "which changes only how other input sizes resample the positional embedding",)
    chosen = layout or shown
    return chosen, ((f"layout: {chosen} ({timm or fb})",) if layout is None else (f"layout: {chosen} (option)",))


def timm_to_reference(sd: Mapping, names: Mapping, what="checkpoint"):
    """timm-layout backbone dict -> (facebookresearch-layout dict, canonical key -> file key, notes)."""
    import torch

    out, to_file, notes, dropped = {}, dict(names), [], []
    for key, value in sd.items():
        refused = next((why for p, why in _TIMM_REFUSED.items() if key.startswith(p)), None)
        if refused:
            raise CheckpointMismatchError(f"{what}: key {names.get(key, key)!r}: a timm ViT with {refused} is not "
                                          f"supported; only class-token ViTs (DINO, DINOv2) convert")
        if any(key.startswith(p) for p in _TIMM_DROPPED):
            dropped.append(names.get(key, key))
            continue
        out[key] = value
    if dropped:
        notes.append(f"dropped {len(dropped)} key(s) of the {_TIMM_DROPPED['head.']}: "
                     + ", ".join(repr(k) for k in dropped))
    if "reg_token" in out:
        out["register_tokens"] = out.pop("reg_token")
        to_file["register_tokens"] = to_file.pop("reg_token", "reg_token")
    swiglu = re.compile(r"^blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)$")
    if "blocks.0.mlp.fc1.weight" in out and "blocks.0.mlp.fc2.weight" in out and \
            out["blocks.0.mlp.fc1.weight"].shape[0] == 2 * out["blocks.0.mlp.fc2.weight"].shape[1]:
        for key in [k for k in out if swiglu.match(k)]:
            block, fc, leaf = swiglu.match(key).groups()
            new = f"blocks.{block}.mlp.{'w12' if fc == '1' else 'w3'}.{leaf}"
            out[new] = out.pop(key)
            to_file[new] = to_file.pop(key, key)
        notes.append("SwiGLU FFN: timm's mlp.fc1 / mlp.fc2 (SwiGLUPacked: silu(first half) * second half)")
    if "pos_embed" in out and "cls_token" in out and len(out["pos_embed"].shape) == 3:
        pos, cls = out["pos_embed"], out["cls_token"]
        rows, registers = pos.shape[1], (out["register_tokens"].shape[1] if "register_tokens" in out else 0)
        if _square(rows):  # no_embed_class: the class (and register) tokens carry no position row
            out["pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
            notes.append("timm no_embed_class: 'pos_embed' has no class row (its position is in 'cls_token'); "
                         "added a zero class row")
        elif registers and _square(rows - 1 - registers) and not _square(rows - 1):
            out["cls_token"] = cls + pos[:, :1]
            out["register_tokens"] = out["register_tokens"] + pos[:, 1:1 + registers]
            out["pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos[:, 1 + registers:]], dim=1)
            notes.append(f"timm no_embed_class=False with registers: the class and {registers} register position "
                         f"rows of 'pos_embed' are folded into the tokens (timm never resamples them)")
    return out, to_file, tuple(notes)


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
            **RESAMPLING["facebookresearch"]}


# How each source resamples the positional embedding at other input sizes (module docstring).
RESAMPLING = {
    "facebookresearch": {"interpolate_offset": 0.1, "interpolate_antialias": False},
    "facebookresearch_registers": {"interpolate_offset": 0.0, "interpolate_antialias": True},
    "timm": {"interpolate_offset": 0.0, "interpolate_antialias": True},
}
_RESAMPLING_SOURCE = {
    "facebookresearch": "DinoVisionTransformer's defaults, as DINO and the DINOv2 hub models without registers",
    "facebookresearch_registers": "register checkpoint: as the DINOv2 hub's *_reg models",
    "timm": "timm's resample_abs_pos_embed",
}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _offset_option(value) -> float:
    try:
        offset = float(value)
    except (TypeError, ValueError):
        offset = float("nan")
    if not 0.0 <= offset < float("inf"):  # NaN fails too
        raise ValueError(f"option interpolate_offset must be a number >= 0 (0.1: DinoVisionTransformer's default, "
                         f"0: the output size), got {value!r}")
    return offset


def _antialias_option(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in _TRUE + _FALSE:
        return str(value).strip().lower() in _TRUE
    raise ValueError(f"option interpolate_antialias must be true or false, got {value!r}")


def resampling(layout: str, registers: int, *, interpolate_offset=None, interpolate_antialias=None):
    """(config fields, note): how the positional embedding resamples, from the layout and the
    register count, each field replaced by its option when given."""
    source = "timm" if layout == "timm" else "facebookresearch_registers" if registers else "facebookresearch"
    fields, why = dict(RESAMPLING[source]), _RESAMPLING_SOURCE[source]
    if interpolate_offset is not None:
        fields["interpolate_offset"] = _offset_option(interpolate_offset)
    if interpolate_antialias is not None:
        fields["interpolate_antialias"] = _antialias_option(interpolate_antialias)
    if fields != RESAMPLING[source]:
        why = "options interpolate_offset / interpolate_antialias"
    offset = fields["interpolate_offset"]
    how = f"scale_factor (grid + {offset:g}) / M" if offset else "to the output size"
    kind = "bicubic, antialiased" if fields["interpolate_antialias"] else "bicubic"
    return fields, f"positional embedding at other input sizes: {kind}, {how} ({why})"


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
                       image_size=None, layout="facebookresearch", interpolate_offset=None, interpolate_antialias=None):
    """(config, variables) of a facebookresearch-layout dict (`canonical_state_dict`, or
    `timm_to_reference` with layout="timm"); the resampling settings as `resampling`."""
    config = infer_config(arch, state_dict, num_heads=num_heads, image_size=image_size, what=what)
    fields, _ = resampling(layout, config["num_register_tokens"], interpolate_offset=interpolate_offset,
                           interpolate_antialias=interpolate_antialias)
    config.update(fields)
    _, abstract = models.init_abstract(arch, config)
    return config, fill_variables(abstract, state_dict, vit_key, what=what, stored_key=stored_key)


def _converter(arch: str):
    def convert(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False, overwrite=False,
                num_heads=None, image_size=None, layout=None, interpolate_offset=None,
                interpolate_antialias=None) -> str:
        import torch

        # bad option values fail before the file is read
        interpolate_offset = None if interpolate_offset is None else _offset_option(interpolate_offset)
        interpolate_antialias = None if interpolate_antialias is None else _antialias_option(interpolate_antialias)
        raw, notes = unwrap(load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle))
        canonical, to_file, layout_notes = canonical_state_dict(raw)
        had_mask_token = any(k.endswith("mask_token") for k in raw)
        layout, chosen_notes = resolve_layout(canonical, had_mask_token, layout, what=checkpoint_path)
        if layout == "timm":
            names = {k: to_file(k) for k in canonical}
            canonical, names, timm_notes = timm_to_reference(canonical, names, what=checkpoint_path)
            to_file = lambda key, names=names, fallback=to_file: names.get(key, fallback(key))  # noqa: E731
            layout_notes = layout_notes + timm_notes
        config, variables = convert_state_dict(arch, canonical, what=checkpoint_path, stored_key=to_file,
                                               num_heads=num_heads, image_size=image_size, layout=layout,
                                               interpolate_offset=interpolate_offset,
                                               interpolate_antialias=interpolate_antialias)
        _, resampling_note = resampling(layout, config["num_register_tokens"], interpolate_offset=interpolate_offset,
                                        interpolate_antialias=interpolate_antialias)
        notes = notes + chosen_notes + layout_notes
        if any(v.dtype in (torch.float16, torch.bfloat16) for v in canonical.values()):
            notes += ("converted from 16-bit weights (widened exactly to float32)",)
        notes += (f"ViT width {config['embed_dim']}, depth {config['depth']}, {config['num_heads']} heads, patch "
                  f"{config['patch_size']}, stored grid {config['pos_grid']}x{config['pos_grid']} "
                  f"({config['num_register_tokens']} registers); representation: class token after the final norm",
                  resampling_note)
        return models.save(arch, config, variables, out_dir, notes=notes, overwrite=overwrite)

    convert.__name__ = f"convert_{arch}"
    return convert


convert_dino_vit = _converter("dino_vit")
convert_dinov2_vit = _converter("dinov2_vit")
OPTIONS = ("num_heads", "image_size", "layout", "interpolate_offset", "interpolate_antialias")
