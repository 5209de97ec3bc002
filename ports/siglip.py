"""Hugging Face `SiglipModel` directory (config.json + model.safetensors / pytorch_model.bin) ->
`siglip` (both towers).

Sizes are read off the weights; the head counts and the LayerNorm epsilon from config.json
(`vision_config` / `text_config`). Only `hidden_act` "gelu_pytorch_tanh" (every released SigLIP)
is accepted. tokenizer.json, when the directory has one, is copied (with the pad token of
tokenizer_config.json), else one is written from spiece.model (`text_tokenizers.siglip_tokenizer_json`),
so `model.encode_text(["a photo of a dog"])` works; without either the text tower takes token ids. `convert_big_vision_siglip` reads big_vision's `.npz` (below) into the same model.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping, Tuple

import numpy as np

from cocoa_jax import models
from cocoa_jax.models.siglip import SiglipConfig
from cocoa_jax.models.text_tokenizers import TOKENIZER_FILE, TextTokenizer, read_json
from .bert import _weights_file
from .common import (CheckpointMismatchError, NotACheckpointError, conv_kernel, extract_state_dict, fill_variables, identity,
                     linear_kernel, load_checkpoint)

ARCH = "siglip"
_BLOCK_PARTS = {"layer_norm1": "layer_norm1", "layer_norm2": "layer_norm2", "q_proj": "self_attn.q_proj",
                "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj", "out_proj": "self_attn.out_proj",
                "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
_TOP = {"patch_embedding": "vision_model.embeddings.patch_embedding",
        "vision_position_embedding": "vision_model.embeddings.position_embedding",
        "post_layernorm": "vision_model.post_layernorm", "token_embedding": "text_model.embeddings.token_embedding",
        "text_position_embedding": "text_model.embeddings.position_embedding",
        "final_layer_norm": "text_model.final_layer_norm", "text_head": "text_model.head"}
_HEAD = {"layernorm": "vision_model.head.layernorm", "out_proj": "vision_model.head.attention.out_proj",
         "fc1": "vision_model.head.mlp.fc1", "fc2": "vision_model.head.mlp.fc2"}
IGNORED = re.compile(r"(^|\.)position_ids$")


def siglip_key(path: Tuple[str, ...], shape: Tuple[int, ...]):
    """Flax path of `cocoa_jax.models.siglip.SigLIP` -> (transformers key, layout transform)."""
    _, first, *rest = path
    if first in ("logit_scale", "logit_bias"):
        return first, identity
    leaf = rest[-1]
    name = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
    transform = (conv_kernel if len(shape) == 4 else linear_kernel) if leaf == "kernel" else identity
    if first == "map_head":
        if len(rest) == 1:  # probe, in_proj_weight, in_proj_bias: stored as used
            return f"vision_model.head.{'probe' if leaf == 'probe' else 'attention.' + leaf}", identity
        return f"{_HEAD[rest[0]]}.{name}", transform
    match = re.match(r"(vision|text)_layers_(\d+)$", first)
    if match:
        tower, index = match.groups()
        return f"{tower}_model.encoder.layers.{index}.{_BLOCK_PARTS[rest[0]]}.{name}", transform
    return f"{_TOP[first]}.{name}", transform


def _count(state_dict: Mapping, tower: str) -> int:
    pattern = re.compile(rf"{tower}_model\.encoder\.layers\.(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    if indices != set(range(len(indices))):
        raise CheckpointMismatchError(f"{tower}_model.encoder.layers indices are not contiguous: {sorted(indices)}")
    return len(indices)


def infer_config(state_dict: Mapping, hf: Mapping, text_tower: bool = True) -> SiglipConfig:
    """SiglipConfig from tensor shapes and config.json's head counts / epsilon (text_tower=False:
    the image tower's keys only)."""
    def shape(key):
        if key not in state_dict:
            raise CheckpointMismatchError(f"SigLIP checkpoint: missing key {key!r}")
        return tuple(state_dict[key].shape)

    vision, text = hf.get("vision_config") or {}, hf.get("text_config") or {}
    for part, what in ((vision, "vision_config"), (text, "text_config")):
        if part.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            raise CheckpointMismatchError(f"config.json: {what}.hidden_act {part['hidden_act']!r} is not supported "
                                          f"(only gelu_pytorch_tanh)")
    width, _, patch, _ = shape("vision_model.embeddings.patch_embedding.weight")
    positions = shape("vision_model.embeddings.position_embedding.weight")[0]
    grid = round(positions ** 0.5)
    if grid * grid != positions:
        raise CheckpointMismatchError(f"vision position embedding has {positions} rows, not a square grid")
    if not text_tower:  # Siglip2VisionModel: the image tower alone
        return SiglipConfig(
            image_size=patch * grid, patch_size=patch, vision_width=width,
            vision_layers=_count(state_dict, "vision"), vision_heads=int(vision.get("num_attention_heads", 12)),
            vision_mlp=shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
            layer_norm_eps=float(vision.get("layer_norm_eps", 1e-6)), text_tower=False)
    text_width = shape("text_model.embeddings.token_embedding.weight")[1]
    eps = {float(part.get("layer_norm_eps", 1e-6)) for part in (vision, text)}
    if len(eps) > 1:
        raise CheckpointMismatchError(f"config.json: the towers' layer_norm_eps differ ({sorted(eps)})")
    return SiglipConfig(
        image_size=patch * grid, patch_size=patch, vision_width=width,
        vision_layers=_count(state_dict, "vision"), vision_heads=int(vision.get("num_attention_heads", 12)),
        vision_mlp=shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
        vocab_size=shape("text_model.embeddings.token_embedding.weight")[0],
        context_length=shape("text_model.embeddings.position_embedding.weight")[0], text_width=text_width,
        text_layers=_count(state_dict, "text"), text_heads=int(text.get("num_attention_heads", 12)),
        text_mlp=shape("text_model.encoder.layers.0.mlp.fc1.weight")[0],
        projection_size=shape("text_model.head.weight")[0], layer_norm_eps=eps.pop(),
        pad_token_id=int(text.get("pad_token_id", 1) if text.get("pad_token_id") is not None else 1))


