"""SimCLR training of the tiny digits ViT (`cocoa_jax.models.digits_vit`), shipped as `load("digits_vit")`.

    python -m cocoa_jax.training.digits_vit --out DIR [--steps N] [--seed S] [--overwrite]
    python -m cocoa_jax.training.digits_vit --replace-shipped      # rewrite cocoa_jax/weights/digits_vit

The same recipe as the embedded `digits` encoder (`cocoa-jax train-digits`): SimCLR's NT-Xent on
two augmented views of the 1297 training digits (split seed 0, labels unused), the same
augmentations, AdamW with warm-up and cosine decay (`simclr.train_simclr`), a 2-layer projection
head dropped after training. Only the network differs: the ported `vit.ViT` at
`digits_vit.CONFIG`'s size. Writes a model directory (`models.save`: model.json + variables/,
about 0.6 MB) and `DIR.json` beside it (settings, losses, linear-probe test accuracy, seconds,
versions). Same seed, same parameters on the same machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cocoa_jax.models import digits_vit, small_resnet, vit
from cocoa_jax.training.simclr import SimCLRConfig, train_simclr

# The shipped model's settings: lower peak rate and longer warm-up than the ResNet's (a ViT without
# BatchNorm diverges at 3e-3), more steps (no convolutional prior to lean on).
DEFAULTS = SimCLRConfig(steps=400, batch_size=64, learning_rate=1e-3, warmup_steps=40, weight_decay=0.05)
PROJECTION_DIMS = (128, 64)


class ViTSimCLRNet(nn.Module):
    """The ViT encoder (submodule "encoder") + SimCLR projection MLP: x -> (representation, projection).

    `config` is a tuple of (key, value) pairs (hashable: the trainer caches its step per network).
    """

    config: tuple
    projection_dims: Sequence[int] = PROJECTION_DIMS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        h = vit.ViT(dict(self.config), name="encoder")(x)
        return h, small_resnet.projection_mlp(h, self.projection_dims)


def network(config: Mapping[str, Any] = digits_vit.CONFIG) -> ViTSimCLRNet:
    return ViTSimCLRNet(tuple(sorted(dict(config).items())))


def train(images, cfg: SimCLRConfig = DEFAULTS, *, config: Mapping[str, Any] = digits_vit.CONFIG,
          progress: bool = False, log=None):
    """SimCLR-train the ViT on images (N, 32, 32, 1) in [0, 1].

    Returns (encoder variables {"params"} for `models.make_loaded("digits_vit", config, ...)`,
    losses (steps,), wall seconds).
    """
    variables, losses, seconds = train_simclr(network(config), images, cfg, progress=progress, log=log)
    return {"params": variables["params"]}, losses, seconds


def probe_accuracy(model, data, seed: int = 0) -> float:
    """Linear-probe test accuracy of a loaded encoder on the digits split (as `cocoa-jax train-digits`)."""
    from cocoa_jax.training.simclr import encode_in_batches, linear_probe

    train_reps = encode_in_batches(model.encode_fn, model.params, data.x_train)
    test_reps = encode_in_batches(model.encode_fn, model.params, data.x_test)
    return linear_probe(train_reps, data.y_train, test_reps, data.y_test, seed=seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocoa_jax.training.digits_vit", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="model directory to write (required unless --replace-shipped)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"training steps (default {DEFAULTS.steps})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of init, batches and augmentations")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--replace-shipped", action="store_true", help="write cocoa_jax/weights/digits_vit")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.out is None and not args.replace_shipped:
        parser.error("--out DIR is required (the shipped weights are replaced only with --replace-shipped)")
    out = os.path.abspath(args.out or digits_vit.WEIGHTS_DIR)
    shipped = os.path.realpath(out) == os.path.realpath(digits_vit.WEIGHTS_DIR)
    if shipped and not args.replace_shipped:
        parser.error(f"--out {out!r} is the shipped model; pass --replace-shipped to replace it")
    if os.path.exists(out) and not (args.overwrite or shipped):
        parser.error(f"--out {out!r} already exists; pass --overwrite to replace it")

    from cocoa_jax import models
    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.training import atomic_write_json, environment_record

    cfg = dataclasses.replace(DEFAULTS, steps=args.steps, seed=args.seed)
    data = load_digits_split(seed=0)
    print(f"SimCLR digits ViT on {len(data.x_train)} digits, {cfg.steps} steps of {cfg.batch_size} pairs, "
          f"seed {cfg.seed} ({jax.default_backend()})", flush=True)
    cpu_start = time.process_time()
    variables, losses, seconds = train(data.x_train, cfg, log=lambda line: print(line, flush=True))
    cpu_seconds = time.process_time() - cpu_start
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    model = models.make_loaded("digits_vit", digits_vit.CONFIG, variables)
    accuracy = probe_accuracy(model, data, cfg.seed)
    random_model = models.make_loaded("digits_vit", digits_vit.CONFIG, {"params": network().init(
        jax.random.key(cfg.seed), jnp.zeros((2, *digits_vit.INPUT_SHAPE)))["params"]["encoder"]})
    random_accuracy = probe_accuracy(random_model, data, cfg.seed)
    models.save("digits_vit", digits_vit.CONFIG, variables, out, overwrite=True,
                notes=(f"SimCLR on scikit-learn digits: python -m cocoa_jax.training.digits_vit "
                       f"--steps {cfg.steps} --seed {cfg.seed}",))
    record = {
        "description": "tiny ViT (SimCLR) on scikit-learn digits upsampled to 32x32",
        "command": f"python -m cocoa_jax.training.digits_vit --steps {cfg.steps} --seed {cfg.seed}",
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "augment"},
        "augment": dataclasses.asdict(cfg.augment),
        "architecture": {**digits_vit.CONFIG, "projection_dims": list(PROJECTION_DIMS)},
        "data": {"split_seed": 0, "n_train": int(len(data.x_train)), "n_test": int(len(data.x_test))},
        "linear_probe_test_accuracy": accuracy,
        "random_init_linear_probe_test_accuracy": random_accuracy,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "final_loss": float(losses[-10:].mean()),
        "loss_every_10_steps": [round(float(x), 4) for x in losses[::10]],
        **environment_record(),
    }
    atomic_write_json(out.rstrip(os.sep) + ".json", record)
    print(f"trained in {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU; final loss {record['final_loss']:.3f}")
    print(f"linear probe test accuracy: {accuracy:.3f} (random-init encoder: {random_accuracy:.3f})")
    print(f"wrote {out} and {out.rstrip(os.sep)}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
