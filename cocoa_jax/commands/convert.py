"""`cocoa-jax convert ARCH CHECKPOINT OUT_DIR`: PyTorch checkpoint -> orbax checkpoint.

Needs torch (the `ports` extra); the result loads with `cocoa_jax.models.load(ARCH, OUT_DIR)`
without torch.
"""
from __future__ import annotations

import argparse
import time

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
    try:
        import torch  # noqa: F401  (imported here only: `cocoa-jax --help` must not need torch)
    except ImportError:
        print("error: `cocoa-jax convert` needs PyTorch: pip install 'cocoa-jax[ports]'")
        return 2
    from ports import convert
    from ports.common import CheckpointMismatchError, UnsafeCheckpointError

    start = time.perf_counter()
    try:
        out = convert(args.arch, args.checkpoint, args.out_dir, unsafe_unpickle=args.unsafe_unpickle,
                      overwrite=args.overwrite)
    except (CheckpointMismatchError, UnsafeCheckpointError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}")
        return 1
    print(f"converted {args.arch} -> {out} in {time.perf_counter() - start:.1f}s; "
          f"load with cocoa_jax.models.load({args.arch!r}, {out!r})")
    return 0
