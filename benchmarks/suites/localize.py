"""Pointing game for cross-modal localisation on the shipped digits dual encoder (paper Sec. 4.3).

    python -m benchmarks.suites.localize [--seeds 5] [--images 100] [--n-steps 16] [--n-samples 16] [--n-masks 500]

Each seed draws `--images` 2x2 grids of four held-out digits of different classes (64x64) with a
random queried tile; COCOA's corpus is the query caption "This is a photo of a {digit}", its
foil the other nine digit captions. For IG, GradientSHAP and RISE and the targets COCOA,
corpus-only and label-free it scores whether the channel-mean attribution's maximum (`max`),
and separately the tile holding the largest share of positive mass (`mass`), is the queried
tile. Chance is 0.25 for both. Reported: mean over seeds and the 95% CI half-width over seeds
(Student t, n_seeds - 1 degrees of freedom). Step/sample/mask counts are reduced from the
paper's (50 / 50 / 5000) to fit ~10 minutes on 2 CPU cores; pass larger ones for tighter maps.

Writes runs/benchmarks/localize.json (per-seed scores, settings, timings) and prints a Markdown
table (also written to runs/benchmarks/localize.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(dof: int) -> float:
    """Two-sided 95% Student t quantile (scipy when available, else the nearest tabulated value)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, dof))
    except ImportError:
        return T_975[min(T_975, key=lambda k: abs(k - dof))]


def mean_ci(values) -> tuple[float, float]:
    """(mean, 95% CI half-width) of per-seed values (half-width NaN for one seed)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(t_quantile(len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--images", type=int, default=100, help="grids per seed")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--n-masks", type=int, default=500)
    parser.add_argument("--grid-size", type=int, default=8, help="RISE cells per side (8: 8 px cells, the paper's at 32 px)")
    parser.add_argument("--chunk", type=int, default=50, help="grids per jitted call")
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks"))
    args = parser.parse_args(argv)
    for name in ("seeds", "images", "n_steps", "n_samples", "n_masks", "grid_size", "chunk"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")

    import jax

    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.models import digits_clip
    from cocoa_jax.training.clip_digits import class_text_embeddings
    from cocoa_jax.usecases import localize as L
    from cocoa_jax import methods

    model = digits_clip.load_digits_clip()
    data = load_digits_split(seed=0)
    class_reps = class_text_embeddings(model)
    options = {"integrated_gradients": {"n_steps": args.n_steps},
               "gradient_shap": {"n_samples": args.n_samples, "stdev": 0.2},
               "rise": {"n_masks": args.n_masks, "grid_size": (args.grid_size, args.grid_size)}}
    per_seed = {m: np.zeros((args.seeds, len(L.TARGET_NAMES), 2)) for m in options}
    seconds = {m: 0.0 for m in options}
    start = time.perf_counter()
    for seed in range(args.seeds):
        grid_key, method_key = jax.random.split(jax.random.key(seed))
        grids = L.sample_grids(grid_key, data.x_test, data.y_test, args.images)
        for m, opt in options.items():
            t0 = time.perf_counter()
            _, hits, _ = L.localize_grids(model.encode_fn, model.params, class_reps, grids, method_key, {m: opt},
                                          chunk=args.chunk)
            per_seed[m][seed] = np.asarray(hits[m]).mean(axis=0)
            seconds[m] += time.perf_counter() - t0
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)

    lines = ["| Method | Target | pointing game, max (↑) | pointing game, mass (↑) |", "|---|---|---|---|"]
    summary = {}
    for m in options:
        for k, t in enumerate(L.TARGET_NAMES):
            (mx, mx_ci), (ms, ms_ci) = mean_ci(per_seed[m][:, k, 0]), mean_ci(per_seed[m][:, k, 1])
            summary[f"{m}/{t}"] = {"max": [mx, mx_ci], "mass": [ms, ms_ci]}
            lines.append(f"| {methods.get(m).title} | {L.TARGET_TITLES[t]} | {mx:.3f} ({mx_ci:.3f}) | {ms:.3f} ({ms_ci:.3f}) |")
    lines.append("| (chance) | | 0.250 | 0.250 |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    record = {"settings": vars(args), "n_images_total": args.seeds * args.images, "chance": 0.25,
              "summary_mean_ci95": summary,
              "per_seed": {m: v.tolist() for m, v in per_seed.items()}, "targets": list(L.TARGET_NAMES),
              "seconds_per_method": {m: round(s, 1) for m, s in seconds.items()},
              "total_seconds": round(time.perf_counter() - start, 1),
              "versions": {"jax": jax.__version__, "python": platform.python_version(),
                           "backend": jax.default_backend(), "cpus": os.cpu_count()}}
    for name, text in (("localize.json", json.dumps(record, indent=2)), ("localize.md", table + "\n")):
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(f"wrote {args.out}/localize.json and localize.md in {record['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
