"""PyTorch reference CLIP (ViT) with openai/CLIP's state-dict key names.

Built on `torch.nn.MultiheadAttention` (sequence-first), pre-LN blocks with QuickGELU,
`x @ proj` projections and EOT (argmax id) pooling for text.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 (how CLIP runs fp16 weights)."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = LayerNorm32(width)

    def forward(self, x, mask=None):  # x: (L, N, W)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        for block in self.resblocks:
            x = block(x, mask)
        return x


class Visual(nn.Module):
    def __init__(self, resolution, patch, width, layers, embed_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn((resolution // patch) ** 2 + 1, width) * width**-0.5)
        self.ln_pre = LayerNorm32(width)
        self.transformer = Transformer(width, layers, width // 64)
        self.ln_post = LayerNorm32(width)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)

    def forward(self, x):  # (N, 3, R, R)
        x = self.conv1(x).flatten(2).permute(0, 2, 1)  # (N, grid^2, W)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIPReference(nn.Module):
    def __init__(self, embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                 vision_patch_size=32, context_length=77, vocab_size=49408, transformer_width=512,
                 transformer_layers=12):
        super().__init__()
        self.visual = Visual(image_resolution, vision_patch_size, vision_width, vision_layers, embed_dim)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_width // 64)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(context_length, transformer_width))
        self.ln_final = LayerNorm32(transformer_width)
        self.text_projection = nn.Parameter(torch.randn(transformer_width, embed_dim) * transformer_width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_image(self, images):
        return self.visual(images)

    def encode_text(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        length = tokens.shape[1]
        mask = torch.full((length, length), float("-inf")).triu_(1)  # key j > query i is hidden
        x = self.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection

    def forward(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens)


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial LayerNorm affine params and biases (defaults 1/0 would hide swaps)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                base = 1.0 if ("ln_" in name and name.endswith("weight")) else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def openai_clip_model(config: dict, seed: int, gelu: bool = False):
    """(openai/CLIP's own `build_model` (clip-anytorch's model.py) on a random state dict of
    `config`'s shapes, that state dict). build_model casts to fp16; the fp32 weights are loaded back
    after `.float()`. gelu: QuickGELU swapped for torch.nn.GELU, open_clip's standard CLIP (same
    layout). Skips the calling test when clip-anytorch is not installed."""
    import pytest
    from tests.reference.torch_models import clip_anytorch_file
    clip_model = clip_anytorch_file("model")
    if clip_model is None:
        pytest.skip("clip-anytorch not installed (pip install --no-deps clip-anytorch)")
    torch.manual_seed(seed)
    state_dict = randomize_(CLIPReference(**config), seed + 1).state_dict()
    model = clip_model.build_model({k: v.clone() for k, v in state_dict.items()}).float()
    model.load_state_dict(state_dict)
    if gelu:
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, clip_model.QuickGELU):
                    setattr(module, name, torch.nn.GELU())
    return model.eval(), state_dict


def clip_tokens(n: int, seed: int) -> np.ndarray:
    """(n, 77) CLIP-like token rows: SOT, random ids, EOT (the max id), zero padding."""
    rng = np.random.RandomState(seed)
    tokens = np.zeros((n, 77), np.int64)
    for i in range(n):
        length = rng.randint(3, 77)
        tokens[i, 0], tokens[i, 1:length - 1], tokens[i, length - 1] = 49406, rng.randint(1, 49405, length - 2), 49407
    return tokens
