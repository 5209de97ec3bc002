"""sentence-transformers model directory (BERT family; XLM-RoBERTa layout) -> `sentence_bert`.

The CHECKPOINT is a DIRECTORY laid out as all-MiniLM-L6-v2, BGE, E5 or GTE ship it:
  config.json                       transformers' BertConfig / XLMRobertaConfig
  model.safetensors | pytorch_model.bin   the BertModel weights (pytorch_model.bin read with
                                    torch.load(weights_only=True) unless --unsafe-unpickle)
  tokenizer.json (+ tokenizer_config.json for the pad / mask tokens and model_max_length)
  modules.json                      sentence-transformers' modules: Transformer, Pooling, Normalize
  1_Pooling/config.json             the pooling mode(s) (current or legacy `pooling_mode_*` keys)
  sentence_bert_config.json         max_seq_length and do_lower_case, when present
A plain transformers directory (no modules.json) converts with `--option pooling=mean|cls|...`
(and `normalize=true|false`, default false). `context_length=N` overrides the max length.
The pooler (`pooler.dense`, unused by sentence-transformers) and the buffers `position_ids` /
`token_type_ids` are dropped; a note says so. tokenizer.json is copied into OUT_DIR.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping, Tuple

from cocoa_jax import models
from cocoa_jax.models.bert import POOLING_MODES, BertConfig
from cocoa_jax.models.text_tokenizers import TOKENIZER_FILE, read_json
from .common import (CheckpointMismatchError, NotACheckpointError, extract_state_dict, fill_variables, identity,
                     linear_kernel, load_checkpoint)

ARCH = "sentence_bert"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODEL_TYPES = {"bert": "bert", "xlm-roberta": "xlm_roberta", "roberta": "xlm_roberta", "camembert": "xlm_roberta"}
# Legacy 1_Pooling/config.json keys, in sentence-transformers' concatenation order.
LEGACY_POOLING = (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                  ("pooling_mode_mean_tokens", "mean"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
                  ("pooling_mode_weightedmean_tokens", "weightedmean"), ("pooling_mode_lasttoken", "lasttoken"))
IGNORED = re.compile(r"^(pooler\.|embeddings\.position_ids$|embeddings\.token_type_ids$)")
OPTIONS = ("pooling", "normalize", "context_length")


def _module_kind(entry) -> str:
    """'Transformer' / 'Pooling' / 'Normalize' / ... from a modules.json entry's `type`."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def read_modules(directory: str):
    """(transformer dir, pooling config dict or None, normalize) from modules.json; None when absent."""
    path = os.path.join(directory, "modules.json")
    if not os.path.isfile(path):
        return None
    import json

    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except ValueError:
        raise CheckpointMismatchError(f"{path!r} is not valid JSON") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CheckpointMismatchError(f"{path!r} must be a list of modules")
    kinds = [_module_kind(e) for e in entries]
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if unsupported:
        raise CheckpointMismatchError(f"{path!r}: module {unsupported[0]!r} is not supported (only Transformer, "
                                      f"Pooling and Normalize)")
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise CheckpointMismatchError(f"{path!r}: expected the modules Transformer, Pooling[, Normalize] in that "
                                      f"order, got {kinds}")
    transformer_dir = os.path.join(directory, entries[0].get("path", "") or "")
    pooling = read_json(os.path.join(directory, entries[1].get("path", ""), "config.json"))
    return transformer_dir, pooling, len(kinds) == 3