def convert_siglip(directory: str, out_dir: str, *, unsafe_unpickle: bool = False, overwrite: bool = False) -> str:
    """A transformers SiglipModel directory (or a big_vision .npz file) -> `out_dir` (model.json,
    variables/, tokenizer.json if any). SigLIP 2's fixed-resolution checkpoints on the Hub are
    SiglipModel directories (model_type "siglip"); NaFlex ones ("siglip2") are `siglip2_naflex`."""
    if os.path.isfile(directory) and directory.endswith(".npz"):
        return convert_big_vision_siglip(directory, out_dir, unsafe_unpickle=unsafe_unpickle, overwrite=overwrite)
    return _convert_directory(directory, out_dir, ARCH, "siglip", unsafe_unpickle=unsafe_unpickle, overwrite=overwrite)


def convert_siglip2_naflex(directory: str, out_dir: str, *, unsafe_unpickle: bool = False, overwrite: bool = False,
                           max_num_patches=None) -> str:
    """A transformers Siglip2Model (NaFlex) directory -> `out_dir` as `siglip2_naflex`. The Linear
    patch embedding (width, p * p * 3), on patches flattened (row, column, channel), is rewritten as
    the equal stride-p convolution; the rest is SiglipModel's layout. max_num_patches: the
    preprocessing's patch budget (default: preprocessor_config.json's, else 256)."""
    return _convert_directory(directory, out_dir, NAFLEX_ARCH, "siglip2", unsafe_unpickle=unsafe_unpickle,
                              overwrite=overwrite, max_num_patches=max_num_patches)


