"""Hugging Face `SiglipModel` directory (config.json + model.safetensors / pytorch_model.bin) ->
`siglip` (both towers).

Sizes are read off the weights; the head counts and the LayerNorm epsilon from config.json
(`vision_config` / `text_config`). Only `hidden_act` "gelu_pytorch_tanh" (every released SigLIP)
is accepted. tokenizer.json, when the directory has one, is copied (with the pad token of
tokenizer_config.json) so `model.encode_text(["a photo of a dog"])` works; without it the text
tower takes token ids. The big_vision `.npz` layout is not read here.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping, Tuple

from cocoa_jax import models
from cocoa_jax.models.siglip import SiglipConfig
from cocoa_jax.models.text_tokenizers import TOKENIZER_FILE, TextTokenizer, read_json
from .bert import _weights_file
from .common import (CheckpointMismatchError, conv_kernel, extract_state_dict, fill_variables, identity,
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


def infer_config(state_dict: Mapping, hf: Mapping) -> SiglipConfig:
    """SiglipConfig from tensor shapes and config.json's head counts / epsilon."""
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
    """A transformers SiglipModel directory -> `out_dir` (model.json, variables/, tokenizer.json if any)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint {directory!r} is not a directory: siglip converts a transformers "
                                f"SiglipModel directory (config.json, model.safetensors)")
    hf = read_json(os.path.join(directory, "config.json"))
    if hf.get("model_type") != "siglip":
        raise CheckpointMismatchError(f"config.json: model_type {hf.get('model_type')!r} is not 'siglip' (SigLIP 2's "
                                      f"NaFlex 'siglip2' models are not supported)")
    weights = _weights_file(directory)
    state_dict = extract_state_dict(load_checkpoint(weights, unsafe_unpickle=unsafe_unpickle), weights)
    config = infer_config(state_dict, hf)
    notes, files = [], {}
    tokenizer_path = os.path.join(directory, TOKENIZER_FILE)
    pad_token = None
    if os.path.isfile(tokenizer_path):
        with open(tokenizer_path, encoding="utf-8") as f:
            files[TOKENIZER_FILE] = f.read()
        tok_config_path = os.path.join(directory, "tokenizer_config.json")
        tok_config = read_json(tok_config_path) if os.path.isfile(tok_config_path) else {}
        pad_token = tok_config.get("pad_token") or "</s>"
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
        pad_id = TextTokenizer(files[TOKENIZER_FILE], context_length=config.context_length, pad_token=pad_token).pad_id
        config = dataclasses.replace(config, pad_token_id=pad_id)
    else:
        notes.append("no tokenizer.json: the text tower takes token ids (encode_text on strings is unavailable)")
    config_dict = {**dataclasses.asdict(config), "pad_token": pad_token}
    _, abstract = models.init_abstract(ARCH, config_dict)
    variables = fill_variables(abstract, state_dict, siglip_key, what=weights,
                               ignore=[k for k in state_dict if IGNORED.search(k)])
    notes.append(f"SigLIP {config.image_size} px patch {config.patch_size}, vision {config.vision_width}-d x "
                 f"{config.vision_layers}, text {config.text_width}-d x {config.text_layers} -> "
                 f"{config.projection_size}-d, context {config.context_length}")
    return models.save(ARCH, config_dict, variables, out_dir, notes=notes, overwrite=overwrite, files=files)