def pooling_modes(pooling_config: Mapping) -> Tuple[str, ...]:
    """The pooling modes of a 1_Pooling/config.json (current `pooling_mode` or legacy booleans)."""
    if "pooling_mode" in pooling_config:
        mode = pooling_config["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(mode for key, mode in LEGACY_POOLING if pooling_config.get(key, False)) or ("mean",)
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad:
        raise CheckpointMismatchError(f"pooling mode {bad[0]!r} is not one of {POOLING_MODES}")
    return modes


def _count_layers(state_dict: Mapping) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if indices != set(range(len(indices))):
        raise CheckpointMismatchError(f"encoder.layer indices are not contiguous: {sorted(indices)}")
    return len(indices)


def _strip_prefix(state_dict: Mapping):
    """Keys under `bert.` / `roberta.` / `model.` (a task model's encoder) -> bare; (dict, prefix)."""
    for prefix in ("bert.", "roberta.", "model."):
        if any(k.startswith(prefix + "embeddings.") for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}, prefix
    return dict(state_dict), ""


def _legacy_norm_names(state_dict: Mapping):
    """Old TF-converted BERT files name LayerNorm's affine `gamma`/`beta`: -> weight/bias."""
    renamed, original = {}, {}
    for key, value in state_dict.items():
        new = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
        renamed[new] = value
        original[new] = key
    return renamed, original


def bert_key(path: Tuple[str, ...], shape: Tuple[int, ...]):
    """Flax path of `cocoa_jax.models.bert.SentenceBert` -> (transformers key, layout transform)."""
    _, *modules, leaf = path
    if modules[0] in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        return f"embeddings.{modules[0]}.weight", identity
    name = {"kernel": "weight", "bias": "bias", "scale": "weight"}[leaf]
    transform = linear_kernel if leaf == "kernel" else identity
    if modules[0] == "embeddings_LayerNorm":
        return f"embeddings.LayerNorm.{name}", identity
    layer = "encoder.layer." + modules[0].split("_", 1)[1]
    rest = {("attention", "query"): "attention.self.query", ("attention", "key"): "attention.self.key",
            ("attention", "value"): "attention.self.value", ("attention", "output_dense"): "attention.output.dense",
            ("attention", "output_LayerNorm"): "attention.output.LayerNorm",
            ("intermediate_dense",): "intermediate.dense", ("output_dense",): "output.dense",
            ("output_LayerNorm",): "output.LayerNorm"}[tuple(modules[1:])]
    return f"{layer}.{rest}.{name}", transform


def _weights_file(directory: str) -> str:
    for name in WEIGHT_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    if os.path.isfile(os.path.join(directory, "model.safetensors.index.json")):
        raise NotACheckpointError(f"{directory!r} holds sharded weights (model.safetensors.index.json), which are "
                                  f"not supported: save the model as one model.safetensors")
    raise FileNotFoundError(f"model directory {directory!r} has neither {' nor '.join(WEIGHT_FILES)}")


def _bool_option(value, name):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"option {name} must be true or false, got {value!r}")
    return text in ("true", "1", "yes")


def read_config(directory: str, *, pooling=None, normalize=None, context_length=None):
    """(BertConfig, transformer dir, notes) from a sentence-transformers / transformers directory."""
    notes = []
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint {directory!r} is not a directory: sentence_bert converts a "
                                f"sentence-transformers model directory (config.json, model.safetensors, ...)")
    modules = read_modules(directory)
    if modules is None:
        transformer_dir = directory
        if pooling is None:
            raise ValueError(f"{directory!r} has no modules.json (not a sentence-transformers directory): pass "
                             f"--option pooling=mean (or cls, max, ...) to say how to pool the token states")
        modes = tuple(str(pooling).split("+"))
        normalize = _bool_option(normalize, "normalize") if normalize is not None else False
        notes.append(f"no modules.json: pooling {'+'.join(modes)}, normalize {normalize} from the options")
    else:
        transformer_dir, pooling_config, has_normalize = modules
        modes = pooling_modes(pooling_config) if pooling is None else tuple(str(pooling).split("+"))
        normalize = has_normalize if normalize is None else _bool_option(normalize, "normalize")
        if pooling_config.get("include_prompt", True) is False:
            notes.append("the pooling excludes prompt tokens (include_prompt false): here every token is pooled; "
                         "give texts without the prompt or expect a small difference")
    hf = read_json(os.path.join(transformer_dir, "config.json"))
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointMismatchError(f"config.json: model_type {model_type!r} is not one of {sorted(MODEL_TYPES)}")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointMismatchError(f"config.json: hidden_act {hf.get('hidden_act')!r} is not supported (only "
                                      f"'gelu', the exact GELU BERT uses)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointMismatchError(f"config.json: position_embedding_type {hf['position_embedding_type']!r} is "
                                      f"not supported (only 'absolute')")
    st_config = os.path.join(directory, "sentence_bert_config.json")
    st = read_json(st_config) if os.path.isfile(st_config) else {}
    tok_config_path = os.path.join(transformer_dir, "tokenizer_config.json")
    tok_config = read_json(tok_config_path) if os.path.isfile(tok_config_path) else {}
    layout = MODEL_TYPES[model_type]
    pad_id = int(hf.get("pad_token_id", 1 if layout == "xlm_roberta" else 0) or 0)
    offset = pad_id + 1 if layout == "xlm_roberta" else 0
    longest = int(hf["max_position_embeddings"]) - offset
    if context_length is None:
        context_length = st.get("max_seq_length") or tok_config.get("model_max_length")
        if not isinstance(context_length, int) or context_length > longest:
            context_length = longest
    config = BertConfig(
        vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
        num_hidden_layers=int(hf["num_hidden_layers"]), num_attention_heads=int(hf["num_attention_heads"]),
        intermediate_size=int(hf["intermediate_size"]), max_position_embeddings=int(hf["max_position_embeddings"]),
        type_vocab_size=int(hf.get("type_vocab_size", 2)), layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        context_length=int(context_length), pooling=modes, normalize=bool(normalize), layout=layout,
        pad_token_id=pad_id, lowercase=bool(st.get("do_lower_case", False)))
    return config, transformer_dir, tok_config, notes