def convert_siglip2_naflex_vision(directory: str, out_dir: str, *, unsafe_unpickle: bool = False,
                                  overwrite: bool = False, max_num_patches=None) -> str:
    """A transformers Siglip2VisionModel (NaFlex image tower alone: config.json model_type
    "siglip2_vision_model", keys without the `vision_model.` prefix) -> `out_dir` as
    `siglip2_naflex_vision` (no text tower), converted as `convert_siglip2_naflex`."""
    return _convert_directory(directory, out_dir, NAFLEX_VISION_ARCH, "siglip2_vision_model",
                              unsafe_unpickle=unsafe_unpickle, overwrite=overwrite, max_num_patches=max_num_patches)


NAFLEX_ARCH = "siglip2_naflex"
NAFLEX_VISION_ARCH = "siglip2_naflex_vision"


def naflex_patch_to_conv(state_dict: Mapping, patch: int, what: str) -> dict:
    """Siglip2's Linear patch embedding weight (W, p * p * C) -> the conv layout (W, C, p, p)."""
    key = "vision_model.embeddings.patch_embedding.weight"
    if key not in state_dict:
        raise CheckpointMismatchError(f"{what}: missing key {key!r}")
    weight = state_dict[key]
    channels = weight.shape[1] // (patch * patch) if weight.ndim == 2 else 0
    if weight.ndim != 2 or channels != 3 or weight.shape[1] != 3 * patch * patch:
        raise CheckpointMismatchError(f"{what}: {key} has shape {tuple(weight.shape)}, expected (width, 3 * "
                                      f"{patch} * {patch}) for patch_size {patch} (NaFlex's Linear patch embedding)")
    out = dict(state_dict)
    out[key] = weight.reshape(weight.shape[0], patch, patch, channels).permute(0, 3, 1, 2)
    return out


