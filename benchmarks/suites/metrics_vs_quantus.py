"""Evaluation metrics, cocoa-jax `evaluate` vs Quantus 0.6, same model, maps and machine, same run.

    python -m benchmarks metrics_vs_quantus [--quick] [--n N] [--maps-only-n 32] [--metrics a,b,...] [--ks 1,4]

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
included, is its own column). Roofline (faithfulness only), for each side:
XLA's FLOPs of one forward pass x that side's forward passes/s / the float32 matmul peak measured
in this run (passes per explicand: `settings`; cocoa-jax's K targets read the same passes, Quantus
makes them once per target). The metrics that read only the maps (`Metric.reads_model` False:
sparseness, complexity, localisation) are also run at N = --maps-only-n explicands (default 32, a
real use scores hundreds of maps; none with --quick): at N = 2-8 a call's fixed cost dominates.
Rows go to benchmarks/results/RESULTS_metrics_vs_quantus.{json,md} (not with --quick); the .md
keeps everything from its "## Notes and earlier runs" heading on (hand-written) below the new table.
On a loaded host, `taskset -c 1 python -m benchmarks metrics_vs_quantus ...` gives each side one core
(torch's OpenMP threads slow down far more than XLA's when the cores are shared); the record says
how many CPUs the run could use.
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
    """{metric: (cocoa-jax options, Quantus class, Quantus kwargs, (cocoa-jax, Quantus) forward passes per
    explicand and target (K = 1) or None, extra evaluate kwargs names)}: the same work on both sides for
    (size x size) images."""
    n = size * size
    flip = max(1, n // 16)
    patch = max(2, size // 8)
    subset = max(4, n // 16)
    return {
        # Quantus flips the 3 H W elements of the map broadcast over channels, features_in_step at a time,
        # and requires features_in_step to divide H W: it makes 3x the steps of cocoa-jax, which flips
        # `flip` whole pixels per step (pixel rows of the results say so); neither side scores x itself
        "pixel_flipping": ({"features_in_step": flip}, "PixelFlipping", {"features_in_step": flip,
                                                                          "perturb_baseline": "black"},
                           (-(-n // flip), -(-3 * n // flip)), ()),
        # 16 regions and the unperturbed x on both sides
        "region_perturbation_morf": ({"patch_size": patch, "regions_evaluation": 16}, "RegionPerturbation",
                                     {"patch_size": patch, "regions_evaluation": 16, "perturb_baseline": "black",
                                      "order": "morf"}, (17, 17), ()),
        # 50 subsets and the unperturbed x on both sides
        "faithfulness_correlation": ({"nr_runs": 50, "subset_size": subset}, "FaithfulnessCorrelation",
                                     {"nr_runs": 50, "subset_size": subset, "perturb_baseline": "black"}, (51, 51),
                                     ()),
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
    parser.add_argument("--maps-only-n", type=int, default=None,
                        help="explicands of the extra rows of the metrics that read only the maps (default 32; "
                             "none with --quick; 0: no extra rows)")
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
    maps_only_n = (0 if args.quick else 32) if args.maps_only_n is None else args.maps_only_n
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
    most = max(n, maps_only_n)  # explicand i is the same in every row
    all_images = rng.uniform(size=(most, size, size, 3)).astype(np.float32)
    all_maps = rng.normal(size=(most, size, size)).astype(np.float32)
    all_labels = rng.integers(0, dim, most)
    all_masks = np.zeros((most, size, size), bool)
    all_masks[:, size // 4: size // 2, size // 4: 3 * size // 4] = True
    images = all_images[:n]
    encoder = types.SimpleNamespace(encode_fn=lambda p, x: module.apply(p, x), params=variables)
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
                    cpus_used=len(os.sched_getaffinity(0)), torch_threads=torch.get_num_threads(),
                    load_avg_1min=load, peak_gflops=peak, jax=jax.__version__, torch=torch.__version__,
                    quantus=quantus.__version__, model=spec.name, n=n, settings={m: table[m][0] for m in names})

    rows = []
    runs = [(name, n_run, k) for name in names
            for n_run in ((n, maps_only_n) if not evaluation.get(name).reads_model and maps_only_n not in (0, n)
                          else (n,))
            for k in (ks if name in FAITHFULNESS else (1,))]
    for name, n_run, k in runs:
        options, cls, q_kwargs, passes, extras = table[name]
        images, maps, labels, masks = (a[:n_run] for a in (all_images, all_maps, all_labels, all_masks))
        x_nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
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
                            device="cpu", batch_size=n_run)
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
        pairs = n_run * k
        row = dict(metric=name, family=evaluation.get(name).family, model=spec.name, n=n_run, k=k,
                   ours_per_s=pairs / t_ours, quantus_per_s=pairs / t_theirs, ratio=t_theirs / t_ours,
                   ours_first_call_s=first,
                   ours_passes=passes[0] if passes else None, quantus_passes=passes[1] * k if passes else None,
                   roofline=(fraction(forward_flops, passes[0] * n_run / t_ours, peak["peak"]) if passes else None),
                   quantus_roofline=(fraction(forward_flops, passes[1] * pairs / t_theirs, peak["peak"])
                                     if passes else None))
        rows.append(row)
        if out:  # after every row: a run cut short keeps what it measured
            write(out, rows, record(os.getloadavg()[0]))
        roof = (f", roofline {row['roofline']:.1%} vs {row['quantus_roofline']:.1%}, passes per explicand "
                f"{row['ours_passes']} vs {row['quantus_passes']}" if row["roofline"] is not None else "")
        print(f"{name:26s} N={n_run} K={k}: cocoa-jax {row['ours_per_s']:9.2f}/s (first call {first:.1f} s), "
              f"Quantus {row['quantus_per_s']:9.2f}/s, ratio {row['ratio']:.1f}x{roof}", flush=True)
    print(f"(jax {jax.__version__}, torch {torch.__version__}, quantus {quantus.__version__}; "
          f"{os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.1f})")
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


EARLIER = "## Notes and earlier runs"  # the .md's hand-written notes start at this heading; `write` keeps them


def write(folder: str, rows: list[dict], record: dict) -> None:
    """RESULTS_metrics_vs_quantus.json (the record with its rows) and .md (the table), atomically."""
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, "RESULTS_metrics_vs_quantus")
    earlier = ""
    if os.path.exists(base + ".md"):  # hand-written notes of earlier runs are kept below the new table
        with open(base + ".md") as fh:
            old = fh.read()
        if EARLIER in old:
            earlier = old[old.index(EARLIER):]
    lines = [f"# Metrics: cocoa-jax `evaluate` vs Quantus {record['quantus']}", "",
             f"{record['date']}, {record['cpu']} ({record['cpus']} CPUs, {record.get('cpus_used', record['cpus'])} "
             f"used, 1-min load {record['load_avg_1min']:.1f}: "
             f"a shared, loaded machine; ratios are same-run), {record['model']}, N = {record['n']} explicands; "
             f"explicand-target pairs per second. Written by `python -m benchmarks metrics_vs_quantus`.", "",
             "pixel_flipping: Quantus flips the 3 H W elements of the map broadcast over channels and needs "
             "features_in_step to divide H W, so it makes 3x the steps (forward passes) of cocoa-jax, which flips "
             "whole pixels; the other rows do the same work on both sides. Passes: forward passes per explicand "
             "for the K targets (cocoa-jax's K targets read the same passes; Quantus is called once per target); "
             "roofline: XLA's FLOPs of one pass x passes/s / the float32 matmul peak of this run, each side.", "",
             "| metric | family | N | K | cocoa-jax /s | Quantus /s | ratio | cocoa-jax first call s "
             "| passes cocoa-jax / Quantus | roofline cocoa-jax / Quantus |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        passes = "-" if r.get("ours_passes") is None else f"{r['ours_passes']} / {r['quantus_passes']}"
        roof = "-" if r["roofline"] is None else f"{r['roofline']:.1%} / {r['quantus_roofline']:.1%}"
        lines.append(f"| {r['metric']} | {r['family']} | {r['n']} | {r['k']} | {r['ours_per_s']:.2f} | "
                     f"{r['quantus_per_s']:.2f} | {r['ratio']:.1f}x | {r['ours_first_call_s']:.1f} | {passes} | {roof} |")
    text = "\n".join(lines) + "\n" + ("\n" + earlier if earlier else "")
    for path, text in ((base + ".json", json.dumps(dict(record, rows=rows), indent=1)), (base + ".md", text)):
        with open(path + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
