"""LRP on a trained ResNet: insertion/deletion AUCs of the COCOA target vs their cost, beside IG, GradientSHAP, RISE.

    python -m benchmarks resnet_quality [--quick] [--per-class N] [--n-masks M] [--out PATH]

The trained encoder is the shipped digits SimCLR SmallResNet (`models.load("digits")`, the default
model of `cocoa-jax explain` and of the digits sweep); `lrp` runs its "relevance" mode (zennit's
EpsilonPlusFlat rules, docs/methods.md). The setting is vit_quality's (the paper's digits
setting): for each digit class c, the corpus is 100 training images of c, the foil 500 random
training images (seeded), the explicands the first `per_class` test images of c. Target: COCOA
(cosine). Methods (`variants`): LRP, IG with 16 and 50 steps and GradientSHAP (default options)
from the blurred baseline, and centred RISE (n_masks masks, default 416: the "fast" profile's); and
the evaluation's random reference (`metrics.RANDOM_REFERENCE`, U[0, 1) pixel scores: no passes).

Evaluation: `ccs` and `ccs_resampled_foil` insertion and deletion AUCs by blending with the blurred
image (the paper's removal, 50 steps). Per method: encoder passes per explicand (`Method.passes`),
modelled FLOPs (passes x XLA cost-analysis FLOPs of one forward / one gradient pass, the LRP mode's
for LRP), seconds per explicand (the first class -- which compiles -- left out), IG-50's seconds over
its own (same run), and each AUC's mean with a 95% t-interval over explicands, with the verdict
against IG-50's interval (vit_quality's `auc_table`). Writes
benchmarks/results/RESULTS_resnet_quality.{json,md} unless --quick (or to --out PATH.{json,md}).
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS
from benchmarks.harness.machine import cpu_name
from benchmarks.suites import vit_quality as vq
from cocoa_jax import methods, metrics, models, pipeline, targets
from cocoa_jax.attribution_methods import token_drop

ARCH = "digits"
RANDOM = metrics.RANDOM_REFERENCE.title  # the evaluation's reference row: i.i.d. U[0, 1) pixel scores
REMOVALS = ("blend",)
REFERENCE = vq.REFERENCE  # "IG-50"


def variants(n_masks: int) -> dict:
    """{label: (method, options)}: the compared methods."""
    return {"LRP": ("lrp", {}),
            "IG-16": ("integrated_gradients", {"n_steps": 16}),
            REFERENCE: ("integrated_gradients", {"n_steps": 50}),
            "GradientSHAP": ("gradient_shap", {}),
            "RISE centred": ("rise", {"n_masks": n_masks, "centered": True})}


def pass_flops(model, target) -> dict:
    """XLA cost-analysis FLOPs of one image's passes: a forward, the target score's gradient ("gradient")
    and the same in the relevance mode ("gradient_lrp")."""
    x = jnp.zeros((1, *model.input_shape), jnp.float32)

    def gradient(encode):
        score = lambda p, xi: targets.explain_fn(lambda xb: encode(p, xb), target)(xi)  # noqa: E731
        return token_drop.pass_flops(jax.grad(score, argnums=1), model.params, x[0])

    return {"forward": token_drop.pass_flops(model.encode_fn, model.params, x),
            "gradient": gradient(model.encode_fn), "gradient_lrp": gradient(model.encode_fn.modes["relevance"])}


def explicand_flops(method: str, passes: tuple, flops: dict) -> float:
    """Modelled FLOPs of one explicand: forward passes x a forward's + gradient passes x a gradient pass's
    (the relevance mode's for LRP). Modelled: the methods' rolled loops are counted once by XLA."""
    gradient = flops["gradient_lrp"] if methods.get(method).model_mode == "relevance" else flops["gradient"]
    return passes[0] * flops["forward"] + passes[1] * gradient


def measure(per_class: int, n_masks: int, classes=tuple(range(10)), seed: int = 0, weights: str | None = None):
    """Run every variant on every class; returns (aucs {label: {(removal, measure, kind): (N,)}},
    seconds {label: per-explicand seconds, first class left out}, passes {label: (forward, gradient)},
    flops {"per_pass": `pass_flops`, "per_explicand": {label: `explicand_flops`}})."""
    from cocoa_jax.data.digits import load_digits_split

    model, data = models.load(ARCH, weights), load_digits_split(seed=0)
    rng = np.random.default_rng(seed)
    table = variants(n_masks)
    evaluate = vq._evaluator(model, REMOVALS)
    aucs = {label: {} for label in (*table, RANDOM)}
    seconds = {label: [] for label in table}
    for ci, digit in enumerate(classes):
        xs, corpus, foil, resampled = vq._class_data(data, model, digit, per_class, rng)
        ccs = targets.cocoa(jnp.asarray(corpus), jnp.asarray(foil))
        ccs_resampled = targets.cocoa(jnp.asarray(corpus), jnp.asarray(resampled))
        for label, (method, options) in (*table.items(), (RANDOM, (None, None))):
            if method is None:  # the random reference: one U[0, 1) map per explicand, the baselines of the last
                keys = jax.random.split(jax.random.fold_in(jax.random.key(seed + digit), 1), len(xs))
                maps = jnp.stack([metrics.RANDOM_REFERENCE.fn(k, xs.shape[1:]) for k in keys])[:, None, ..., None]
                maps = jnp.broadcast_to(maps, (*maps.shape[:-1], xs.shape[-1]))
            else:
                result = pipeline.explain_images(model, xs, corpus_reps=corpus, foil_reps=foil, targets=("cocoa",),
                                                 methods=(method,), options={method: options},
                                                 key=jax.random.key(seed + digit))
                if ci > 0:  # the method's own time (its program; targets and baselines left out)
                    seconds[label].append(result.seconds[method] / len(xs))
                maps = jnp.asarray(result.maps[method])
            scored = jax.device_get(evaluate(model.params, jnp.asarray(xs), jnp.asarray(result.baselines),
                                             maps, ccs, ccs_resampled))
            for removal, values in scored.items():  # (N, K=1, 2, M)
                for m, name in enumerate(vq.MEASURE_NAMES):
                    for k, kind in enumerate(metrics.KINDS):
                        aucs[label].setdefault((removal, name, kind), []).extend(
                            np.asarray(values)[:, 0, k, m].tolist())
        print(f"class {digit}: {len(xs)} explicands done", flush=True)
    shape = model.input_shape
    passes = {label: tuple(int(p) for p in methods.get(method).passes(methods.resolved_options(method, options, shape),
                                                                       shape))
              for label, (method, options) in table.items()}
    passes[RANDOM] = (0, 0)
    per_explicand = {label: float(np.median(v)) if v else float("nan") for label, v in seconds.items()}
    per_explicand[RANDOM] = float("nan")  # no encoder passes
    flops = pass_flops(model, targets.cocoa(jnp.asarray(corpus), jnp.asarray(foil)))
    modelled = {label: explicand_flops(method, passes[label], flops) for label, (method, options) in table.items()}
    modelled[RANDOM] = 0.0
    return aucs, per_explicand, passes, {"per_pass": flops, "per_explicand": modelled}


def main(argv=None) -> list[dict]:
    args = vq.quality_parser(__doc__.splitlines()[0], per_class=4, masks_help="RISE masks (default 416, the fast "
                             "profile's)", weights_of="digits", stem="RESULTS_resnet_quality").parse_args(argv)
    per_class, n_masks, classes = vq.quality_sizes(args, per_class=4, n_masks=416)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    aucs, seconds, passes, flops = measure(per_class, n_masks, classes, weights=args.weights)
    rows = vq.auc_table(aucs, REFERENCE)
    n = len(next(iter(next(iter(aucs.values())).values())))
    header = (f"# LRP on the trained digits SmallResNet ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
              f"COCOA target (corpus {vq.CORPUS} images of the class, foil {vq.FOIL} random training images), {n} "
              f"explicands ({len(classes)} classes x {per_class}), RISE centred {n_masks} masks, AUCs over "
              f"{vq.N_STEPS['blend']} steps (blend), mean [95% t-interval over explicands]; (better)/(worse): outside "
              f"IG-50's interval. {cpu_name()}, {os.cpu_count()} CPUs, 1-min load {load:.1f} at the start (a loaded, "
              f"shared machine: seconds are same-run ratios only); {time.perf_counter() - start:.0f} s in all.")
    text = vq.markdown(rows, seconds, passes, header, flops["per_explicand"], removals=REMOVALS)
    print(text)
    out = args.out or (None if args.quick else os.path.join(RESULTS, "RESULTS_resnet_quality"))
    if out:
        vq.save_results(out, text, load=load, arch=ARCH, per_class=per_class, classes=classes, n_masks=n_masks,
                        n_steps=vq.N_STEPS["blend"], seconds=seconds, passes=passes, flops=flops, rows=rows, aucs=aucs)
    return rows


if __name__ == "__main__":
    main()
