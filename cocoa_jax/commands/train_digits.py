"""`cocoa-jax train-digits`: (re-)train the embedded digits encoder with SimCLR.

Trains `cocoa_jax.models.small_resnet.SimCLRNet` on the 1297 training images of the
scikit-learn digits split (seed 0; labels unused), writes the encoder variables as an orbax
checkpoint to `--out DIR` (load it with `cocoa_jax.models.load("digits", DIR)`) and a JSON
record next to it (`DIR.json`: config, seed, losses, probe accuracy, time, versions; loading
never reads it), and prints the test accuracy of a linear probe on the frozen representations.

The shipped weights inside the package (`cocoa_jax/weights/digits_simclr/`) are replaced only
when asked explicitly with `--replace-shipped`; an existing `--out` only with `--overwrite`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

from cocoa_jax.commands.errors import UsageError, flag_errors
from cocoa_jax.files import Outputs
from cocoa_jax.training import environment_record
from cocoa_jax.training.simclr import SimCLRConfig

_DEFAULTS = SimCLRConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=_DEFAULTS.steps, help=f"training steps (default {_DEFAULTS.steps})")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size,
                        help=f"positive pairs per step (default {_DEFAULTS.batch_size})")
    parser.add_argument("--lr", type=float, default=_DEFAULTS.learning_rate,
                        help=f"peak AdamW learning rate (default {_DEFAULTS.learning_rate})")
    parser.add_argument("--warmup-steps", type=int, default=_DEFAULTS.warmup_steps,
                        help=f"steps of linear learning-rate warm-up before the cosine decay "
                             f"(default {_DEFAULTS.warmup_steps})")
    parser.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay,
                        help=f"AdamW weight decay (default {_DEFAULTS.weight_decay})")
    parser.add_argument("--temperature", type=float, default=_DEFAULTS.temperature,
                        help=f"NT-Xent temperature (default {_DEFAULTS.temperature})")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed of init, batches and augmentations")
    parser.add_argument("--out", default=None,
                        help="checkpoint directory to write (required unless --replace-shipped)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out checkpoint")
    parser.add_argument("--replace-shipped", action="store_true",
                        help="write to the package's own weights/digits_simclr (what models.load('digits') "
                             "loads by default), replacing the shipped encoder")
    from cocoa_jax.commands import quiet

    quiet.add_argument(parser)


def output_dir(out: str | None, *, replace_shipped: bool, overwrite: bool) -> str:
    """The checkpoint directory to write, after refusing every silent overwrite."""
    from cocoa_jax.models.small_resnet import WEIGHTS_DIR

    shipped = os.path.realpath(WEIGHTS_DIR)
    if out is None:
        if not replace_shipped:
            raise UsageError("--out DIR is required (the shipped weights are replaced only with "
                             "--replace-shipped)")
        return shipped
    out = os.path.abspath(out)
    if os.path.realpath(out) == shipped and not replace_shipped:
        raise UsageError(f"--out {out!r} is the shipped checkpoint; pass --replace-shipped to replace it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} exists and is not a directory")
    for path in (out, out.rstrip(os.sep) + ".json"):
        if os.path.exists(path) and not overwrite and os.path.realpath(out) != shipped:
            raise UsageError(f"--out: {path!r} already exists; pass --overwrite to replace it")
    return out


def check_flags(args) -> None:
    """Each training flag in its range, named as on the command line."""
    import math

    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value <= 0:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    for flag, value in (("--lr", args.lr), ("--temperature", args.temperature)):
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"{flag} must be a finite number > 0, got {value}")
    if args.warmup_steps < 0:
        raise UsageError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise UsageError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    cfg = SimCLRConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                       warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
                       temperature=args.temperature, seed=args.seed)
    with flag_errors(None, TypeError, ValueError):
        cfg.validate()
    out = output_dir(args.out, replace_shipped=args.replace_shipped, overwrite=args.overwrite)
    from cocoa_jax.commands.checks import output_location

    output_location("--out", out, replaced_whole=True)  # the checkpoint's folder is writable, before training

    import jax
    import numpy as np

    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.models import small_resnet
    from cocoa_jax.training.simclr import encode_in_batches, linear_probe, train_simclr

    data = load_digits_split(seed=0)
    model = small_resnet.SimCLRNet()
    encoder = model.encoder
    if not args.quiet:
        print(f"SimCLR on {len(data.x_train)} digits (32x32), {cfg.steps} steps of {cfg.batch_size} pairs, "
              f"seed {cfg.seed} ({jax.default_backend()})")
    from cocoa_jax import phases

    cpu_start = time.process_time()
    phases.reached("train")
    variables, losses, seconds = train_simclr(model, data.x_train, cfg, progress=not args.quiet)
    cpu_seconds = time.process_time() - cpu_start  # all threads: wall time alone hides contention
    phases.reached("evaluate")

    encode_fn = small_resnet.encode_fn_for(encoder)

    def probe(v):
        tr = encode_in_batches(encode_fn, v, data.x_train)
        te = encode_in_batches(encode_fn, v, data.x_test)
        return linear_probe(tr, data.y_train, te, data.y_test, seed=cfg.seed)

    accuracy = probe(variables)
    # Context for the number above: the same probe on a randomly initialised encoder.
    random_accuracy = probe(small_resnet.init_variables(encoder, jax.random.key(cfg.seed)))
    record = {
        "description": "SimCLR SmallResNet encoder on scikit-learn digits upsampled to 32x32",
        "command": "cocoa-jax train-digits",
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "augment"},
        "augment": dataclasses.asdict(cfg.augment),
        "architecture": {"widths": list(encoder.widths), "blocks": list(encoder.blocks),
                         "strides": list(encoder.strides), "stem_width": encoder.stem_width,
                         "stem_pool": encoder.stem_pool, "projection_dims": list(model.projection_dims)},
        "data": {"split_seed": 0, "n_train": int(len(data.x_train)), "n_test": int(len(data.x_test))},
        "linear_probe_test_accuracy": accuracy,
        "random_init_linear_probe_test_accuracy": random_accuracy,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "final_loss": float(np.mean(losses[-10:])),
        "loss_every_10_steps": [round(float(x), 4) for x in losses[::10]],
        **environment_record(),
    }
    json_path = out.rstrip(os.sep) + ".json"
    # The checkpoint and its record appear together at the end (Ctrl-C or an error before
    # that leaves neither, and an earlier --overwrite'd pair as it was).
    outputs = Outputs()
    with outputs.directory(out) as tmp:
        small_resnet.save_encoder(variables, tmp)
    outputs.add_json(json_path, record)
    outputs.commit()
    print(f"trained in {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU; final loss {record['final_loss']:.3f}")
    print(f"linear probe test accuracy: {accuracy:.3f} (random-init encoder: {random_accuracy:.3f})")
    print(f"wrote {out} and {json_path}")
    return 0
