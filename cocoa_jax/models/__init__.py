"""Encoders for cocoa-jax: Flax ports of the paper's models and the embedded digits encoder.

    model = cocoa_jax.models.load("simclr_resnet50", "converted/simclr")   # no torch needed
    x = model.preprocess.batch(pil_images)          # (N, 224, 224, 3) float32 pixels in [0, 1]
    reps = model.encode(x)                          # (N, 2048); mean/std applied inside
    f = cocoa_jax.targets.explain_fn(model.encode, target)

One pixel convention: every loaded model takes float pixels in [0, 1], channels last, in
`encode` / `encode_fn(params, x)` and normalises inside (`repr(model)` says with which mean/std).
`model.network_fn(params, x_normalised)` is the raw network on `model.preprocess.normalize(x)`
(the expert path, what the PyTorch original takes).

Architectures (`list_architectures()`): simclr_resnet50, simsiam_cifar_resnet18,
resnet18_classifier, clip_vit_b32, clip_vit (any CLIP ViT, OpenAI or open_clip), resnet18/34/50/
101/152 (torchvision or SSL backbones), dino_vit, dinov2_vit (converted with `cocoa-jax convert`,
see `ports/`, installed as `cocoa_jax_ports`; docs/models.md) and digits (shipped; `load("digits")`). Every encode/head function checks
its input's shape against `input_shape`; eager calls also refuse non-float dtypes and values
that are non-finite or outside `input_range` = [0, 1], normalised input included (`check_images(model,
x)`: call it before jitting, where values cannot be checked). This package never imports torch.
"""
from cocoa_jax.models.preprocessing import Preprocessing
from cocoa_jax.models.registry import (ARCHITECTURES, LoadedModel, ModelDirError, check_images,
                                       input_shape_of, list_architectures, load, make_loaded, save)

__all__ = ["ARCHITECTURES", "LoadedModel", "ModelDirError", "Preprocessing", "check_images", "input_shape_of",
           "list_architectures", "load", "make_loaded", "save"]