def _special_tokens(config: BertConfig, tokenizer_json: str, tok_config: Mapping, what: str) -> BertConfig:
    """pad_token (string) and mask_token_id from tokenizer_config.json, checked against tokenizer.json."""
    from cocoa_jax.models.text_tokenizers import TextTokenizer

    def token_text(value):
        return value.get("content") if isinstance(value, dict) else value

    default_pad = "<pad>" if config.layout == "xlm_roberta" else "[PAD]"
    pad = token_text(tok_config.get("pad_token")) or default_pad
    tokenizer = TextTokenizer(tokenizer_json, context_length=config.context_length, pad_token=pad)
    if tokenizer.pad_id != config.pad_token_id:
        raise CheckpointMismatchError(f"{what}: the pad token {pad!r} has id {tokenizer.pad_id} in tokenizer.json "
                                      f"but config.json's pad_token_id is {config.pad_token_id}")
    mask = token_text(tok_config.get("mask_token")) or ("<mask>" if config.layout == "xlm_roberta" else "[MASK]")
    return dataclasses.replace(config, pad_token=pad, mask_token_id=tokenizer.token_id(mask))


def convert_directory(directory: str, out_dir: str, *, unsafe_unpickle: bool = False, overwrite: bool = False,
                      pooling=None, normalize=None, context_length=None) -> str:
    """A sentence-transformers (or transformers, with --option pooling=...) directory -> `out_dir`."""
    if context_length is not None:
        try:
            context_length = int(context_length)
        except ValueError:
            raise ValueError(f"option context_length must be an integer, got {context_length!r}") from None
    config, transformer_dir, tok_config, notes = read_config(directory, pooling=pooling, normalize=normalize,
                                                             context_length=context_length)
    tokenizer_path = os.path.join(transformer_dir, TOKENIZER_FILE)
    if not os.path.isfile(tokenizer_path):
        raise FileNotFoundError(f"{directory!r} has no {TOKENIZER_FILE} (a fast tokenizer file); older models with "
                                f"only vocab.txt / sentencepiece.bpe.model: re-save the tokenizer with transformers' "
                                f"AutoTokenizer.save_pretrained first")
    with open(tokenizer_path, encoding="utf-8") as f:
        tokenizer_json = f.read()
    config = _special_tokens(config, tokenizer_json, tok_config, directory)
    weights = _weights_file(transformer_dir)
    state_dict = extract_state_dict(load_checkpoint(weights, unsafe_unpickle=unsafe_unpickle), weights)
    state_dict, prefix = _strip_prefix(state_dict)
    state_dict, original = _legacy_norm_names(state_dict)
    layers = _count_layers(state_dict)
    if layers != config.num_hidden_layers:
        raise CheckpointMismatchError(f"{weights}: {layers} encoder layers but config.json says "
                                      f"{config.num_hidden_layers}")
    config_dict = dataclasses.asdict(config)
    _, abstract = models.init_abstract(ARCH, config_dict)
    ignore = [k for k in state_dict if IGNORED.match(k)]
    variables = fill_variables(abstract, state_dict, bert_key, ignore=ignore, what=weights,
                               stored_key=lambda key: prefix + original.get(key, key))
    if any(k.startswith("pooler.") for k in ignore):
        notes.append("dropped the pooler (pooler.dense): sentence-transformers pools the token states itself")
    if prefix:
        notes.append(f"read the encoder under the prefix {prefix!r}")
    notes.append(f"{config.layout} {config.num_hidden_layers} layers, width {config.hidden_size}, pooling "
                 f"{'+'.join(config.pooling)}{', normalized' if config.normalize else ''}, {config.dim}-d, "
                 f"context {config.context_length} tokens")
    return models.save(ARCH, config_dict, variables, out_dir, notes=notes, overwrite=overwrite,
                       files={TOKENIZER_FILE: tokenizer_json})


convert_sentence_bert = convert_directory
