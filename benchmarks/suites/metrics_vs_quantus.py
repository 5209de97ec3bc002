"""Evaluation metrics, cocoa-jax `evaluate` vs Quantus 0.6, same model, maps and machine, same run.

    python -m benchmarks metrics_vs_quantus [--quick] [--n N] [--metrics a,b,...] [--ks 1,4]

Model pair from benchmarks/harness/models.py (random weights; only speed is compared): --quick the
tiny 16 px ResNet pair, otherwise the CIFAR ResNet-18 pair (32 px). The target of explicand n is
output unit y_n of the encoder: Quantus's "logit" y_n, here a dot-product Target with direction
e_{y_n} (the same number). K = 1 and, for the faithfulness metrics, K = 4 targets per explicand
(Quantus is called once per target, as it scores one label per call; cocoa-jax scores all K from
every encoder pass). Both sides get the same (N, H, W) maps, Quantus's "black" baseline and the
same work per explicand (steps, samples, subsets: `settings` below; pixel flipping excepted, where
Quantus makes 3x the steps: it flips channel elements, not pixels). Explainers: cocoa-jax's
vanilla gradients, Quantus's `quantus.explain(method="Saliency")` (Captum). The randomisation
metrics score the fully randomised model only (Quantus skip_layers=True / return_last_correlation;
cocoa-jax aggregate="last"); cocoa-jax's cascade is `randomisation.cascade_params`.

Rates are explicand-target pairs per second (N K / wall seconds); cocoa-jax's time excludes
compilation (one warm-up call, then the median of --repeats calls; the first call, compilation
included, is its own column). Roofline (faithfulness only):
XLA's FLOPs of one forward pass x forward passes/s / the float32 matmul peak measured in this run.
Rows go to benchmarks/results/RESULTS_metrics_vs_quantus.{json,md} (not with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS
from benchmarks.harness import models as M
from benchmarks.harness.machine import cpu_name
from benchmarks.harness.roofline import fraction, measure_peak, program_flops
from benchmarks.harness.timing import time_call


def settings(size: int) -> dict:
    """{metric: (cocoa-jax options, Quantus class, Quantus kwargs, forward passes per explicand or None,
    extra evaluate kwargs names)}: the same work on both sides for (size x size) images."""
    n = size * size
    flip = max(1, n // 16)
    patch = max(2, size // 8)
    subset = max(4, n // 16)
    return {
        # Quantus flips the 3 H W elements of the map broadcast over channels, features_in_step at a time,
        # and requires features_in_step to divide H W: it makes 3x the steps of cocoa-jax, which flips
        # `flip` whole pixels per step (pixel rows of the results say so)
        "pixel_flipping": ({"features_in_step": flip}, "PixelFlipping", {"features_in_step": flip,
                                                                          "perturb_baseline": "black"},
                           n // flip + 1, ()),
        "region_perturbation_morf": ({"patch_size": patch, "regions_evaluation": 16}, "RegionPerturbation",
                                     {"patch_size": patch, "regions_evaluation": 16, "perturb_baseline": "black",
                                      "order": "morf"}, 17, ()),
        "faithfulness_correlation": ({"nr_runs": 50, "subset_size": subset}, "FaithfulnessCorrelation",
                                     {"nr_runs": 50, "subset_size": subset, "perturb_baseline": "black"}, 51, ()),
        "max_sensitivity": ({"n_samples": 8, "radius": 0.2}, "MaxSensitivity", {"nr_samples": 8, "lower_bound": 0.2},
                            None, ("explainer",)),
        "avg_sensitivity": ({"n_samples": 8, "radius": 0.2}, "AvgSensitivity", {"nr_samples": 8, "lower_bound": 0.2},
                            None, ("explainer",)),
        "sparseness": ({}, "Sparseness", {}, None, ()),
        "complexity": ({}, "Complexity", {}, None, ()),
        "mprt": ({"aggregate": "last"}, "MPRT", {"skip_layers": True, "return_last_correlation": True}, None,
                 ("explainer", "randomized_params")),
        "smooth_mprt": ({"aggregate": "last", "n_samples": 8}, "SmoothMPRT",
                        {"skip_layers": True, "return_last_correlation": True, "nr_samples": 8}, None,
                        ("explainer", "randomized_params")),
        "efficient_mprt": ({"n_bins": 100}, "EfficientMPRT", {"complexity_func_kwargs": {"n_bins": 100}}, None,
                           ("explainer", "randomized_params")),
        "random_logit": ({}, "RandomLogit", {}, None, ("explainer", "alternative_target")),
        "pointing_game": ({}, "PointingGame", {}, None, ("masks",)),
        "relevance_mass_accuracy": ({}, "RelevanceMassAccuracy", {}, None, ("masks",)),
        "relevance_rank_accuracy": ({}, "RelevanceRankAccuracy", {}, None, ("masks",)),
    }


# ROAD is left out: Quantus 0.6's ROAD fails on 3-channel images with (N, 1, H, W) maps (IndexError in
# noisy_linear_imputation: it ranks C H W elements and imputes on H W pixels); IROF needs its SLIC segments.
FAITHFULNESS = ("pixel_flipping", "region_perturbation_morf", "faithfulness_correlation")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes, no results written (< 2 min)")
    parser.add_argument("--n", type=int, default=None, help="explicands (default 8; 2 with --quick)")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="timed cocoa-jax calls after the warm-up")
    parser.add_argument("--ks", default="1,4", help="target counts K of the faithfulness metrics (default 1,4)")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: none)")
    args = parser.parse_args(argv)
    import quantus
    import torch

    from cocoa_jax import evaluation
    from cocoa_jax.evaluation.randomisation import cascade_params
    from cocoa_jax.targets import Target

    spec = M.tiny_spec() if args.quick else M.SPECS["resnet18_cifar"]
    n = args.n or (2 if args.quick else 8)
    table = settings(spec.image_size)
    names = list(table) if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    ks = tuple(int(k) for k in args.ks.split(","))
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"unknown metric(s) {unknown}; choose from {sorted(table)}")
    module, variables = M.init_flax(spec)
    model = M.init_torch(spec).eval()
    size, dim = spec.image_size, spec.rep_dim
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(n, size, size, 3)).astype(np.float32)
    maps = rng.normal(size=(n, size, size)).astype(np.float32)
    labels = rng.integers(0, dim, n)
    masks = np.zeros((n, size, size), bool)
    masks[:, size // 4: size // 2, size // 4: 3 * size // 4] = True
    encoder = types.SimpleNamespace(encode_fn=lambda p, x: module.apply(p, x), params=variables)
    x_nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    peak = measure_peak(128 if args.quick else 2048)
    # Each compiled only where a chosen metric needs it: the FLOPs for the faithfulness rows'
    # roofline, the randomised parameters for the randomisation metrics.
    forward_flops = program_flops(lambda v, xb: module.apply(v, xb), variables, jnp.asarray(images[:1])) \
        if set(names) & set(FAITHFULNESS) else float("nan")
    print(f"float32 matmul peak {peak['peak']:.1f} GFLOP/s; one forward pass {forward_flops / 1e6:.1f} MFLOP; "
          f"{spec.name}, N={n}", flush=True)
    explainer = evaluation.method_explainer("vanilla_gradients")
    randomized = (cascade_params(encoder.encode_fn, variables, jax.random.key(1), jnp.asarray(images[:1]))[-1],) \
        if any("randomized_params" in table[m][4] for m in names) else None

    def target_of(label_sets):  # (N, K, D) one-hot dot-product targets
        return Target(jnp.asarray(np.eye(dim, dtype=np.float32)[np.stack(label_sets, axis=1)]),
                      (False,) * len(label_sets))

    def quantus_explain(model, inputs, targets, **kwargs):
        return quantus.explain(model, inputs, targets, method="Saliency", **kwargs)

    out = args.out or (None if args.quick else RESULTS)

    def record(load):
        return dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(), cpus=os.cpu_count(),
                    load_avg_1min=load, peak_gflops=peak, jax=jax.__version__, torch=torch.__version__,
                    quantus=quantus.__version__, model=spec.name, n=n, settings={m: table[m][0] for m in names})

    rows = []
    for name in names:
        options, cls, q_kwargs, passes, extras = table[name]
        for k in (ks if name in FAITHFULNESS else (1,)):
            label_sets = [(labels + j) % dim for j in range(k)]
            given = {"explainer": explainer, "randomized_params": randomized, "masks": masks,
                     "alternative_target": target_of([(s + 1) % dim for s in label_sets])}

            def ours():
                return evaluation.evaluate(encoder, images, maps, metrics=(name,), target=target_of(label_sets),
                                           key=jax.random.key(0), baseline="black", options={name: options},
                                           **{e: given[e] for e in extras})[name]

            start = time.perf_counter()
            jax.block_until_ready(ours())
            first = time.perf_counter() - start
            t_ours = time_call(ours, args.repeats, warmup=False)
            metric = getattr(quantus, cls)(disable_warnings=True, display_progressbar=False, **q_kwargs)

            def theirs():
                out = None
                for labels_k in label_sets:  # one Quantus call per target
                    call = dict(model=model, x_batch=x_nchw, y_batch=labels_k, a_batch=maps[:, None].copy(),
                                device="cpu", batch_size=n)
                    if "explainer" in extras:
                        call["explain_func"] = quantus_explain
                    if "masks" in extras:
                        call["s_batch"] = masks[:, None].astype(np.float32)
                    if cls == "RandomLogit":
                        metric.num_classes = dim
                    np.random.seed(0)
                    out = metric(**call)
                return out

            with torch.no_grad() if "explainer" not in extras else _null():
                t_theirs = time_call(theirs, 1, warmup=False)
            pairs = n * k
            row = dict(metric=name, family=evaluation.get(name).family, model=spec.name, n=n, k=k,
                       ours_per_s=pairs / t_ours, quantus_per_s=pairs / t_theirs, ratio=t_theirs / t_ours,
                       ours_first_call_s=first,
                       roofline=(fraction(forward_flops, passes * n / t_ours, peak["peak"]) if passes else None))
            rows.append(row)
            if out:  # after every row: a run cut short keeps what it measured
                write(out, rows, record(os.getloadavg()[0]))
            roof = f", roofline {row['roofline']:.1%}" if row["roofline"] is not None else ""
            print(f"{name:26s} K={k}: cocoa-jax {row['ours_per_s']:9.2f}/s (first call {first:.1f} s), "
                  f"Quantus {row['quantus_per_s']:9.2f}/s, ratio {row['ratio']:.1f}x{roof}", flush=True)
    print(f"(jax {jax.__version__}, torch {torch.__version__}, quantus {quantus.__version__}; "
          f"{os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.1f})")
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def write(folder: str, rows: list[dict], record: dict) -> None:
    """RESULTS_metrics_vs_quantus.json (the record with its rows) and .md (the table), atomically."""
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, "RESULTS_metrics_vs_quantus")
    lines = [f"# Metrics: cocoa-jax `evaluate` vs Quantus {record['quantus']}", "",
             f"{record['date']}, {record['cpu']} ({record['cpus']} CPUs, 1-min load {record['load_avg_1min']:.1f}: "
             f"a shared, loaded machine; ratios are same-run), {record['model']}, N = {record['n']} explicands; "
             f"explicand-target pairs per second. Written by `python -m benchmarks metrics_vs_quantus`.", "",
             "pixel_flipping: Quantus flips the 3 H W elements of the map broadcast over channels and needs "
             "features_in_step to divide H W, so it makes 3x the steps (forward passes) of cocoa-jax, which flips "
             "whole pixels; the other rows do the same work on both sides.", "",
             "| metric | family | K | cocoa-jax /s | Quantus /s | ratio | cocoa-jax first call s | roofline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        roof = "-" if r["roofline"] is None else f"{r['roofline']:.1%}"
        lines.append(f"| {r['metric']} | {r['family']} | {r['k']} | {r['ours_per_s']:.2f} | {r['quantus_per_s']:.2f} | "
                     f"{r['ratio']:.1f}x | {r['ours_first_call_s']:.1f} | {roof} |")
    for path, text in ((base + ".json", json.dumps(dict(record, rows=rows), indent=1)),
                       (base + ".md", "\n".join(lines) + "\n")):
        with open(path + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
