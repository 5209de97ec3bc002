"""PyTorch -> Flax weight converters (the only part of cocoa-jax that imports torch).

    from ports import convert
    convert("simclr_resnet50", "resnet50-1x.pth", "converted/simclr")
    model = cocoa_jax.models.load("simclr_resnet50", "converted/simclr")   # no torch

or `cocoa-jax convert ARCH CHECKPOINT OUT_DIR`. Every converter maps each Flax leaf to exactly
one checkpoint key, checks shapes, and fails on any missing, unexpected or mis-shaped key.
"""
from __future__ import annotations

from ports.common import CheckpointMismatchError, UnsafeCheckpointError

CONVERTERS = {
    "simclr_resnet50": "ports.resnet:convert_simclr_resnet50",
    "simsiam_cifar_resnet18": "ports.resnet:convert_simsiam_cifar_resnet18",
    "resnet18_classifier": "ports.resnet:convert_resnet18_classifier",
    "clip_vit_b32": "ports.clip:convert_clip",
}


def convert(arch: str, checkpoint: str, out_dir: str, *, unsafe_unpickle: bool = False,
            overwrite: bool = False) -> str:
    """Convert `checkpoint` (a PyTorch file) of architecture `arch` into `out_dir`.

    unsafe_unpickle: allow full pickle loading for checkpoints holding Python objects beyond
      tensors and plain containers. DANGEROUS: unpickling can execute arbitrary code from the
      file; only use it for files you trust. Off by default (`torch.load(weights_only=True)`).
    Returns the absolute `out_dir`.
    """
    import importlib

    if arch not in CONVERTERS:
        raise ValueError(f"arch must be one of {sorted(CONVERTERS)}, got {arch!r}")
    module_name, fn_name = CONVERTERS[arch].split(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    return fn(checkpoint, out_dir, unsafe_unpickle=unsafe_unpickle, overwrite=overwrite)


__all__ = ["CONVERTERS", "CheckpointMismatchError", "UnsafeCheckpointError", "convert"]
