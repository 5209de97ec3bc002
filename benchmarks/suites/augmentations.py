"""Paper Section 4.2, measured: does COCOA put its positive attribution on the original's content?

    python -m benchmarks.suites.augmentations [--seeds 5] [--explicands 64] [--out runs/augmentations_benchmark.json]

On the embedded digits encoder, for every seed: `--explicands` random test digits, a foil of
1060 random training digits (`targets.foil_size(0.01, 0.05, nonnegative=True)`), and
`cocoa_jax.usecases.augmentations.content_share_experiment`:
  erase: explicand = the randomly erased view (10-25% of the area set to 0.5), corpus = the
         original; content = pixels outside the erased box.
  crop:  explicand = the original, corpus = its random resized crop (20-50% of the area); content
         = the crop's footprint in the original. (A crop view is all original content, so the
         paper's direction would score 1 for every method.)
Score: share of positive attribution mass on the content pixels (channels summed; RISE maps
centred), COCOA (cosine, corpus of one) vs the explicand's label-free target, for IG (20 steps),
GradientSHAP (20 samples, sigma 0.2) and RISE (1000 masks, 4x4 grid): fewer than the paper's
50 / 50 / 5000 to fit about 10 minutes on 2 CPU cores. "chance" is the content's area fraction
(the share of a spatially uniform attribution).

Prints a Markdown table: mean over seeds of the per-seed mean share, with the 95% t-interval
half-width over seeds, and the paired difference COCOA - label-free (same explicands, same
views) with its interval. Writes every per-explicand share to --out (JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

METHOD_NAMES = ("integrated_gradients", "gradient_shap", "rise")
OPTIONS = dict(n_steps=20, n_samples=20, stdev=0.2, n_masks=1000, grid_size=(4, 4), batch_size=500)


def run(seeds: int, explicands: int) -> dict:
    import jax

    from cocoa_jax import meshes, models
    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.targets import foil_size
    from cocoa_jax.usecases import augmentations as A

    model = models.load("digits")
    data = load_digits_split(seed=0)
    n_foil = foil_size(0.01, 0.05, nonnegative=True)
    records = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        rng = np.random.default_rng(1000 + seed)
        expl = rng.choice(len(data.x_test), explicands, replace=False)
        foil = rng.choice(len(data.x_train), n_foil, replace=False)
        foil_reps = A.encode_in_chunks(model.encode_fn, model.params, data.x_train[foil])
        # As `cocoa-jax augmentations` runs: one explicand per device (every core a device).
        out = A.content_share_experiment(model.encode_fn, model.params, data.x_test[expl], foil_reps,
                                         jax.random.key(seed), mesh=meshes.local_explicand_mesh(explicands),
                                         **OPTIONS)
        records.append({"seed": seed, "explicand_indices": expl.tolist(), "seconds": time.perf_counter() - t0,
                        **{aug: {"chance": r["chance"].tolist(),
                                 "share": {m: v.tolist() for m, v in r["share"].items()}}
                           for aug, r in out.items()}})
        print(f"seed {seed}: {records[-1]['seconds']:.1f} s", flush=True)
    return {"records": records, "options": {k: list(v) if isinstance(v, tuple) else v for k, v in OPTIONS.items()},
            "explicands_per_seed": explicands, "seeds": seeds, "foil_size": n_foil}


def summarize(result: dict) -> list[dict]:
    """Rows (augmentation, method): per-seed means -> mean and 95% CI half-width over seeds."""
    from cocoa_jax import methods
    from cocoa_jax.sweep.report import ci95_halfwidth

    rows = []
    records = result["records"]
    for aug in ("crop", "erase"):
        chance = [np.mean(r[aug]["chance"]) for r in records]
        for method in METHOD_NAMES:
            shares = [np.asarray(r[aug]["share"][method], np.float64) for r in records]  # (N, K) each
            cocoa = [np.nanmean(s[:, 0]) for s in shares]
            free = [np.nanmean(s[:, 1]) for s in shares]
            diff = [np.nanmean(s[:, 0] - s[:, 1]) for s in shares]
            wins = [np.nanmean(s[:, 0] > s[:, 1]) for s in shares]
            rows.append({"augmentation": aug, "method": methods.get(method).title,
                         "cocoa": (np.mean(cocoa), ci95_halfwidth(cocoa)),
                         "label_free": (np.mean(free), ci95_halfwidth(free)),
                         "difference": (np.mean(diff), ci95_halfwidth(diff)),
                         "cocoa_wins": float(np.mean(wins)), "chance": (np.mean(chance), ci95_halfwidth(chance)),
                         "nan": int(sum(np.isnan(s).sum() for s in shares))})
    return rows


def markdown(rows: list[dict]) -> str:
    fmt = lambda pair: f"{pair[0]:.3f} ({pair[1]:.3f})"
    lines = ["| view | method | COCOA | label-free | COCOA - label-free | COCOA higher | chance (area) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['augmentation']} | {r['method']} | {fmt(r['cocoa'])} | {fmt(r['label_free'])} | "
                     f"{r['difference'][0]:+.3f} ({r['difference'][1]:.3f}) | {100 * r['cocoa_wins']:.0f}% | "
                     f"{fmt(r['chance'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites.augmentations", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--explicands", type=int, default=64, help="test digits per seed (default 64: 320 in all)")
    parser.add_argument("--out", default=os.path.join("runs", "augmentations_benchmark.json"))
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.explicands < 1:
        parser.error("--seeds must be >= 2 (for an interval) and --explicands >= 1")
    from cocoa_jax.meshes import use_every_core

    use_every_core()
    import jax

    t0 = time.perf_counter()
    result = run(args.seeds, args.explicands)
    rows = summarize(result)
    result.update(summary=rows, seconds=time.perf_counter() - t0,
                  machine={"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                           "jax": jax.__version__, "backend": jax.default_backend()})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)
    print(markdown(rows))
    print(f"{args.seeds} seeds x {args.explicands} explicands, {result['seconds']:.0f} s in all; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
