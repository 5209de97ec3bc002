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
