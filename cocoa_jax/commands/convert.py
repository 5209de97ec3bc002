"""`cocoa-jax convert ARCH CHECKPOINT OUT_DIR`: PyTorch checkpoint -> orbax checkpoint.

Needs torch (the `ports` extra, installed as the package `cocoa_jax_ports`); the result loads
with `cocoa_jax.models.load(ARCH, OUT_DIR)` without torch. The checkpoint file and OUT_DIR are
checked before anything is read; every mistake is one line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import time

from cocoa_jax.cli import UsageError

ARCHS = ("simclr_resnet50", "simsiam_cifar_resnet18", "resnet18_classifier", "clip_vit_b32")

EPILOG = """checkpoint formats:
  simclr_resnet50         resnet50-1x.pth from tonylins/simclr-converter ({'state_dict': ...})
  simsiam_cifar_resnet18  SimSiam linear-eval checkpoint ({'epoch','arch','state_dict'}, keys may
                          start with 'module.') or pre-training checkpoint ('backbone.*' keys)
  resnet18_classifier     PyTorch Lightning checkpoint ('network.backbone.*', 'network.head.*')
                          or a plain torchvision resnet18 state dict
  clip_vit_b32            ViT-B-32.pt as cached by clip.load (TorchScript, fp16/fp32) or a state dict
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("arch", choices=ARCHS, help="architecture of the checkpoint")
    parser.add_argument("checkpoint", help="path of the PyTorch checkpoint")
    parser.add_argument("out_dir", help="directory to write (model.json + orbax variables/)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    parser.add_argument("--unsafe-unpickle", action="store_true",
                        help="DANGEROUS: fully unpickle checkpoints holding arbitrary Python objects "
                             "(e.g. some Lightning files); unpickling can execute code from the file. "
                             "Only for files you trust. Default: torch.load(weights_only=True)")


def run(args: argparse.Namespace) -> int:
    from cocoa_jax.models.registry import check_out_dir

    # The cheap checks first: no torch import, nothing read.
    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint!r} does not exist")
    if not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint!r} is not a file")
    try:
        check_out_dir(os.path.abspath(args.out_dir), overwrite=args.overwrite)
    except FileExistsError as err:
        raise UsageError(str(err)) from None
    try:
        import torch  # noqa: F401  (imported here only: `cocoa-jax --help` must not need torch)
    except ImportError:
        raise UsageError("needs PyTorch: pip install 'cocoa-jax[ports]'") from None
    from cocoa_jax_ports import convert
    from cocoa_jax_ports.common import CheckpointMismatchError, NotACheckpointError, UnsafeCheckpointError

    start = time.perf_counter()
    try:
        out = convert(args.arch, args.checkpoint, args.out_dir, unsafe_unpickle=args.unsafe_unpickle,
                      overwrite=args.overwrite)
    except (CheckpointMismatchError, NotACheckpointError, UnsafeCheckpointError, FileNotFoundError,
            FileExistsError) as err:
        raise UsageError(str(err)) from None
    print(f"converted {args.arch} -> {out} in {time.perf_counter() - start:.1f}s; "
          f"load with cocoa_jax.models.load({args.arch!r}, {out!r})")
    return 0
