"""The torch side of the SigLIP parity tests: `transformers`' SiglipModel (code cocoa-jax did not
write) with RANDOM weights at a small size, saved with save_pretrained; its image features and
their pixel gradients, text features and their token-embedding gradients (the token embedding's
output replaced by a leaf tensor through a forward hook, as Captum's layer methods do).
torch and transformers are imported inside the functions only."""
from __future__ import annotations

import os

SMALL = dict(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=4, vision_mlp=64,
             vocab_size=60, context_length=12, text_width=32, text_layers=2, text_heads=4, text_mlp=64,
             projection_size=24)


def save_random_siglip(out_dir: str, seed: int = 0):
    """A random-weight SiglipModel of SMALL's sizes in `out_dir` (config.json + model.safetensors);
    returns the torch model. Every parameter gets noise: the default init leaves biases at zero."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    import torch
    import transformers

    s = SMALL
    vision = dict(hidden_size=s["vision_width"], intermediate_size=s["vision_mlp"], num_hidden_layers=s["vision_layers"],
                  num_attention_heads=s["vision_heads"], image_size=s["image_size"], patch_size=s["patch_size"])
    text = dict(hidden_size=s["text_width"], intermediate_size=s["text_mlp"], num_hidden_layers=s["text_layers"],
                num_attention_heads=s["text_heads"], vocab_size=s["vocab_size"],
                max_position_embeddings=s["context_length"], projection_size=s["projection_size"], pad_token_id=1)
    torch.manual_seed(seed)
    model = transformers.SiglipModel(transformers.SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir)
    return model


def image_features_and_grad(model, x_nhwc, direction):
    """(N, R, R, 3) normalised pixels -> (features (N, D), d<features, direction>/dx NHWC), float64."""
    import numpy as np
    import torch

    x = torch.as_tensor(np.transpose(np.asarray(x_nhwc), (0, 3, 1, 2)).copy()).requires_grad_(True)
    out = model.vision_model(pixel_values=x).pooler_output
    (out * torch.as_tensor(np.asarray(direction), dtype=out.dtype)).sum().backward()
    return out.detach().double().numpy(), np.transpose(x.grad.double().numpy(), (0, 2, 3, 1))


def text_features_and_grad(model, ids, direction):
    """(N, L) ids -> (features (N, P), d<features, direction>/d token embeddings (N, L, E)), float64."""
    import numpy as np
    import torch

    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    table = model.text_model.embeddings.token_embedding
    words = table(ids_t).detach().clone().requires_grad_(True)
    hook = table.register_forward_hook(lambda module, inputs, output: words)
    try:
        out = model.text_model(input_ids=ids_t).pooler_output
    finally:
        hook.remove()
    (out * torch.as_tensor(np.asarray(direction), dtype=out.dtype)).sum().backward()
    return out.detach().double().numpy(), words.grad.double().numpy()


def save_big_vision_npz(model, path: str, scanned: bool = False) -> str:
    """The torch model's weights written in big_vision's .npz layout (two_towers: img / txt / t / b,
    "/"-joined Flax names; attention kernels as DenseGeneral (D, heads, head_dim) and (heads,
    head_dim, D)), as read from google-research/big_vision's vit.py / text_transformer.py.
    scanned: the blocks stacked under one "encoderblock" (big_vision's scan=True layout).
    This is the layout the converter must read; the numbers are then compared with the torch
    model's own forward, so a wrong transpose or head split fails the test."""
    import numpy as np

    sd = {k: v.detach().double().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    out = {}

    def dense(prefix, hf):
        out[f"{prefix}/kernel"], out[f"{prefix}/bias"] = sd[f"{hf}.weight"].T, sd[f"{hf}.bias"]

    def norm(prefix, hf):
        out[f"{prefix}/scale"], out[f"{prefix}/bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def attention(prefix, q, k, v, o, heads):
        for name, (w, b) in (("query", q), ("key", k), ("value", v)):
            width = w.shape[1]
            out[f"{prefix}/{name}/kernel"] = w.T.reshape(width, heads, -1)
            out[f"{prefix}/{name}/bias"] = b.reshape(heads, -1)
        out[f"{prefix}/out/kernel"] = o[0].T.reshape(heads, -1, o[0].shape[0])
        out[f"{prefix}/out/bias"] = o[1]

    s = SMALL
    out["img/embedding/kernel"] = sd["vision_model.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
    out["img/embedding/bias"] = sd["vision_model.embeddings.patch_embedding.bias"]
    out["img/pos_embedding"] = sd["vision_model.embeddings.position_embedding.weight"][None]
    for tower, prefix, hf_tower, heads, depth in (("img", "img/Transformer", "vision_model", s["vision_heads"],
                                                   s["vision_layers"]),
                                                  ("txt", "txt/Encoder_0", "text_model", s["text_heads"], s["text_layers"])):
        for i in range(depth):
            base, hf = f"{prefix}/encoderblock_{i}", f"{hf_tower}.encoder.layers.{i}"
            norm(f"{base}/LayerNorm_0", f"{hf}.layer_norm1")
            norm(f"{base}/LayerNorm_1", f"{hf}.layer_norm2")
            proj = lambda name, hf=hf: (sd[f"{hf}.self_attn.{name}.weight"], sd[f"{hf}.self_attn.{name}.bias"])
            attention(f"{base}/MultiHeadDotProductAttention_0", proj("q_proj"), proj("k_proj"), proj("v_proj"),
                      proj("out_proj"), heads)
            dense(f"{base}/MlpBlock_0/Dense_0", f"{hf}.mlp.fc1")
            dense(f"{base}/MlpBlock_0/Dense_1", f"{hf}.mlp.fc2")
        norm(f"{prefix}/encoder_norm", f"{hf_tower}.{'post_layernorm' if tower == 'img' else 'final_layer_norm'}")
    head = "vision_model.head"
    out["img/MAPHead_0/probe"] = sd[f"{head}.probe"]
    w, b = sd[f"{head}.attention.in_proj_weight"], sd[f"{head}.attention.in_proj_bias"]
    thirds = [(w[i * len(w) // 3:(i + 1) * len(w) // 3], b[i * len(b) // 3:(i + 1) * len(b) // 3]) for i in range(3)]
    attention("img/MAPHead_0/MultiHeadDotProductAttention_0", *thirds,
              (sd[f"{head}.attention.out_proj.weight"], sd[f"{head}.attention.out_proj.bias"]), s["vision_heads"])
    norm("img/MAPHead_0/LayerNorm_0", f"{head}.layernorm")
    dense("img/MAPHead_0/MlpBlock_0/Dense_0", f"{head}.mlp.fc1")
    dense("img/MAPHead_0/MlpBlock_0/Dense_1", f"{head}.mlp.fc2")
    out["txt/Embed_0/embedding"] = sd["text_model.embeddings.token_embedding.weight"]
    out["txt/pos_embedding"] = sd["text_model.embeddings.position_embedding.weight"][None]
    dense("txt/head", "text_model.head")
    out["t"], out["b"] = sd["logit_scale"], sd["logit_bias"]
    if scanned:
        for prefix, depth in (("img/Transformer", s["vision_layers"]), ("txt/Encoder_0", s["text_layers"])):
            names = {k.split("/", 3)[3] for k in out if k.startswith(f"{prefix}/encoderblock_")}
            for name in names:
                out[f"{prefix}/encoderblock/{name}"] = np.stack(
                    [out.pop(f"{prefix}/encoderblock_{i}/{name}") for i in range(depth)])
    np.savez(path, **out)
    return path
