"""ViT-native attributions on a trained ViT: insertion/deletion AUCs of the COCOA target vs their cost.

    python -m benchmarks vit_quality [--quick] [--per-class N] [--n-masks M] [--out PATH]

The trained encoder is the shipped digits ViT (`models.load("digits_vit")`: 4 blocks, 64 wide,
4 px patches, SimCLR on scikit-learn digits, `python -m cocoa_jax.training.digits_vit`). The
paper's digits setting: for each digit class c, the corpus is 100 training images of c, the
foil 500 random training images (seeded), the explicands the first `per_class` test images of c
(10 classes x per_class explicands). Target: COCOA (cosine). Methods (`VARIANTS`): AttnLRP,
attention rollout, RISE by token drop, IG with 50 steps from the blurred baseline, and RISE
blending with the blurred baseline (n_masks masks each; the blend form on the paper's grid for 32 px).

Evaluation: the contrastive corpus similarity (`ccs`, the same corpus and foil) and with a
resampled foil (`ccs_resampled_foil`: 500 other random training images), insertion and deletion
AUCs, each under two removals: blend (removed pixels take the blurred image's values, the
paper's; 50 steps) and token drop (removed patches' tokens left out; 50 steps too: the passes' token
counts are padded to 8 lengths, `metrics.ablation_curves`' token_buckets). Per method: the encoder
passes per explicand (`Method.passes`: forward-only, with a gradient), their FLOPs (`explicand_flops`:
passes x XLA cost-analysis FLOPs of one pass) and the ratio of IG's to them, seconds per explicand
(compute, the first class -- which compiles -- left out), the ratio of IG's seconds to its own
in the same run, and each AUC's mean with a 95% t-interval over explicands; `vs IG` says whether
the mean is inside IG's interval, beyond it on the better side (better) or on the worse side (worse).
Writes benchmarks/results/RESULTS_vit_quality.{json,md} unless --quick (or to --out PATH.{json,md}).
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS
from benchmarks.harness.machine import cpu_name
from cocoa_jax import files, methods, metrics, models, pipeline, targets
from cocoa_jax.attribution_methods import token_drop

ARCH = "digits_vit"
CORPUS, FOIL = 100, 500
# Insertion/deletion steps per removal: the paper's 50 for both. Token drop pads the 102 passes' token
# counts to 8 lengths (8 encoder programs; exact lengths were 102, compiling for > 4 minutes here).
N_STEPS = {"blend": 50, "token_drop": 50}
MEASURE_NAMES = ("ccs", "ccs_resampled_foil")
REMOVALS = ("blend", "token_drop")
REFERENCE = "IG-50"


def variants(n_masks: int, ig_steps: int = 50) -> dict:
    """{label: (method, options)}: the compared methods (two RISE forms: options are per method name)."""
    return {"AttnLRP": ("attn_lrp", {}),
            "Rollout": ("rollout", {}),
            "RISE token drop": ("rise", {"n_masks": n_masks, "removal": "token_drop"}),
            f"IG-{ig_steps}": ("integrated_gradients", {"n_steps": ig_steps}),
            "RISE blend": ("rise", {"n_masks": n_masks})}


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` (N,) and its two-sided t-interval, mean +- t_{N-1} s / sqrt(N)
    with s the sample standard deviation (ddof 1). N = 1: the interval is the point."""
    from scipy import stats

    values = np.asarray(values, np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"`values` must be a non-empty array of finite numbers, got {values!r}")
    mean = float(values.mean())
    if values.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return mean, mean - half, mean + half


def verdict(mean: float, reference: tuple[float, float, float], better: str) -> str:
    """"within" when `mean` lies in the reference's interval (low, high), else "better" or "worse"
    by the measure's direction (`better`: "higher" or "lower")."""
    _, low, high = reference
    if low <= mean <= high:
        return "within"
    above = mean > high
    return "better" if above == (better == "higher") else "worse"


