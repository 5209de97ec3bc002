"""A tiny Vision Transformer on the bundled digits (the trained encoder the ViT-native methods are measured on).

The shipped digits encoders are ResNets, so AttnLRP, attention rollout and token drop have no
trained model to be measured on without a download. This is one: the ported `vit.ViT` module
(DINO layout: class token, learned positions, pre-LayerNorm blocks, exact GELU, no LayerScale,
the class token after the final norm as the representation) at `CONFIG`'s size, trained with
SimCLR on the 1297 training digits like the embedded `digits` encoder
(`python -m cocoa_jax.training.digits_vit`, `cocoa_jax.training.digits_vit.train`), shipped as a
model directory in `cocoa_jax/weights/digits_vit/` (`WEIGHTS_DIR`), loaded with
`cocoa_jax.models.load("digits_vit")`.

Input (N, 32, 32, 1) grey levels in [0, 1], no mean/std (as the digits encoder); 4 x 4 patches,
so 8 x 8 = 64 patch tokens + the class token. Output (N, EMBED_DIM). This module only holds the
configuration; the architecture table entry is `architectures.ARCHITECTURES["digits_vit"]`.
"""
from __future__ import annotations

import os

from cocoa_jax.models import vit

INPUT_SHAPE = (32, 32, 1)
EMBED_DIM = 64
CONFIG = {**vit.DEFAULT_CONFIG, "embed_dim": EMBED_DIM, "depth": 4, "num_heads": 4, "patch_size": 4,
          "pos_grid": 8, "image_size": 32, "ffn_hidden": 128, "layer_scale": False, "in_channels": 1,
          "interpolate_offset": 0.0, "interpolate_antialias": False}

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "weights", "digits_vit")


def input_shape(config) -> tuple[int, int, int]:
    """(H, W, C) of one input: square `image_size`, `in_channels` (1: grey digits)."""
    size = int(config["image_size"])
    return (size, size, int(config.get("in_channels", 1)))