def _convert_directory(directory, out_dir, arch, model_type, *, unsafe_unpickle, overwrite, max_num_patches=None):
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint {directory!r} is not a directory: {arch} converts a transformers "
                                f"{'SiglipModel' if model_type == 'siglip' else 'Siglip2Model'} directory "
                                f"(config.json, model.safetensors)")
    hf = read_json(os.path.join(directory, "config.json"))
    if hf.get("model_type") != model_type:
        hint = {"siglip2": " (a SigLIP 2 NaFlex model: convert it as siglip2_naflex)",
                "siglip2_vision_model": " (a SigLIP 2 NaFlex image tower: convert it as siglip2_naflex_vision)",
                "siglip": " (a fixed-resolution SigLIP model: convert it as siglip)"}.get(hf.get("model_type"), "")
        raise CheckpointMismatchError(f"config.json: model_type {hf.get('model_type')!r} is not {model_type!r}{hint}")
    weights = _weights_file(directory)
    state_dict = extract_state_dict(load_checkpoint(weights, unsafe_unpickle=unsafe_unpickle), weights)
    extra, text_tower = {}, arch != NAFLEX_VISION_ARCH
    if not text_tower:  # Siglip2VisionModel: the vision config at the top, keys without the tower prefix
        hf = {"vision_config": hf}
        state_dict = {f"vision_model.{k}": v for k, v in state_dict.items()}
    if arch in (NAFLEX_ARCH, NAFLEX_VISION_ARCH):
        patch = int((hf.get("vision_config") or {}).get("patch_size", 16))
        state_dict = naflex_patch_to_conv(state_dict, patch, weights)
        if max_num_patches is None:
            pre_path = os.path.join(directory, "preprocessor_config.json")
            max_num_patches = (read_json(pre_path) if os.path.isfile(pre_path) else {}).get("max_num_patches", 256)
        if int(max_num_patches) < 1:
            raise ValueError(f"max_num_patches must be a positive integer, got {max_num_patches!r}")
        extra = {"naflex": True, "max_num_patches": int(max_num_patches)}
    config = dataclasses.replace(infer_config(state_dict, hf, text_tower), **extra)
    notes, files = [], {}
    tokenizer_path = os.path.join(directory, TOKENIZER_FILE)
    pad_token = None
    spiece_path = os.path.join(directory, "spiece.model")
    if not text_tower:
        pass  # no text tower, no tokenizer
    elif os.path.isfile(tokenizer_path):
        with open(tokenizer_path, encoding="utf-8") as f:
            files[TOKENIZER_FILE] = f.read()
    elif os.path.isfile(spiece_path):  # google's SigLIP checkpoints ship only the SentencePiece model
        from cocoa_jax.models.text_tokenizers import siglip_tokenizer_json

        files[TOKENIZER_FILE] = siglip_tokenizer_json(spiece_path)
        notes.append("tokenizer.json written from spiece.model (SigLIP's canonicalisation, as SiglipTokenizer)")
    if TOKENIZER_FILE in files:
        tok_config_path = os.path.join(directory, "tokenizer_config.json")
        tok_config = read_json(tok_config_path) if os.path.isfile(tok_config_path) else {}
        pad_token = tok_config.get("pad_token") or "</s>"
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
        pad_id = TextTokenizer(files[TOKENIZER_FILE], context_length=config.context_length, pad_token=pad_token).pad_id
        config = dataclasses.replace(config, pad_token_id=pad_id)
    elif text_tower:
        notes.append("no tokenizer.json: the text tower takes token ids (encode_text on strings is unavailable)")
    config_dict = {**dataclasses.asdict(config), "pad_token": pad_token}
    _, abstract = models.init_abstract(arch, config_dict)
    variables = fill_variables(abstract, state_dict, siglip_key, what=weights,
                               ignore=[k for k in state_dict if IGNORED.search(k)])
    size = (f"NaFlex (positions {config.image_size // config.patch_size}^2, budget {config.max_num_patches} patches)"
            if config.naflex else f"{config.image_size} px")
    text = (f", text {config.text_width}-d x {config.text_layers} -> {config.projection_size}-d, context "
            f"{config.context_length}" if text_tower else ", no text tower")
    notes.append(f"SigLIP {size} patch {config.patch_size}, vision {config.vision_width}-d x {config.vision_layers}{text}")
    return models.save(arch, config_dict, variables, out_dir, notes=notes, overwrite=overwrite, files=files)


# --------------------------------------------------------------------------------------------
# big_vision's .npz layout (SigLIP and SigLIP 2's standard, non-NaFlex, checkpoints)
#
# Learned from google-research/big_vision at 0127fb6 (models/vit.py, models/proj/image_text/
# two_towers.py and text_transformer.py; not copied): a two-towers tree "img", "txt", "t", "b"
# flattened with "/" (an optional leading "params/" is accepted). Flax names: img/embedding (patch
# conv), img/pos_embedding (1, N, D), img/Transformer/encoderblock_{i} (or one scanned
# "encoderblock" with a leading depth axis)/{LayerNorm_0, MultiHeadDotProductAttention_0/{query,
# key,value,out}, LayerNorm_1, MlpBlock_0/{Dense_0, Dense_1}}, img/Transformer/encoder_norm,
# img/MAPHead_0/{probe, MultiHeadDotProductAttention_0, LayerNorm_0, MlpBlock_0}; txt/Embed_0,
# txt/pos_embedding, txt/Encoder_0/encoderblock_{i} ..., txt/Encoder_0/encoder_norm, txt/head.
# Attention kernels are DenseGeneral: query/key/value (D, heads, head_dim), out (heads, head_dim, D).
# They are rewritten into the transformers layout and converted by the same key table.

