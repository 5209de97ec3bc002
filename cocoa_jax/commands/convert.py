"""`cocoa-jax convert ARCH CHECKPOINT OUT_DIR`: PyTorch checkpoint -> orbax checkpoint.

Needs torch (the `ports` extra, installed as the package `cocoa_jax_ports`); the result loads
with `cocoa_jax.models.load(ARCH, OUT_DIR)` without torch. The checkpoint file and OUT_DIR are
checked before anything is read; every mistake is one line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import time

from cocoa_jax.commands.errors import UsageError, flag_errors

ARCHS = ("simclr_resnet50", "simsiam_cifar_resnet18", "resnet18_classifier", "clip_vit_b32", "clip_vit",
         "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "dino_vit", "dinov2_vit", "sentence_bert",
         "siglip", "siglip2_naflex", "siglip2_naflex_vision")
# a model directory, or a file with these suffixes
DIRECTORY_CHECKPOINTS = {"sentence_bert": (), "siglip": (".npz",), "siglip2_naflex": (), "siglip2_naflex_vision": ()}

EPILOG = """checkpoint formats:
  simclr_resnet50         resnet50-1x.pth from tonylins/simclr-converter ({'state_dict': ...})
  simsiam_cifar_resnet18  SimSiam linear-eval checkpoint ({'epoch','arch','state_dict'}, keys may
                          start with 'module.') or pre-training checkpoint ('backbone.*' keys)
  resnet18_classifier     PyTorch Lightning checkpoint ('network.backbone.*', 'network.head.*')
                          or a plain torchvision resnet18 state dict
  clip_vit_b32            ViT-B-32.pt as cached by clip.load (TorchScript, fp16/fp32) or a state dict
  clip_vit                any CLIP ViT: OpenAI ViT-*.pt (TorchScript) or state dict, open_clip
                          open_clip_pytorch_model.bin / open_clip_model.safetensors / training
                          checkpoint; options activation=gelu (open_clip models not named
                          *-quickgelu), vision_head_width=80 (ViT-H-14)
  resnet18 ... resnet152  torchvision state dict, or an SSL checkpoint of its backbone (MoCo v1/v2/v3,
                          SimSiam, Barlow Twins, VICReg, SwAV, DINO, BYOL, solo-learn): the prefix is
                          detected and stripped, projection heads are dropped (both reported)
  dino_vit, dinov2_vit    facebookresearch DINO / DINOv2 backbone (..._pretrain.pth; registers and
                          sizes read off the weights) or a full checkpoint's teacher, or timm's
                          layout (vit_small_patch14_dinov2.lvd142m, ..._reg4_dinov2.lvd142m,
                          vit_small_patch16_224.dino: model.safetensors / pytorch_model.bin);
                          options num_heads (default width/64), image_size (default 224),
                          layout=timm|facebookresearch (read off the keys when they tell; timm
                          files without registers need layout=timm: it sets timm's resampling
                          of the positional embedding at other input sizes),
                          interpolate_offset=0.1 / interpolate_antialias=false (that resampling;
                          default: as the DINOv2 hub models, antialiased to the output size for
                          register checkpoints and timm's layout, offset 0.1 otherwise)
  sentence_bert           a DIRECTORY: a sentence-transformers model (all-MiniLM-L6-v2, BGE, E5, GTE;
                          XLM-RoBERTa layout): config.json, model.safetensors or pytorch_model.bin,
                          tokenizer.json, modules.json, 1_Pooling/config.json; options
                          pooling=mean|cls|max|... and normalize=true|false (needed without
                          modules.json), context_length=N; reading tokenizer.json needs the text extra
  siglip                  a DIRECTORY: a transformers SiglipModel (config.json, model.safetensors,
                          tokenizer.json if any), or a big_vision SigLIP / SigLIP 2 .npz
                          (webli_*.npz, siglip2_*.npz; token ids only); SigLIP 2's fixed-resolution
                          Hub directories are SiglipModel ones; not NaFlex models
  siglip2_naflex          a DIRECTORY: a transformers Siglip2Model (SigLIP 2 NaFlex: config.json
                          model_type "siglip2", model.safetensors, tokenizer.json if any,
                          preprocessor_config.json); option max_num_patches=N (the preprocessing's
                          patch budget; default the preprocessor's, else 256)
  siglip2_naflex_vision   a DIRECTORY: a transformers Siglip2VisionModel (the NaFlex image tower
                          alone, model_type "siglip2_vision_model"); as siglip2_naflex, no text
Any of them may be a .safetensors file (needs the package safetensors, in the ports extra).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("arch", choices=ARCHS, help="architecture of the checkpoint")
    parser.add_argument("checkpoint", help="path of the PyTorch checkpoint (.pth/.pt/.bin/.ckpt or .safetensors)")
    parser.add_argument("out_dir", help="directory to write (model.json + orbax variables/)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting the weights do not hold (see below), e.g. activation=gelu; repeatable")
    parser.add_argument("--unsafe-unpickle", action="store_true",
                        help="DANGEROUS: fully unpickle checkpoints holding arbitrary Python objects "
                             "(e.g. some Lightning files); unpickling can execute code from the file. "
                             "Only for files you trust. Default: torch.load(weights_only=True)")


def run(args: argparse.Namespace) -> int:
    from cocoa_jax.models import check_out_dir

    # The cheap checks first: no torch import, nothing read.
    if not os.path.exists(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint!r} does not exist")
    if args.arch in DIRECTORY_CHECKPOINTS:
        if not os.path.isdir(args.checkpoint) and not (os.path.isfile(args.checkpoint) and args.checkpoint.endswith(
                DIRECTORY_CHECKPOINTS[args.arch] or "/")):
            raise UsageError(f"checkpoint {args.checkpoint!r} is not a directory ({args.arch} converts a model "
                             f"directory: config.json, model.safetensors, tokenizer.json, ..."
                             f"{''.join(', or a ' + s + ' file' for s in DIRECTORY_CHECKPOINTS[args.arch])})")
    elif not os.path.isfile(args.checkpoint):
        raise UsageError(f"checkpoint {args.checkpoint!r} is not a file")
    with flag_errors(None, FileExistsError):
        check_out_dir(os.path.abspath(args.out_dir), overwrite=args.overwrite)
    from cocoa_jax.commands.checks import output_location

    output_location("OUT_DIR", args.out_dir, replaced_whole=True)  # writable, before torch loads
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option must be KEY=VALUE, got {item!r}")
        options[key] = value
    try:
        import torch  # noqa: F401  (imported here only: `cocoa-jax --help` must not need torch)
    except ImportError:
        raise UsageError("needs PyTorch: pip install 'cocoa-jax[ports]'") from None
    from cocoa_jax_ports import convert
    from cocoa_jax_ports.common import CheckpointMismatchError, NotACheckpointError, UnsafeCheckpointError

    from cocoa_jax import phases

    start = time.perf_counter()
    phases.reached("convert")
    with flag_errors(None, CheckpointMismatchError, NotACheckpointError, UnsafeCheckpointError,
                     FileNotFoundError, FileExistsError, ValueError):
        out = convert(args.arch, args.checkpoint, args.out_dir, unsafe_unpickle=args.unsafe_unpickle,
                      overwrite=args.overwrite, options=options)
    from cocoa_jax.models import read_metadata

    for note in read_metadata(out).get("notes", ()):
        print(f"note: {note}")
    print(f"converted {args.arch} -> {out} in {time.perf_counter() - start:.1f}s; "
          f"load with cocoa_jax.models.load({args.arch!r}, {out!r})")
    return 0
