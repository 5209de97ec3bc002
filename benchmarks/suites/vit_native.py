"""ViT-native attributions: explicands/s of token-drop RISE vs blend RISE vs attention rollout.

    python -m benchmarks vit_native [--quick] [--n-masks N] [--batch B] [--out PATH]

Random-weight ports (only speed is measured): DINOv2 ViT-S/14 (`dinov2_vit`, 384 wide, 12
blocks) and CLIP ViT-B/16's image tower (`clip_vit`, 768 wide, 12 blocks), both at 224 px
(256 and 196 patch tokens); --quick: the same two layouts at 16 px with 4 px patches, 2 blocks,
16 wide (a smoke run, seconds). Target: the dot product of the representation with K = 4
random directions (all K share every pass). RISE: n_masks masks, keep_prob 0.5, `batch` inputs
per encoder call; blend = the paper's upsampled-grid masks blended with a baseline (the image
itself here: the cost does not depend on the baseline's values), every token in every pass;
token drop = 50% of the patch tokens kept per pass. Rollout: one forward pass, attention read.

Times exclude compilation (one warm-up call), median of `repeats`; each row's `ratio` is its
explicands/s over blend RISE's in the same run. FLOPs per pass: XLA's cost analysis of one
encoder call of `batch` images / batch (blend: all tokens; token drop: half); roofline = FLOPs
per pass x passes/s / the float32 matmul peak measured in the same run. Rows go to
benchmarks/results/RESULTS_vit_native.json unless --quick (or to --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS
from benchmarks.harness.machine import cpu_name
from benchmarks.harness.roofline import fraction, measure_peak
from benchmarks.harness.timing import time_call
from cocoa_jax import attribution, targets
from cocoa_jax.attribution_methods import token_drop
from cocoa_jax.models import architectures, loaded, vit
from cocoa_jax.models.clip import ClipConfig

K = 4


def model_configs(quick: bool) -> dict:
    """{label: (arch, config)}: ViT-S/14 and ViT-B/16 at 224 px, or their 16 px miniatures."""
    if quick:
        small = {**vit.DEFAULT_CONFIG, "embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 4, "pos_grid": 4,
                 "image_size": 16, "ffn_hidden": 32}
        clip = dataclasses.asdict(ClipConfig(embed_dim=8, image_resolution=16, vision_layers=2, vision_width=16,
                                             vision_patch_size=4, context_length=8, vocab_size=64,
                                             transformer_width=16, transformer_layers=1, vision_head_width=8))
        return {"ViT-S/14 (tiny)": ("dinov2_vit", small), "ViT-B/16 (tiny)": ("clip_vit", clip)}
    small = {**vit.DEFAULT_CONFIG, "pos_grid": 16}  # ViT-S/14 at 224 px: 16 x 16 patches, no resampling
    clip = dataclasses.asdict(ClipConfig(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                                         vision_patch_size=16))
    return {"ViT-S/14": ("dinov2_vit", small), "ViT-B/16": ("clip_vit", clip)}


def random_model(arch: str, config) -> loaded.LoadedModel:
    spec = architectures.spec_of(arch)
    module = spec.build(config)
    variables = jax.jit(lambda: spec.init(module, config, tuple(spec.input_shape(config))))()
    return loaded.make_loaded(arch, config, variables)


def rows_for(label: str, model, n_masks: int, batch: int, repeats: int, peak: float) -> list[dict]:
    access = model.encode_fn.token_access
    size = model.input_shape[0]
    grid = token_drop.patch_grid((size, size), access.patch_size)
    n_patches = grid[0] * grid[1]
    x = jnp.asarray(np.random.default_rng(0).uniform(size=model.input_shape), jnp.float32)
    directions = jnp.asarray(np.random.default_rng(1).standard_normal((K, model.representation_dim)), jnp.float32)
    target = targets.Target(directions, (False,) * K)
    key = jax.random.key(0)

    def blend(params, image):
        f = targets.explain_fn(lambda xb: model.encode_fn(params, xb), target)
        return attribution.rise(f, image, image, key, n_masks=n_masks, batch_size=batch)

    def dropped(params, image):
        f = token_drop.token_scorer(access, params, target)
        return attribution.rise(f, image, image, key, n_masks=n_masks, batch_size=batch, removal="token_drop")

    def rollout(params, image):
        return attribution.rollout(token_drop.token_scorer(access, params, target), image)

    xs = jnp.broadcast_to(x, (batch,) + x.shape)
    every = jnp.broadcast_to(jnp.arange(n_patches, dtype=jnp.int32), (batch, n_patches))
    half = every[:, :token_drop.kept_count(n_patches, 0.5)]
    flops = {"blend": token_drop.pass_flops(access.encode, model.params, xs, None) / batch,
             "token_drop": token_drop.pass_flops(access.encode, model.params, xs, half) / batch,
             "rollout": token_drop.pass_flops(access.attention, model.params, xs[:1])}
    rows = []
    for name, fn, passes in (("rise_blend", blend, n_masks), ("rise_token_drop", dropped, n_masks),
                             ("rollout", rollout, 1)):
        program = jax.jit(fn)
        seconds = time_call(lambda: program(model.params, x), repeats)
        per_pass = flops["rollout" if name == "rollout" else name.split("_", 1)[1]]
        rows.append(dict(model=label, arch=model.name, image=size, tokens=n_patches, method=name, k=K,
                         passes=passes, explicands_per_s=1.0 / seconds, flops_per_pass=per_pass,
                         roofline=fraction(per_pass, passes / seconds, peak)))
    for row in rows:
        row["ratio_vs_blend_rise"] = row["explicands_per_s"] / rows[0]["explicands_per_s"]
        print(f"{label:16s} {row['method']:16s} {row['explicands_per_s']:10.4f} explicands/s "
              f"({row['passes']} passes, {row['flops_per_pass'] / 1e9:.3f} GFLOP/pass), "
              f"x{row['ratio_vs_blend_rise']:.2f} vs blend RISE, roofline {row['roofline']:.1%}", flush=True)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 px miniatures and few masks (seconds)")
    parser.add_argument("--n-masks", type=int, default=None, help="RISE masks (default 32 quick, 200)")
    parser.add_argument("--batch", type=int, default=None, help="inputs per encoder call (default 16 quick, 50)")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/RESULTS_vit_native.json; "
                                                   "--quick writes only with --out)")
    args = parser.parse_args(argv)
    n_masks = args.n_masks or (32 if args.quick else 200)
    batch = args.batch or (16 if args.quick else 50)
    repeats = 1 if args.quick else 2
    peak = measure_peak(256 if args.quick else 2048)
    print(f"float32 matmul peak {peak['peak']:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    rows = []
    for label, (arch, config) in model_configs(args.quick).items():
        rows += rows_for(label, random_model(arch, config), n_masks, batch, repeats, peak["peak"])
    out = args.out or (None if args.quick else os.path.join(RESULTS, "RESULTS_vit_native.json"))
    if out:
        record = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(), cpus=os.cpu_count(),
                      load_avg_1min=os.getloadavg()[0], device=str(jax.devices()[0]), peak_gflops=peak,
                      jax=jax.__version__, n_masks=n_masks, batch=batch, k=K, rows=rows)
        with open(out + ".tmp", "w") as fh:
            json.dump(record, fh, indent=1)
        os.replace(out + ".tmp", out)
    return rows


if __name__ == "__main__":
    main()