def _npz_blocks(tree: Mapping, prefix: str):
    """{index: {name: array}} of the encoder blocks under `prefix` (per-block or scanned)."""
    blocks = {}
    pattern = re.compile(re.escape(prefix) + r"encoderblock(?:_(\d+))?/(.+)$")
    for key, value in tree.items():
        match = pattern.match(key)
        if not match:
            continue
        index, rest = match.groups()
        if index is None:  # scanned: one tree, leading axis = depth
            for i in range(value.shape[0]):
                blocks.setdefault(i, {})[rest] = value[i]
        else:
            blocks.setdefault(int(index), {})[rest] = value
    if sorted(blocks) != list(range(len(blocks))) or not blocks:
        raise CheckpointMismatchError(f"big_vision checkpoint: no contiguous encoder blocks under {prefix!r}")
    return blocks


def _attention_to_hf(get, prefix, out_prefix):
    """DenseGeneral q/k/v/out of one MultiHeadDotProductAttention -> transformers' 2-D Linear layout."""
    out = {}
    for name, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        kernel = get(f"{prefix}{name}/kernel")
        out[f"{out_prefix}{hf}.weight"] = kernel.reshape(kernel.shape[0], -1).T
        out[f"{out_prefix}{hf}.bias"] = get(f"{prefix}{name}/bias").reshape(-1)
    kernel = get(f"{prefix}out/kernel")
    out[f"{out_prefix}out_proj.weight"] = kernel.reshape(-1, kernel.shape[-1]).T
    out[f"{out_prefix}out_proj.bias"] = get(f"{prefix}out/bias")
    return out, kernel.shape[0]


def _dense(get, prefix, hf_prefix):
    return {f"{hf_prefix}.weight": get(f"{prefix}/kernel").T, f"{hf_prefix}.bias": get(f"{prefix}/bias")}


def _norm(get, prefix, hf_prefix):
    return {f"{hf_prefix}.weight": get(f"{prefix}/scale"), f"{hf_prefix}.bias": get(f"{prefix}/bias")}


def big_vision_to_hf(tree: Mapping, what: str = "big_vision checkpoint"):
    """{big_vision key: array} -> ({transformers SiglipModel key: array}, vision heads, text heads)."""
    tree = {k[len("params/"):] if k.startswith("params/") else k: v for k, v in tree.items()}
    used = set()

    def get(key):
        if key not in tree:
            raise CheckpointMismatchError(f"{what}: missing key {key!r}")
        used.add(key)
        return tree[key]

    hf = {}
    hf["vision_model.embeddings.patch_embedding.weight"] = get("img/embedding/kernel").transpose(3, 2, 0, 1)
    hf["vision_model.embeddings.patch_embedding.bias"] = get("img/embedding/bias")
    hf["vision_model.embeddings.position_embedding.weight"] = get("img/pos_embedding").reshape(
        -1, tree["img/pos_embedding"].shape[-1])
    heads = {}
    for tower, prefix, hf_tower in (("vision", "img/Transformer/", "vision_model"),
                                    ("text", "txt/Encoder_0/", "text_model")):
        for i, block in _npz_blocks(tree, prefix).items():
            for name in block:
                used.add(f"{prefix}encoderblock_{i}/{name}")
                used.add(f"{prefix}encoderblock/{name}")
            bget = lambda key, block=block: block[key]
            base = f"{hf_tower}.encoder.layers.{i}."
            attention, heads[tower] = _attention_to_hf(bget, "MultiHeadDotProductAttention_0/", base + "self_attn.")
            hf.update(attention)
            hf.update(_norm(bget, "LayerNorm_0", base + "layer_norm1"))
            hf.update(_norm(bget, "LayerNorm_1", base + "layer_norm2"))
            hf.update(_dense(bget, "MlpBlock_0/Dense_0", base + "mlp.fc1"))
            hf.update(_dense(bget, "MlpBlock_0/Dense_1", base + "mlp.fc2"))
        hf.update(_norm(get, f"{prefix}encoder_norm", f"{hf_tower}.{'post_layernorm' if tower == 'vision' else 'final_layer_norm'}"))
    head = "img/MAPHead_0/"
    hf["vision_model.head.probe"] = get(head + "probe")
    attention, _ = _attention_to_hf(get, head + "MultiHeadDotProductAttention_0/", "map.")
    hf["vision_model.head.attention.in_proj_weight"] = np.concatenate(
        [attention[f"map.{p}_proj.weight"] for p in "qkv"], axis=0)
    hf["vision_model.head.attention.in_proj_bias"] = np.concatenate([attention[f"map.{p}_proj.bias"] for p in "qkv"])
    hf["vision_model.head.attention.out_proj.weight"] = attention["map.out_proj.weight"]
    hf["vision_model.head.attention.out_proj.bias"] = attention["map.out_proj.bias"]
    hf.update(_norm(get, head + "LayerNorm_0", "vision_model.head.layernorm"))
    hf.update(_dense(get, head + "MlpBlock_0/Dense_0", "vision_model.head.mlp.fc1"))
    hf.update(_dense(get, head + "MlpBlock_0/Dense_1", "vision_model.head.mlp.fc2"))
    hf["text_model.embeddings.token_embedding.weight"] = get("txt/Embed_0/embedding")
    hf["text_model.embeddings.position_embedding.weight"] = get("txt/pos_embedding").reshape(
        -1, tree["txt/pos_embedding"].shape[-1])
    hf.update(_dense(get, "txt/head", "text_model.head"))
    hf["logit_scale"] = np.asarray(get("t")).reshape(1)
    hf["logit_bias"] = np.asarray(tree["b"]).reshape(1) if "b" in tree else np.zeros(1, np.float32)
    used.add("b")
    if "img/head/kernel" in tree:
        raise CheckpointMismatchError(f"{what}: the image tower has a head (img/head): not the SigLIP layout "
                                      f"(its image representation is the MAP head's output)")
    unexpected = sorted(set(tree) - used)
    if unexpected:
        raise CheckpointMismatchError(f"{what}: unexpected key(s) not used by the model: {unexpected[:5]}")
    return hf, heads["vision"], heads["text"]