def auc_table(aucs: dict, reference: str = REFERENCE) -> list[dict]:
    """Summary rows of per-explicand AUCs.

    aucs: {method label: {(removal, measure, kind): (N,) AUCs}}; every label has the same keys.
    Returns one row per (label, removal, measure, kind): mean, low, high (`mean_ci`) and `vs_ref`,
    the `verdict` of the mean against `reference`'s interval with the measure's direction for that
    curve (`metrics.MEASURES[measure].better(kind)`).
    """
    if reference not in aucs:
        raise ValueError(f"`reference` {reference!r} is not among the methods {list(aucs)}")
    rows = []
    for label, cells in aucs.items():
        for (removal, measure, kind), values in cells.items():
            mean, low, high = mean_ci(values)
            ref = mean_ci(aucs[reference][(removal, measure, kind)])
            rows.append(dict(method=label, removal=removal, measure=measure, kind=kind, n=int(np.size(values)),
                             mean=mean, low=low, high=high,
                             vs_ref=verdict(mean, ref, metrics.MEASURES[measure].better(kind))))
    return rows


def pass_flops(model, target) -> dict:
    """XLA cost-analysis FLOPs of one image's passes: forward with every patch token ("forward"), with
    half of them ("forward_half", a token-drop RISE pass at keep_prob 0.5), and the gradient of the
    target's score, plain ("gradient") and in the LRP mode ("gradient_lrp")."""
    access = model.encode_fn.token_access
    x = jnp.zeros((1, *model.input_shape), jnp.float32)
    grid = token_drop.patch_grid(model.input_shape[:2], access.patch_size)
    half = jnp.arange(token_drop.kept_count(grid[0] * grid[1], 0.5), dtype=jnp.int32)[None]

    def gradient(encode):
        score = lambda p, xi: targets.explain_fn(lambda xb: encode(p, xb), target)(xi)
        return token_drop.pass_flops(jax.grad(score, argnums=1), model.params, x[0])

    return {"forward": token_drop.pass_flops(access.encode, model.params, x, None),
            "forward_half": token_drop.pass_flops(access.encode, model.params, x, half),
            "gradient": gradient(model.encode_fn), "gradient_lrp": gradient(model.encode_fn.modes["lrp"])}


def explicand_flops(method: str, options: dict, passes: tuple, flops: dict) -> float:
    """Modelled FLOPs of one explicand: forward passes x a forward's FLOPs (half the tokens for token
    drop) + gradient passes x a gradient pass's (the LRP mode's for AttnLRP). Why modelled: the
    methods stream their passes through rolled loops, which XLA's cost analysis counts once."""
    forward = flops["forward_half"] if options.get("removal") == "token_drop" else flops["forward"]
    gradient = flops["gradient_lrp"] if methods.get(method).model_mode == "lrp" else flops["gradient"]
    return passes[0] * forward + passes[1] * gradient


def _class_data(data, model, digit: int, per_class: int, rng):
    encode = jax.jit(model.encode_fn)
    corpus = data.x_train[data.y_train == digit][:CORPUS]
    foil_idx = rng.choice(len(data.x_train), 2 * FOIL, replace=False)
    reps = np.asarray(encode(model.params, np.concatenate([corpus, data.x_train[foil_idx]])))
    explicands = data.x_test[data.y_test == digit][:per_class]
    return explicands, reps[:len(corpus)], reps[len(corpus):len(corpus) + FOIL], reps[len(corpus) + FOIL:]


def _evaluator(model, removals=REMOVALS):
    """jitted (params, xs, baselines, maps, ccs, ccs_resampled) -> {removal: aucs (N, K, 2, M)} for each of
    `removals` (token drop needs a ViT's token access; resnet_quality evaluates blend only)."""
    access = getattr(model.encode_fn, "token_access", None)

    def run(params, xs, baselines, maps, ccs, resampled):
        n = xs.shape[0]
        measures = metrics.make_measures(MEASURE_NAMES, ccs=ccs, ccs_resampled_foil=resampled)
        measures = jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (n,) + jnp.shape(leaf)), measures)
        out = {}
        for removal in removals:
            tokens = token_drop.kept_encoder(access, params) if removal == "token_drop" else None
            _, aucs = metrics.insertion_deletion_batch(lambda xb: model.encode_fn(params, xb), measures, xs,
                                                       baselines, maps, n_steps=N_STEPS[removal], removal=removal,
                                                       tokens=tokens)
            out[removal] = aucs
        return out

    return jax.jit(run)


