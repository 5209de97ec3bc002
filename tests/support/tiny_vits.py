"""Tiny random-weight ViT ports (DINO, DINOv2 with registers, CLIP's image tower) and a float64
NumPy statement of their forward pass with a key mask (attention logits of masked keys -inf),
the independent reference of the token-drop and rollout tests."""
from __future__ import annotations

import dataclasses
from math import erf

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.models import architectures, loaded, vit
from cocoa_jax.models.clip import ClipConfig

SIZE, PATCH = 16, 4  # a 4 x 4 patch grid
DINO = {**vit.DEFAULT_CONFIG, "embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": PATCH, "pos_grid": 4,
        "image_size": SIZE, "layer_scale": False, "ffn_hidden": 32}
DINOV2_REG = {**DINO, "layer_scale": True, "num_register_tokens": 2, "interpolate_offset": 0.0,
              "interpolate_antialias": True}
CLIP = dataclasses.asdict(ClipConfig(embed_dim=8, image_resolution=SIZE, vision_layers=2, vision_width=16,
                                     vision_patch_size=PATCH, context_length=8, vocab_size=64,
                                     transformer_width=16, transformer_layers=1, vision_head_width=8))
CASES = {"dino_vit": DINO, "dinov2_vit": DINOV2_REG, "clip_vit": CLIP}


def tiny_model(arch: str, seed: int = 0):
    """A `LoadedModel` of `arch` with every weight drawn N(0, 0.3^2) (LayerNorm scales 1 + that),
    so that every token matters."""
    config = CASES[arch]
    spec = architectures.spec_of(arch)
    module = spec.build(config)
    # only the shapes: eager Flax init compiles every op once (seconds per model)
    variables = jax.eval_shape(lambda: spec.init(module, config, tuple(spec.input_shape(config))))
    leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
    rng = np.random.default_rng(seed)
    leaves = [(0.3 * rng.standard_normal(leaf.shape) + float("scale" in str(path[-1]))).astype(leaf.dtype)
              for path, leaf in leaves]
    variables = jax.tree_util.tree_unflatten(tree, leaves)
    return loaded.make_loaded(arch, config, variables)


def _ln(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + (p["bias"] if "bias" in p else 0.0)


def _attention(x, qkv, proj, heads, valid):
    """x (L, D); valid (L,) bool keys -> (out (L, D), weights (heads, L, L))."""
    length, dim = x.shape
    q, k, v = np.split(_dense(x, qkv), 3, axis=-1)
    split = lambda t: t.reshape(length, heads, dim // heads).transpose(1, 0, 2)
    q, k, v = split(q), split(k), split(v)
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(dim // heads)
    logits = np.where(valid[None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = (w @ v).transpose(1, 0, 2).reshape(length, dim)
    return _dense(out, proj), w


def _patches(x, p):
    h, w, c = x.shape
    gh, gw = h // p, w // p
    return x[:gh * p, :gw * p].reshape(gh, p, gw, p, c).transpose(0, 2, 1, 3, 4).reshape(gh * gw, p, p, c)


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def numpy_forward(model, x_network, kept_patches=None):
    """float64 forward of ONE normalised image (H, W, C) through the whole sequence, keys of
    patches outside `kept_patches` masked -> (representation (D,), attention (layers, heads, L, L))."""
    params = _f64(model.params)["params"]
    x = np.asarray(x_network, np.float64)
    gelu = np.vectorize(lambda h: 0.5 * h * (1.0 + erf(h / np.sqrt(2.0))))
    if model.name == "clip_vit":
        c = ClipConfig(**model.config)
        vp = params["visual"]
        tokens = np.einsum("nhwc,hwcd->nd", _patches(x, c.vision_patch_size), vp["conv1"]["kernel"])
        seq = np.concatenate([vp["class_embedding"][None], tokens]) + vp["positional_embedding"]
        seq = _ln(seq, vp["ln_pre"], 1e-5)
        prefix, heads, eps = 1, c.vision_heads, 1e-5
        blocks = [vp["transformer"][f"resblocks_{i}"] for i in range(c.vision_layers)]
        names = ("ln_1", "in_proj", "out_proj", "ln_2", "c_fc", "c_proj")
        act = lambda h: h / (1.0 + np.exp(-1.702 * h))
    else:
        c = model.config
        tokens = np.einsum("nhwc,hwcd->nd", _patches(x, c["patch_size"]), params["patch_embed_proj"]["kernel"])
        tokens = tokens + params["patch_embed_proj"]["bias"]
        seq = np.concatenate([params["cls_token"][0], tokens]) + params["pos_embed"][0]
        registers = int(c.get("num_register_tokens", 0))
        if registers:
            seq = np.concatenate([seq[:1], params["register_tokens"][0], seq[1:]])
        prefix, heads, eps = 1 + registers, c["num_heads"], 1e-6
        blocks = [params[f"blocks_{i}"] for i in range(c["depth"])]
        act = gelu
    valid = np.ones(len(seq), bool)
    if kept_patches is not None:
        valid[prefix:] = False
        valid[prefix + np.asarray(kept_patches)] = True
    weights = []
    for b in blocks:
        if model.name == "clip_vit":
            attn, mlp = b["attn"], b["mlp"]
            y, w = _attention(_ln(seq, b["ln_1"], eps), attn["in_proj"], attn["out_proj"], heads, valid)
            seq = seq + y
            seq = seq + _dense(act(_dense(_ln(seq, b["ln_2"], eps), mlp["c_fc"])), mlp["c_proj"])
        else:
            y, w = _attention(_ln(seq, b["norm1"], eps), b["attn"]["qkv"], b["attn"]["proj"], heads, valid)
            seq = seq + (y * b["ls1"]["gamma"] if "ls1" in b else y)
            y = _dense(act(_dense(_ln(seq, b["norm2"], eps), b["mlp"]["fc1"])), b["mlp"]["fc2"])
            seq = seq + (y * b["ls2"]["gamma"] if "ls2" in b else y)
        weights.append(w)
    if model.name == "clip_vit":
        rep = _ln(seq[0], vp["ln_post"], eps) @ vp["proj"]
    else:
        rep = _ln(seq[0], params["norm"], eps)
    return rep, np.stack(weights)


def network_input(model, x):
    """[0, 1] pixels -> what the raw network takes (the model's mean/std applied)."""
    return np.asarray(model.preprocess.normalize(jnp.asarray(x)), np.float64)
