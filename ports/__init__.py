"""PyTorch -> Flax weight converters (the only part of cocoa-jax that imports torch).

The repository folder `ports/` installs as the package `cocoa_jax_ports` (see pyproject's
`package-dir`), so installing cocoa-jax adds no generic top-level `ports` module.

    from cocoa_jax_ports import convert
    convert("simclr_resnet50", "resnet50-1x.pth", "converted/simclr")
    model = cocoa_jax.models.load("simclr_resnet50", "converted/simclr")   # no torch

or `cocoa-jax convert ARCH CHECKPOINT OUT_DIR`. Every converter maps each Flax leaf to exactly
one checkpoint key, checks shapes, and fails on any missing, unexpected or mis-shaped key.
"""
from __future__ import annotations

from .common import CheckpointMismatchError, NotACheckpointError, UnsafeCheckpointError

CONVERTERS = {
    "simclr_resnet50": "resnet:convert_simclr_resnet50",
    "simsiam_cifar_resnet18": "resnet:convert_simsiam_cifar_resnet18",
    "resnet18_classifier": "resnet:convert_resnet18_classifier",
    "clip_vit_b32": "clip:convert_clip",
    "clip_vit": "clip:convert_clip_vit",
    "resnet18": "torchvision_resnet:convert_resnet18",
    "resnet34": "torchvision_resnet:convert_resnet34",
    "resnet50": "torchvision_resnet:convert_resnet50",
    "resnet101": "torchvision_resnet:convert_resnet101",
    "resnet152": "torchvision_resnet:convert_resnet152",
    "dino_vit": "vit:convert_dino_vit",
    "dinov2_vit": "vit:convert_dinov2_vit",
    "sentence_bert": "bert:convert_sentence_bert",
    "siglip": "siglip:convert_siglip",
    "siglip2_naflex": "siglip:convert_siglip2_naflex",
    "siglip2_naflex_vision": "siglip:convert_siglip2_naflex_vision",
}
# Architectures whose CHECKPOINT is a model directory (config.json, weights, tokenizer.json, ...),
# with the file suffixes they also take (siglip: big_vision's .npz).
DIRECTORY_CHECKPOINTS = {"sentence_bert": (), "siglip": (".npz",), "siglip2_naflex": (), "siglip2_naflex_vision": ()}
# Settings a converter cannot read off the weights (`--option KEY=VALUE`; see each module).
OPTIONS = {"clip_vit_b32": ("activation", "vision_head_width"), "clip_vit": ("activation", "vision_head_width"),
           "dino_vit": ("num_heads", "image_size", "layout", "interpolate_offset", "interpolate_antialias"),
           "dinov2_vit": ("num_heads", "image_size", "layout", "interpolate_offset", "interpolate_antialias"),
           "sentence_bert": ("pooling", "normalize", "context_length"), "siglip2_naflex": ("max_num_patches",),
           "siglip2_naflex_vision": ("max_num_patches",)}


def convert(arch: str, checkpoint: str, out_dir: str, *, unsafe_unpickle: bool = False,
            overwrite: bool = False, options=None) -> str:
    """Convert `checkpoint` (a PyTorch file) of architecture `arch` into `out_dir`.

    unsafe_unpickle: allow full pickle loading for checkpoints holding Python objects beyond
      tensors and plain containers. DANGEROUS: unpickling can execute arbitrary code from the
      file; only use it for files you trust. Off by default (`torch.load(weights_only=True)`).
    overwrite: replace a non-empty `out_dir` (checked before the checkpoint is read).
    options: {name: value} of the settings in `OPTIONS[arch]` (e.g. {"activation": "gelu"} for an
      open_clip model); anything else is a ValueError naming it.
    Returns the absolute `out_dir`. Raises FileNotFoundError (checkpoint is not a file),
    NotACheckpointError (not a PyTorch checkpoint), UnsafeCheckpointError (pickled Python
    objects; names the blocked global), CheckpointMismatchError (keys named as stored in the
    file) or FileExistsError (`out_dir` not empty).
    """
    import importlib
    import os

    from cocoa_jax.models import check_out_dir

    from .common import check_checkpoint_file

    if arch not in CONVERTERS:
        raise ValueError(f"arch must be one of {sorted(CONVERTERS)}, got {arch!r}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS.get(arch, ())))
    if unknown:
        allowed = ", ".join(OPTIONS.get(arch, ())) or "none"
        raise ValueError(f"unknown option {unknown[0]!r} for {arch} (options: {allowed})")
    if arch in DIRECTORY_CHECKPOINTS:
        if not os.path.isdir(checkpoint) and not (os.path.isfile(checkpoint)
                                                  and str(checkpoint).endswith(DIRECTORY_CHECKPOINTS[arch] or "/")):
            raise FileNotFoundError(f"checkpoint {checkpoint!r} is not a directory: {arch} converts a model "
                                    f"directory (config.json, model.safetensors, tokenizer.json, ...)"
                                    f"{''.join(' or a ' + s + ' file' for s in DIRECTORY_CHECKPOINTS[arch])}")
    else:
        check_checkpoint_file(checkpoint)
    check_out_dir(os.path.abspath(out_dir), overwrite=overwrite)
    module_name, fn_name = CONVERTERS[arch].split(":")
    fn = getattr(importlib.import_module(f".{module_name}", __name__), fn_name)
    return fn(checkpoint, out_dir, unsafe_unpickle=unsafe_unpickle, overwrite=overwrite, **options)


__all__ = ["CONVERTERS", "DIRECTORY_CHECKPOINTS", "OPTIONS", "CheckpointMismatchError", "NotACheckpointError", "UnsafeCheckpointError",
           "convert"]
