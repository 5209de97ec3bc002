"""timm's `VisionTransformer` as a reference for the DINO / DINOv2 ViT ports.

timm 1.0.x imports torchvision names when the `timm` package is imported (`FrozenBatchNorm2d`
in timm/layers, datasets and transforms in timm/data), none of which `VisionTransformer` uses.
torchvision stays out of the environment: while timm is imported, a placeholder module answers
those imports (each name a distinct class that cannot be instantiated), and it is removed from
`sys.modules` right after, so nothing else sees a `torchvision`.

DINOv2 with registers: timm's `vit_*_patch14_reg4_dinov2` models are `VisionTransformer`s with
patch 14, LayerScale, `reg_tokens=4` and `no_embed_class=True`, and with `dynamic_img_size=True`
they resample the positional embedding at other input sizes with `resample_abs_pos_embed`
(bicubic, antialias=True, to the output size): the settings of the DINOv2 hub's `*_reg` entries
(`interpolate_antialias=True, interpolate_offset=0.0`). `facebookresearch_layout` writes such a
model in the layout of the published `dinov2_vit*14_reg4_pretrain.pth` files (the inverse of
timm's `_convert_dinov2`, which the tests use to check it).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


def import_timm_vision_transformer():
    """(`timm.models.vision_transformer`, `timm.layers.SwiGLUPacked`), or None if timm is absent."""
    if importlib.util.find_spec("timm") is None:
        return None
    if importlib.util.find_spec("torchvision") is not None:  # a real one: use it
        import timm.layers
        import timm.models.vision_transformer as vision_transformer
        return vision_transformer, timm.layers.SwiGLUPacked

    class _Meta(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            sub = _Meta(name, (cls,), {})
            setattr(cls, name, sub)
            return sub

    class _Placeholder(metaclass=_Meta):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision placeholder used while importing timm")

    class _Module(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            sub = _Meta(name, (_Placeholder,), {})
            setattr(self, name, sub)
            return sub

    class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return _Module(spec.name)

        def exec_module(self, module):
            module.__path__ = []

    finder = _Finder()
    sys.meta_path.insert(0, finder)
    try:
        import timm.layers
        import timm.models.vision_transformer as vision_transformer
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    return vision_transformer, timm.layers.SwiGLUPacked


def randomize(model, seed: int, pos_embed_std=None):
    """Non-trivial norms, LayerScale, biases and tokens (the defaults 1 / 0 would hide swaps);
    `pos_embed` drawn again with `pos_embed_std` when given."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias") or "gamma" in name or "token" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name == "pos_embed" and pos_embed_std is not None:
                p.copy_(pos_embed_std * torch.randn(p.shape, generator=gen))
    return model.eval()


def dinov2_registers(vision_transformer, seed: int, *, width: int, heads: int, depth: int = 2,
                     img_size: int = 518, registers: int = 4):
    """A small `vit_*_patch14_reg4_dinov2` (timm's settings for DINOv2 with registers), random weights."""
    import torch

    torch.manual_seed(seed)
    model = vision_transformer.VisionTransformer(
        img_size=img_size, patch_size=14, embed_dim=width, depth=depth, num_heads=heads, init_values=1.0,
        reg_tokens=registers, no_embed_class=True, dynamic_img_size=True, num_classes=0)
    return randomize(model, seed + 1, pos_embed_std=0.5)  # larger than its 0.02 init: resampling must matter


def facebookresearch_layout(model, seed: int) -> dict:
    """`model` (timm, `no_embed_class`, registers) as a facebookresearch state dict: `register_tokens`,
    `pos_embed` with a class row (random: timm folds it into `cls_token`, so the class token is
    `cls_token - row`), `mask_token` (unused at inference); everything else as it is."""
    import torch

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    class_row = 0.1 * torch.randn((1, 1, sd["cls_token"].shape[-1]), generator=torch.Generator().manual_seed(seed))
    out = {"cls_token": sd.pop("cls_token") - class_row,
           "pos_embed": torch.cat([class_row, sd.pop("pos_embed")], dim=1),
           "register_tokens": sd.pop("reg_token"),
           "mask_token": torch.zeros_like(class_row[0])}
    out.update(sd)
    return out


def representation(model):
    """The class token after the final norm (timm's pre-logits with global_pool='token')."""
    return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
