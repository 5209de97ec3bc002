"""`cocoa-jax train-digits-clip`: (re-)train the embedded digits image-text dual encoder.

Trains `cocoa_jax.models.digits_clip.DigitsCLIP` with CLIP's loss on the 1297 training images
of the scikit-learn digits split (seed 0) paired with template captions of their labels,
then writes the variables as an orbax checkpoint and a JSON record next to it (`<out>.json`:
config, losses, zero-shot accuracy on the 500 held-out digits, time, versions).

The shipped checkpoint (`cocoa_jax/weights/digits_clip/`) is replaced only when asked
explicitly: `--replace-shipped` (as in `train-digits`; the old name `--overwrite-shipped` still
works, with a warning), or `--out` naming it together with `--overwrite`. Any
existing output is refused unless `--overwrite`. The checkpoint and its record are written
together at the end (temporary paths, then renames), or not at all.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

from cocoa_jax.files import Outputs
from cocoa_jax.training import environment_record
from cocoa_jax.training.clip_digits import ClipConfig

_DEFAULTS = ClipConfig()
DEFAULT_OUT = os.path.join("runs", "digits_clip")
COMMAND = "train-digits-clip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=_DEFAULTS.steps, help=f"training steps (default {_DEFAULTS.steps})")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size,
                        help=f"image-caption pairs per step (default {_DEFAULTS.batch_size})")
    parser.add_argument("--lr", type=float, default=_DEFAULTS.learning_rate,
                        help=f"peak AdamW learning rate (default {_DEFAULTS.learning_rate})")
    parser.add_argument("--warmup-steps", type=int, default=_DEFAULTS.warmup_steps,
                        help=f"steps of linear learning-rate warm-up before the cosine decay "
                             f"(default {_DEFAULTS.warmup_steps})")
    parser.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay,
                        help=f"AdamW weight decay (default {_DEFAULTS.weight_decay})")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed of init, batches, captions, augmentations")
    parser.add_argument("--out", default=None, help=f"checkpoint directory (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--replace-shipped", action="store_true",
                        help="write to the package's weights/digits_clip (what load_digits_clip() loads), "
                             "replacing the shipped dual encoder")
    parser.add_argument("--overwrite-shipped", dest="overwrite_shipped", action="store_true",
                        help="deprecated name of --replace-shipped (warns)")
    from cocoa_jax.commands import quiet

    quiet.add_argument(parser)


def resolve_out(args, shipped_dir: str) -> str:
    """The checkpoint directory, or ValueError when writing there is not allowed."""
    shipped_dir = os.path.abspath(shipped_dir)
    if args.replace_shipped:
        if args.out is not None and os.path.abspath(args.out) != shipped_dir:
            raise ValueError("--replace-shipped writes to the shipped weights; do not combine it with "
                             "another --out")
        return shipped_dir
    out = os.path.abspath(args.out or DEFAULT_OUT)
    if os.path.exists(out) and not args.overwrite:
        hint = " (the shipped weights)" if out == shipped_dir else ""
        raise ValueError(f"--out {out}{hint} exists; pass --overwrite to replace it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a directory")
    return out


def atomic_save_checkpoint(variables, out: str) -> None:
    """Write the checkpoint to a temporary sibling, then swap it in (the old one is removed last)."""
    from cocoa_jax.files import atomic_directory
    from cocoa_jax.models.small_resnet import save_encoder  # saves {"params", "batch_stats"}

    with atomic_directory(out) as tmp:
        save_encoder(variables, tmp)


def _flag_names(message: str) -> str:
    """Config field names in a validation message -> the command's flag names."""
    for field, flag in (("warmup_steps", "--warmup-steps"), ("weight_decay", "--weight-decay"),
                        ("learning_rate", "--lr"), ("batch_size", "--batch-size"), ("seed", "--seed")):
        message = message.replace(field, flag)
    return message if message.startswith("--") else message.replace("steps must", "--steps must", 1)


def run(args: argparse.Namespace) -> int:
    from cocoa_jax.models import digits_clip

    if args.overwrite_shipped:  # the old name: same meaning, one warning line
        import sys

        print(f"cocoa-jax {COMMAND}: warning: --overwrite-shipped is deprecated; use --replace-shipped",
              file=sys.stderr)
        args.replace_shipped = True

    cfg = ClipConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                     warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, seed=args.seed)
    from cocoa_jax.commands.checks import output_location
    from cocoa_jax.commands.errors import flag_errors

    with flag_errors(None, names=_flag_names):  # the config's field names -> the flags
        cfg.validate()
        if args.batch_size > 1297:
            raise ValueError(f"batch_size must be at most 1297 (the training images), got {args.batch_size}")
        out = resolve_out(args, digits_clip.WEIGHTS_DIR)
        output_location("--out", out, replaced_whole=True)  # the checkpoint's folder is writable, before training

    import jax
    import numpy as np

    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.models.small_resnet import save_encoder  # saves {"params", "batch_stats"}
    from cocoa_jax.training import clip_digits

    data = load_digits_split(seed=0)
    log = None if args.quiet else print
    if log:
        log(f"CLIP on {len(data.x_train)} digits (32x32) x {len(digits_clip.TEMPLATES)} caption templates, "
            f"{cfg.steps} steps of {cfg.batch_size} pairs, seed {cfg.seed} ({jax.default_backend()})")
    from cocoa_jax import phases

    cpu_start = time.process_time()
    phases.reached("train")
    variables, losses, seconds = clip_digits.train_clip(data.x_train, data.y_train, cfg, log=log)
    cpu_seconds = time.process_time() - cpu_start
    phases.reached("evaluate")
    model = digits_clip.make_model(digits_clip.DigitsCLIP(), variables)
    accuracy = clip_digits.zero_shot_accuracy(model, data.x_test, data.y_test)
    ensemble_accuracy = clip_digits.zero_shot_accuracy(model, data.x_test, data.y_test, digits_clip.TEMPLATES)
    record = {
        "description": "digits image-text dual encoder (SmallResNet image tower, word-level transformer "
                       "text tower), CLIP loss, scikit-learn digits at 32x32",
        "command": f"cocoa-jax {COMMAND}",
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "augment"},
        "augment": dataclasses.asdict(cfg.augment),
        "architecture": model.config,
        "templates": list(digits_clip.TEMPLATES),
        "data": {"split_seed": 0, "n_train": int(len(data.x_train)), "n_test": int(len(data.x_test))},
        "zero_shot_test_accuracy": accuracy,
        "zero_shot_caption": digits_clip.QUERY_TEMPLATE.format("{digit name}"),
        "zero_shot_test_accuracy_template_ensemble": ensemble_accuracy,
        "logit_scale": float(variables["params"]["logit_scale"]),
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
        save_encoder(variables, tmp)
    outputs.add_json(json_path, record)
    outputs.commit()
    print(f"trained in {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU; final loss {record['final_loss']:.3f}")
    print(f"zero-shot test accuracy: {accuracy:.3f} ('{record['zero_shot_caption']}'), "
          f"{ensemble_accuracy:.3f} (mean over the {len(digits_clip.TEMPLATES)} templates)")
    print(f"wrote {out} and {json_path}")
    return 0
