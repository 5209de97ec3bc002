"""The lxt side of the AttnLRP tests: relevance of a ported ViT computed with lxt 2.1's own AttnLRP
code (its Gradient x Input rule functions and patches, code cocoa-jax did not write) on a torch
statement of the same forward, with the same (random) weights.

lxt 2.1 patches no ViT, CLIP or DINOv2 model with AttnLRP (its ViT map is torchvision's ViT with
CP-LRP, and its `transformers` patches import names transformers 5 removed), so the forward here is
the ports' layout written in torch, and every place where AttnLRP changes the backward calls lxt:
`patches.layer_norm_forward` (LayerNorm: the std held constant), `rules.identity_rule_implicit`
(GELU / quick-GELU), `patches.wrap_attention_forward` (the uniform rule on q.k and attn.v: q, k get
1/4 of the gradient, v 1/2); linear layers and the softmax keep their plain gradient, as in lxt.

`relevance(arch, params, x, direction)`: params are the Flax variables as NumPy ({"params": ...}),
x one NORMALISED image (H, W, C) (what the raw network takes), direction (D,), heads the attention
heads; returns
(x * d<rep(x), direction>/dx (H, W, C), <rep(x), direction>) in float64.
torch and lxt are imported inside the functions only.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np


def _lxt_efficient():
    """lxt.efficient.rules and .patches, without running lxt/efficient/__init__.py (it imports
    lxt's transformers model patches, which fail on transformers 5)."""
    import lxt

    base = os.path.join(os.path.dirname(lxt.__file__), "efficient")
    if "lxt.efficient" not in sys.modules:
        package = types.ModuleType("lxt.efficient")
        package.__path__ = [base]
        sys.modules["lxt.efficient"] = package
    out = []
    for name in ("rules", "patches"):
        full = f"lxt.efficient.{name}"
        if full not in sys.modules:
            spec = importlib.util.spec_from_file_location(full, os.path.join(base, f"{name}.py"))
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            spec.loader.exec_module(module)
        out.append(sys.modules[full])
    return out


def relevance(arch: str, params, x, direction, *, heads: int):
    import torch

    rules, patches = _lxt_efficient()
    t = lambda a: torch.as_tensor(np.asarray(a, np.float64))
    p = params["params"]

    def layer_norm(x, q, eps):
        ln = types.SimpleNamespace(weight=t(q["scale"]), bias=t(q["bias"]), eps=eps)
        return patches.layer_norm_forward(ln, x)

    def dense(x, q):
        return x @ t(q["kernel"]) + (t(q["bias"]) if "bias" in q else 0.0)

    def eager_attention(module, q, k, v):
        # (heads, L, d): softmax(q k^T / sqrt(d)) v
        w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return w @ v

    attention_forward = patches.wrap_attention_forward(eager_attention)

    def attention(x, qkv, proj, heads):
        length, dim = x.shape
        q, k, v = dense(x, qkv).split(dim, dim=-1)
        split = lambda a: a.reshape(length, heads, dim // heads).transpose(0, 1)
        out = attention_forward(None, split(q), split(k), split(v))
        return dense(out.transpose(0, 1).reshape(length, dim), proj)

    def patchify(img, kernel):
        ph, pw, c, d = kernel.shape
        h, w = img.shape[0] // ph, img.shape[1] // pw
        patches_ = img[:h * ph, :w * pw].reshape(h, ph, w, pw, c).permute(0, 2, 1, 3, 4).reshape(h * w, -1)
        return patches_ @ t(kernel).reshape(-1, d)

    image = t(x).requires_grad_(True)
    if arch == "clip_vit":
        v = p["visual"]
        act = lambda h: h * torch.sigmoid(1.702 * h)
        seq = torch.cat([t(v["class_embedding"])[None], patchify(image, v["conv1"]["kernel"])]) + t(
            v["positional_embedding"])
        seq = layer_norm(seq, v["ln_pre"], 1e-5)
        blocks = v["transformer"]
        for i in range(len(blocks)):
            b = blocks[f"resblocks_{i}"]
            seq = seq + attention(layer_norm(seq, b["ln_1"], 1e-5), b["attn"]["in_proj"], b["attn"]["out_proj"], heads)
            h = rules.identity_rule_implicit(act, dense(layer_norm(seq, b["ln_2"], 1e-5), b["mlp"]["c_fc"]))
            seq = seq + dense(h, b["mlp"]["c_proj"])
        rep = layer_norm(seq[0], v["ln_post"], 1e-5) @ t(v["proj"])
    else:
        gelu = torch.nn.GELU()
        tokens = patchify(image, p["patch_embed_proj"]["kernel"]) + t(p["patch_embed_proj"]["bias"])
        seq = torch.cat([t(p["cls_token"])[0], tokens]) + t(p["pos_embed"])[0]
        if "register_tokens" in p:
            seq = torch.cat([seq[:1], t(p["register_tokens"])[0], seq[1:]])
        depth = sum(1 for name in p if name.startswith("blocks_"))
        for i in range(depth):
            b = p[f"blocks_{i}"]
            y = attention(layer_norm(seq, b["norm1"], 1e-6), b["attn"]["qkv"], b["attn"]["proj"], heads)
            seq = seq + (y * t(b["ls1"]["gamma"]) if "ls1" in b else y)
            h = rules.identity_rule_implicit(gelu, dense(layer_norm(seq, b["norm2"], 1e-6), b["mlp"]["fc1"]))
            y = dense(h, b["mlp"]["fc2"])
            seq = seq + (y * t(b["ls2"]["gamma"]) if "ls2" in b else y)
        rep = layer_norm(seq[0], p["norm"], 1e-6)
    score = rep @ t(direction)
    score.backward()
    return (image * image.grad).detach().numpy(), float(score.detach())