def measure(per_class: int, n_masks: int, classes=tuple(range(10)), seed: int = 0, weights: str | None = None):
    """Run every variant on every class; returns (aucs {label: {(removal, measure, kind): (N,)}},
    seconds {label: per-explicand seconds, first class left out}, passes {label: (forward, gradient)},
    flops {"per_pass": `pass_flops`, "per_explicand": {label: `explicand_flops`}})."""
    from cocoa_jax.data.digits import load_digits_split

    model, data = models.load(ARCH, weights), load_digits_split(seed=0)
    rng = np.random.default_rng(seed)
    table = variants(n_masks)
    evaluate = _evaluator(model)
    aucs = {label: {} for label in table}
    seconds = {label: [] for label in table}
    for ci, digit in enumerate(classes):
        xs, corpus, foil, resampled = _class_data(data, model, digit, per_class, rng)
        ccs = targets.cocoa(jnp.asarray(corpus), jnp.asarray(foil))
        ccs_resampled = targets.cocoa(jnp.asarray(corpus), jnp.asarray(resampled))
        for label, (method, options) in table.items():
            result = pipeline.explain_images(model, xs, corpus_reps=corpus, foil_reps=foil, targets=("cocoa",),
                                             methods=(method,), options={method: options},
                                             key=jax.random.key(seed + digit))
            if ci > 0:  # the method's own time (its program; targets and baselines left out)
                seconds[label].append(result.seconds[method] / len(xs))
            scored = jax.device_get(evaluate(model.params, jnp.asarray(xs), jnp.asarray(result.baselines),
                                             jnp.asarray(result.maps[method]), ccs, ccs_resampled))
            for removal, values in scored.items():  # (N, K=1, 2, M)
                for m, name in enumerate(MEASURE_NAMES):
                    for k, kind in enumerate(metrics.KINDS):
                        cell = aucs[label].setdefault((removal, name, kind), [])
                        cell.extend(np.asarray(values)[:, 0, k, m].tolist())
        print(f"class {digit}: {len(xs)} explicands done", flush=True)
    shape = model.input_shape
    passes = {label: tuple(int(p) for p in methods.get(method).passes(methods.resolved_options(method, options, shape),
                                                                       shape))
              for label, (method, options) in table.items()}
    per_explicand = {label: float(np.median(v)) if v else float("nan") for label, v in seconds.items()}
    flops = pass_flops(model, targets.cocoa(jnp.asarray(corpus), jnp.asarray(foil)))
    modelled = {label: explicand_flops(method, options, passes[label], flops)
                for label, (method, options) in table.items()}
    return aucs, per_explicand, passes, {"per_pass": flops, "per_explicand": modelled}