def convert_big_vision_siglip(npz_path: str, out_dir: str, *, unsafe_unpickle: bool = False,
                              overwrite: bool = False) -> str:
    """A big_vision SigLIP / SigLIP 2 (non-NaFlex) `.npz` -> `out_dir` (no tokenizer: token ids only)."""
    import torch

    del unsafe_unpickle  # an .npz holds arrays only (np.load(allow_pickle=False))
    if not os.path.isfile(npz_path):
        raise FileNotFoundError(f"checkpoint {npz_path!r} is not a file (a big_vision .npz)")
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            tree = {k: np.asarray(archive[k]) for k in archive.files}
    except (ValueError, OSError) as err:
        raise NotACheckpointError(f"checkpoint {npz_path!r} is not a readable .npz ({type(err).__name__})") from None
    hf, vision_heads, text_heads = big_vision_to_hf(tree, npz_path)
    state_dict = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in hf.items()}
    config = infer_config(state_dict, {"vision_config": {"num_attention_heads": vision_heads},
                                       "text_config": {"num_attention_heads": text_heads}})
    config_dict = {**dataclasses.asdict(config), "pad_token": None}
    _, abstract = models.init_abstract(ARCH, config_dict)
    variables = fill_variables(abstract, state_dict, siglip_key, what=npz_path)
    notes = ["big_vision .npz (SigLIP / SigLIP 2 standard layout): no tokenizer (big_vision tokenizes with "
             "SentencePiece / Gemma; pass token ids padded with id 1, EOS)",
             f"SigLIP {config.image_size} px patch {config.patch_size}, vision {config.vision_width}-d x "
             f"{config.vision_layers}, text {config.text_width}-d x {config.text_layers} -> {config.projection_size}-d"]
    return models.save(ARCH, config_dict, variables, out_dir, notes=notes, overwrite=overwrite)
