"""The torch side of the BERT / sentence-transformers parity tests: code cocoa-jax did not write.

`save_random_sentence_model(out_dir, ...)` builds a RANDOM-weight `transformers` BertModel (or
XLMRobertaModel) from a small config, wraps it in sentence-transformers' own Transformer, Pooling
and (optionally) Normalize modules and saves it with sentence-transformers' `save`, so the
directory has the layout of all-MiniLM-L6-v2 / BGE / E5 / GTE checkpoints (config.json,
model.safetensors, tokenizer.json, modules.json, 1_Pooling/config.json, sentence_bert_config.json).
`reference_outputs(model_dir, ids, mask, direction)` loads it back with sentence-transformers and
returns the sentence embeddings and the gradient of <embedding, direction> w.r.t. the word
embeddings fed as `inputs_embeds` (positions and token types are added inside, as in the model).

The tiny WordPiece vocabulary (`WORDPIECE_VOCAB`) is written here, so nothing is downloaded;
`write_wordpiece_vocab` writes it as vocab.txt for transformers' pure-Python BertTokenizerLegacy.
torch, transformers and sentence-transformers are imported inside the functions only.
"""
from __future__ import annotations

import functools
import os

# [PAD] first (id 0) as in BERT's vocabularies; words, sub-words, accents, CJK characters, an emoji.
WORDPIECE_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    + ["the", "a", "dog", "cat", "photo", "of", "runs", "run", "##s", "##ing", "##ed", "play", "park",
       "cafe", "caf", "##e", "##é", "é", "naive", "na", "##ive", "##ï", "über", "uber", "東", "京", "日", "本",
       "語", "😀", "hello", "world", "un", "##believ", "##able", "red", "ball"]
)
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _offline():
    os.environ.update(OFFLINE)


def write_wordpiece_vocab(directory: str) -> str:
    """vocab.txt (one token a line, the id is the line number) in `directory`; returns its path."""
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(WORDPIECE_VOCAB) + "\n")
    return path


def wordpiece_tokenizer(lowercase: bool = True, strip_accents=None):
    """transformers' BertTokenizer (backed by `tokenizers`) over WORDPIECE_VOCAB."""
    _offline()
    from transformers import BertTokenizer

    vocab = {token: i for i, token in enumerate(WORDPIECE_VOCAB)}
    return BertTokenizer(vocab=vocab, do_lower_case=lowercase, strip_accents=strip_accents)


def legacy_wordpiece_tokenizer(directory: str, lowercase: bool = True, strip_accents=None):
    """transformers' pure-Python BertTokenizerLegacy over the same vocabulary (vocab.txt)."""
    _offline()
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    return BertTokenizerLegacy(write_wordpiece_vocab(directory), do_lower_case=lowercase,
                               strip_accents=strip_accents)


def save_random_sentence_model(out_dir: str, *, kind: str = "bert", pooling="mean", normalize: bool = True,
                               seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 4,
                               intermediate: int = 64, max_position: int = 40, max_seq_length: int = 24,
                               safetensors: bool = True) -> str:
    """A random-weight sentence-transformers model saved by sentence-transformers; returns out_dir.

    kind: "bert" (BertModel, 2 token types) or "xlm_roberta" (XLMRobertaModel, padding_idx 1, one
    token type; the WordPiece tokenizer is reused: only the weights' layout matters here).
    pooling: a sentence-transformers pooling mode or a tuple of them (concatenated).
    safetensors: False saves pytorch_model.bin instead of model.safetensors.
    """
    _offline()
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    torch.manual_seed(seed)
    common = dict(vocab_size=len(WORDPIECE_VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=max_position,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(**common, type_vocab_size=2, pad_token_id=0),
                                       add_pooling_layer=True)
    elif kind == "xlm_roberta":
        model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
            **common, type_vocab_size=1, pad_token_id=0), add_pooling_layer=True)
    else:
        raise ValueError(f"kind must be 'bert' or 'xlm_roberta', got {kind!r}")
    with torch.no_grad():  # random LayerNorm affine too (the default init is 1/0: it would test nothing)
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf_dir = os.path.join(out_dir + ".hf")
    model.save_pretrained(hf_dir, safe_serialization=safetensors)
    wordpiece_tokenizer().save_pretrained(hf_dir)
    transformer = Transformer(hf_dir, max_seq_length=max_seq_length)
    modules = [transformer, Pooling(hidden, pooling_mode=pooling)]
    if normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(out_dir, safe_serialization=safetensors)
    return out_dir


@functools.lru_cache(maxsize=8)
def _sentence_transformer(model_dir: str):
    _offline()
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_dir, device="cpu")
    st.eval()
    return st


def reference_outputs(model_dir: str, ids, mask, direction):
    """sentence-transformers on `model_dir`: (embeddings (N, D), d<embedding, direction>/d word
    embeddings (N, L, H)), float64 numpy. ids, mask: (N, L) integer arrays; direction: (N, D)."""
    _offline()
    import numpy as np
    import torch
    st = _sentence_transformer(model_dir)
    transformer = st[0]
    hf = transformer.model if hasattr(transformer, "model") else transformer.auto_model
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    mask_t = torch.as_tensor(np.asarray(mask), dtype=torch.long)
    words = hf.get_input_embeddings()(ids_t).detach().clone().requires_grad_(True)
    out = hf(inputs_embeds=words, attention_mask=mask_t)
    features = {"token_embeddings": out.last_hidden_state, "attention_mask": mask_t}
    for module in list(st)[1:]:
        features = module(features)
    embedding = features["sentence_embedding"]
    (embedding * torch.as_tensor(np.asarray(direction), dtype=embedding.dtype)).sum().backward()
    return embedding.detach().double().numpy(), words.grad.double().numpy()


def encode_texts(model_dir: str, texts):
    """sentence-transformers' own `encode` (its tokenizer, truncation and pooling): (N, D) float64."""
    _offline()
    import numpy as np

    st = _sentence_transformer(model_dir)
    return np.asarray(st.encode(list(texts), convert_to_numpy=True, batch_size=64), np.float64)