def markdown(rows, seconds, passes, header: str, flops: dict | None = None, removals=REMOVALS) -> str:
    """The results: one table per removal of `removals`, one line per method (passes, modelled FLOPs,
    seconds, AUCs of each measure)."""
    by = {(r["method"], r["removal"], r["measure"], r["kind"]): r for r in rows}
    ig = seconds.get(REFERENCE)
    lines = [header]
    for removal in removals:
        head = ["method", "passes (fwd, grad)"] + (["MFLOP / explicand", "IG's FLOPs / its FLOPs"] if flops else [])
        head += ["s / explicand", "IG's time / its time"]
        head += [f"{measure} {kind[:3]}. {metrics.MEASURES[measure].arrow(kind)}"
                 for measure in MEASURE_NAMES for kind in metrics.KINDS]
        lines += ["", f"Evaluated by {removal.replace('_', ' ')} ({N_STEPS[removal]} steps):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label in seconds:
            line = [label, f"{passes[label][0]}, {passes[label][1]}"]
            if flops:  # a reference map (no encoder passes: 0 FLOPs, no time) shows "-"
                line += [f"{flops[label] / 1e6:.0f}", f"{flops[REFERENCE] / flops[label]:.1f}"] if flops[label] \
                    else ["-", "-"]
            timed = np.isfinite(seconds[label])
            line += [f"{seconds[label]:.4f}" if timed else "-", f"{ig / seconds[label]:.1f}" if ig and timed else ""]
            for measure in MEASURE_NAMES:
                for kind in metrics.KINDS:
                    r = by[(label, removal, measure, kind)]
                    mark = "" if r["vs_ref"] == "within" or label == REFERENCE else f" **{r['vs_ref']}**"
                    line.append(f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]{mark}")
            lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + "\n"


def quality_parser(description: str, *, per_class: int, masks_help: str, weights_of: str,
                   stem: str) -> argparse.ArgumentParser:
    """The quality suites' command line (this one and resnet_quality): sizes, masks, weights, output stem."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="2 classes x 2 explicands, 64 masks (a smoke run)")
    parser.add_argument("--per-class", type=int, default=None,
                        help=f"explicands per class (default {per_class}: {10 * per_class} in all)")
    parser.add_argument("--n-masks", type=int, default=None, help=masks_help)
    parser.add_argument("--weights", default=None, help=f"a {weights_of} model directory (default: the shipped one)")
    parser.add_argument("--out", default=None, help=f"results path stem (default benchmarks/results/{stem}; "
                                                   "--quick writes only with --out)")
    return parser


def quality_sizes(args, *, per_class: int, n_masks: int) -> tuple[int, int, tuple[int, ...]]:
    """(explicands per class, RISE masks, classes) of a parsed quality command line."""
    quick = args.quick
    return (args.per_class or (2 if quick else per_class), args.n_masks or (64 if quick else n_masks),
            (0, 1) if quick else tuple(range(10)))


def save_results(out: str, text: str, *, load: float, arch: str, per_class: int, classes, n_masks: int, n_steps,
                 seconds: dict, passes: dict, flops: dict, rows: list[dict], aucs: dict) -> None:
    """OUT.json (the run's record: machine, sizes, seconds, passes, FLOPs, rows, every AUC) and OUT.md
    (`text`), each written atomically."""
    record = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(), cpus=os.cpu_count(),
                  load_avg_1min=load, device=str(jax.devices()[0]), jax=jax.__version__, arch=arch,
                  per_class=per_class, classes=list(classes), n_masks=n_masks, n_steps=n_steps,
                  corpus=CORPUS, foil=FOIL,
                  seconds_per_explicand={k: v if np.isfinite(v) else None for k, v in seconds.items()},
                  passes={k: list(v) for k, v in passes.items()}, flops=flops, rows=rows,
                  aucs={label: {"/".join(key): list(map(float, v)) for key, v in cells.items()}
                        for label, cells in aucs.items()})
    files.atomic_write_json(out + ".json", record)
    files.atomic_write_text(out + ".md", text)


def main(argv=None) -> list[dict]:
    args = quality_parser(__doc__.splitlines()[0], per_class=5, masks_help="RISE masks, both forms (default 1000)",
                          weights_of="digits_vit", stem="RESULTS_vit_quality").parse_args(argv)
    per_class, n_masks, classes = quality_sizes(args, per_class=5, n_masks=1000)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    aucs, seconds, passes, flops = measure(per_class, n_masks, classes, weights=args.weights)
    rows = auc_table(aucs)
    n = len(next(iter(next(iter(aucs.values())).values())))
    header = (f"# ViT-native attributions on the trained digits ViT ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
              f"COCOA target (corpus {CORPUS} images of the class, foil {FOIL} random training images), {n} explicands "
              f"({len(classes)} classes x {per_class}), RISE {n_masks} masks, AUCs over {N_STEPS['blend']} steps (blend) and {N_STEPS['token_drop']} (token drop), mean "
              f"[95% t-interval]; (better)/(worse): outside IG-50's interval. {cpu_name()}, {os.cpu_count()} CPUs, "
              f"1-min load {load:.1f} at the start (a loaded, shared machine: seconds are same-run ratios only); "
              f"{time.perf_counter() - start:.0f} s in all.")
    text = markdown(rows, seconds, passes, header, flops["per_explicand"])
    print(text)
    out = args.out or (None if args.quick else os.path.join(RESULTS, "RESULTS_vit_quality"))
    if out:
        save_results(out, text, load=load, arch=ARCH, per_class=per_class, classes=classes, n_masks=n_masks,
                     n_steps=N_STEPS, seconds=seconds, passes=passes, flops=flops, rows=rows, aucs=aucs)
    return rows


if __name__ == "__main__":
    main()
