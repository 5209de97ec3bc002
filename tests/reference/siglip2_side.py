"""The torch side of the SigLIP 2 NaFlex tests: `transformers`' Siglip2Model and Siglip2ImageProcessor
(code cocoa-jax did not write), RANDOM weights at a small size, saved with save_pretrained; pooled
image features and their gradients w.r.t. the patch values, on the processor's padded layout
(pixel_values, pixel_attention_mask, spatial_shapes). torch and transformers are imported inside."""
from __future__ import annotations

import os

SMALL = dict(patch_size=4, vision_width=64, vision_layers=2, vision_heads=4, vision_mlp=96, vocab_size=60,
             context_length=12, text_width=32, text_layers=2, text_heads=4, text_mlp=64, projection_size=64)
POSITIONS = 64  # the stored 8 x 8 grid of learned positions
MAX_NUM_PATCHES = 64


def save_random_siglip2(out_dir: str, seed: int = 0):
    """A random-weight Siglip2Model of SMALL's sizes in `out_dir` (config.json, model.safetensors,
    preprocessor_config.json with MAX_NUM_PATCHES); returns the torch model. Every parameter gets
    noise (the default init leaves biases at zero)."""
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    import torch
    import transformers

    s = SMALL
    vision = dict(hidden_size=s["vision_width"], intermediate_size=s["vision_mlp"], num_hidden_layers=s["vision_layers"],
                  num_attention_heads=s["vision_heads"], patch_size=s["patch_size"], num_patches=POSITIONS)
    text = dict(hidden_size=s["text_width"], intermediate_size=s["text_mlp"], num_hidden_layers=s["text_layers"],
                num_attention_heads=s["text_heads"], vocab_size=s["vocab_size"],
                max_position_embeddings=s["context_length"], projection_size=s["projection_size"], pad_token_id=1)
    torch.manual_seed(seed)
    model = transformers.Siglip2Model(transformers.Siglip2Config(text_config=text, vision_config=vision))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir)
    processor(MAX_NUM_PATCHES).save_pretrained(out_dir)
    return model


def processor(max_num_patches: int = MAX_NUM_PATCHES):
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    # the PIL backend: what transformers falls back to without torchvision (not installed here)
    return Siglip2ImageProcessorPil(patch_size=SMALL["patch_size"], max_num_patches=max_num_patches)


def patchify(x_nhwc, max_num_patches: int = MAX_NUM_PATCHES):
    """(N, H, W, C) normalised pixels -> the processor's (pixel_values, pixel_attention_mask,
    spatial_shapes), through transformers' own patch and padding helpers."""
    import numpy as np
    import torch
    from transformers.models.siglip2 import image_processing_pil_siglip2 as ip

    values, masks, shapes = [], [], []
    for image in np.asarray(x_nhwc):
        chw = np.transpose(image, (2, 0, 1)).copy()
        patches, mask = ip.pad_along_first_dim(ip.convert_image_to_patches(chw, SMALL["patch_size"]), max_num_patches)
        values.append(torch.as_tensor(patches))
        masks.append(torch.as_tensor(mask))
        shapes.append((image.shape[0] // SMALL["patch_size"], image.shape[1] // SMALL["patch_size"]))
    return torch.stack(values), torch.stack(masks), torch.as_tensor(shapes, dtype=torch.long)


def image_features_and_grad(model, x_nhwc, direction, max_num_patches: int = MAX_NUM_PATCHES):
    """(N, H, W, 3) normalised pixels -> (pooled (N, D), d<pooled, direction>/d pixel_values
    (N, max_num_patches, p * p * 3), the mask (N, max_num_patches)), float64 numpy."""
    import numpy as np
    import torch

    values, mask, shapes = patchify(x_nhwc, max_num_patches)
    values = values.clone().requires_grad_(True)
    out = model.vision_model(pixel_values=values, pixel_attention_mask=mask, spatial_shapes=shapes).pooler_output
    (out * torch.as_tensor(np.asarray(direction), dtype=out.dtype)).sum().backward()
    return out.detach().double().numpy(), values.grad.double().numpy(), mask.numpy()
