"""Quality vs encoder passes of the opt-in estimators: `python -m benchmarks.suites.estimators [--quick]`.

For each model (the embedded digits encoder; CIFAR ResNet-18 and a reduced CLIP ViT image tower,
random weights) and the 4 targets stacked (label-free, contrastive label-free, corpus, COCOA;
every pass serves all 4), each method (RISE, GradientSHAP, IG) is run with the paper's estimator
and with each opt-in estimator of `cocoa_jax.attribution` at a ladder of pass counts. Quality
against a high-count reference of the same expectation (up to a constant, which no ranking
sees): Spearman rank correlation and top-10% overlap of the pixel scores
(`metrics.feature_scores`), and |insertion / deletion AUC - the reference's| under each
target's own score (`metrics.insertion_deletion`). Per method the table gives the passes each
estimator needs to match the paper-default estimator's Spearman at the paper's count (RISE 5000
masks, GradientSHAP 50 samples, IG 50 Gauss-Legendre steps), interpolated in log(passes), and
the end-to-end speed-up per explicand (passes ratio x measured passes/s ratio).

Units: a pass is one masked forward pass (RISE) or one path point / sample with the gradients
of all 4 targets (GradientSHAP, IG). Times exclude compilation. Writes
benchmarks/results/RESULTS_estimators.md (or --out), a .json and a .png beside it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from benchmarks import RESULTS
from benchmarks.harness import models as M
from benchmarks.harness.machine import cpu_name
from benchmarks.harness.roofline import measure_peak
from cocoa_jax import baselines, explicand_program, metrics, models, targets
from cocoa_jax.data.digits import load_digits_split

DEFAULT_PASSES = {"rise": 5000, "gradient_shap": 50, "ig": 50}
# The default over the whole ladder; the options up to 1/3 of the paper's count (enough to tell
# whether they reach the default's quality with <= 1/3 of the passes, the goal).
FRACTIONS_DEFAULT = (1 / 12, 1 / 6, 1 / 3, 2 / 3, 1.0)
FRACTIONS_DEFAULT_REDUCED = (1 / 3, 1.0)  # the biggest model
FRACTIONS_OPTION = (1 / 12, 1 / 6, 1 / 3)

# name -> keyword options of the attribution function ({} = the paper's estimator).
ESTIMATORS = {
    "rise": {"default": {}, "centered": {"centered": True}, "antithetic": {"antithetic": True},
             "stratified": {"sampler": "stratified"},
             "centered+stratified": {"centered": True, "sampler": "stratified"}},
    "gradient_shap": {"default": {}, "antithetic": {"antithetic": True},
                      "stratified_alpha": {"stratified_alpha": True},
                      "antithetic+stratified_alpha": {"antithetic": True, "stratified_alpha": True}},
    "ig": {"default": {}, "riemann_trapezoid": {"method": "riemann_trapezoid"},
           "riemann_middle": {"method": "riemann_middle"}},
}
DEFAULT_LABEL = {"rise": "bernoulli (paper)", "gradient_shap": "i.i.d. (paper)", "ig": "gausslegendre (paper)"}
TARGET_NAMES = ("label_free", "contrastive_label_free", "corpus", "cocoa")


@dataclasses.dataclass
class Bench:
    """One model with its explicands, stacked targets and budget."""

    name: str
    note: str
    encode: callable  # (params, (N, H, W, C)) -> (N, D)
    params: object
    xs: jax.Array  # (E, H, W, C)
    target: targets.Target  # directions (E, 4, D)
    reference: dict  # method -> pass count of the reference
    full_ladder: bool
    grad_batch: int | None
    insdel_steps: int
    skip: tuple = ()  # estimators not run on this model (CPU budget)
    flops: dict = dataclasses.field(default_factory=dict)  # _pass_flops by kind, computed once


# ----------------------------------------------------------------------------- models


def _digit_images(size: int, channels: int, n_explicands: int, seed: int = 0):
    """(explicands, corpus images, foil images): test 3s, 100 train 3s, 200 random train images."""
    data = load_digits_split(seed=0)
    rng = np.random.default_rng(seed)

    def fit(images):
        images = jnp.asarray(images, jnp.float32)
        if images.shape[1] != size:
            images = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), "bilinear")
        return jnp.repeat(images, channels, axis=-1) if images.shape[-1] != channels else images

    xs = fit(data.x_test[data.y_test == 3][:n_explicands])
    corpus = fit(data.x_train[data.y_train == 3][:100])
    foil = fit(data.x_train[rng.choice(len(data.x_train), 200, replace=False)])
    return xs, corpus, foil


def _stacked_targets(encode, params, xs, corpus_images, foil_images) -> targets.Target:
    enc = jax.jit(encode)
    corpus, foil, own = enc(params, corpus_images), enc(params, foil_images), enc(params, xs)
    return targets.stack([targets.label_free(own), targets.contrastive_label_free(own, foil),
                          targets.corpus(corpus), targets.cocoa(corpus, foil)])


def build_benches(quick: bool, only: list[str] | None, smoke: bool = False) -> list[Bench]:
    benches = []
    if only is None or "digits" in only:
        model = models.load("digits")
        xs, corpus, foil = _digit_images(32, 1, 1 if quick else 2)
        # --smoke (the test suite's run: every section, no quality claim): references at twice the
        # estimates' counts instead of 4x / 6x (a reference's passes are most of --smoke's numerics).
        ref = {"rise": 2000, "gradient_shap": 64, "ig": 64} if quick else \
              {"rise": 10000, "gradient_shap": 500, "ig": 256}
        if smoke:
            ref = {method: 2 * default_passes(method, True) for method in ref}
        benches.append(Bench("digits", "embedded SimCLR digits encoder (trained weights), 32x32x1",
                             model.encode_fn, model.params, xs,
                             _stacked_targets(model.encode_fn, model.params, xs, corpus, foil),
                             ref, True, None if quick else 100, 20))
    if quick:
        return benches
    if only is None or "clip" in only:
        benches.append(_clip_bench())
    if only is None or "resnet18" in only:
        module, variables = M.init_flax(M.SPECS["resnet18_cifar"], seed=0)
        encode = lambda params, xb: module.apply(params, xb)
        xs, corpus, foil = _digit_images(32, 3, 1)
        benches.append(Bench("resnet18", "CIFAR ResNet-18 (random weights, BatchNorm statistics randomised), "
                             "32x32x3 digit images", encode, variables, xs,
                             _stacked_targets(encode, variables, xs, corpus, foil),
                             {"rise": 5000, "gradient_shap": 100, "ig": 64}, False, 25, 20,
                             skip=("stratified", "centered+stratified")))
    return benches


def _clip_bench() -> Bench:
    """The CLIP ViT image tower, reduced so it runs on 2 CPU cores (random weights)."""
    from cocoa_jax.models.clip import ClipConfig, VisionTransformer
    config = ClipConfig(embed_dim=128, image_resolution=64, vision_layers=2, vision_width=128,
                        vision_patch_size=8)
    module = VisionTransformer(config)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    encode = lambda params, xb: module.apply(params, xb)
    xs, corpus, foil = _digit_images(64, 3, 1)
    return Bench("clip_vit_reduced", "CLIP ViT image tower, reduced for CPU: 64 px, patch 8 "
                         "(65 tokens), width 128, 2 layers, 2 heads, embed 128 (random weights)",
                         encode, variables, xs, _stacked_targets(encode, variables, xs, corpus, foil),
                         {"rise": 10000, "gradient_shap": 200, "ig": 128}, True, 50, 20)


# ----------------------------------------------------------------------------- programs


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def default_passes(method: str, quick: bool) -> int:
    """The paper's count (--quick: RISE at 1/10 of it, the gradient methods at 1/5)."""
    return DEFAULT_PASSES[method] // ((10 if method == "rise" else 5) if quick else 1)


def ladder(method: str, estimator: str, full: bool, quick: bool, smoke: bool = False) -> list[int]:
    """Pass counts at which an estimator is run (even: antithetic samples come in pairs); --smoke:
    the default's count only, for every estimator (one program each)."""
    d = default_passes(method, quick)
    if smoke:
        return [d]
    if quick:
        fractions = (1 / 3, 1.0) if estimator == "default" else (1 / 3,)
    elif estimator != "default":
        fractions = FRACTIONS_OPTION
    else:
        fractions = FRACTIONS_DEFAULT if full else FRACTIONS_DEFAULT_REDUCED
    return sorted({_even(d * f) for f in fractions})


def _attribute(bench: Bench, method: str, n: int, options: dict):
    """jitted (params, xs (E,...), keys (E,), target) -> (E, 4, H, W[, C])."""
    name = {"ig": "integrated_gradients"}.get(method, method)  # the method table's name
    counts = {"rise": "n_masks", "gradient_shap": "n_samples", "integrated_gradients": "n_steps"}
    batch_size = 100 if method == "rise" else bench.grad_batch

    def one(params, x, key, target):
        return explicand_program.attribute_one(lambda xb: bench.encode(params, xb), target, name, x,
                                               explicand_program.PAPER_BASELINE(x), key, batch_size=batch_size,
                                               **{counts[name]: n}, **options)
    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


def _insdel(bench: Bench):
    """jitted (params, xs, attrs (E, 4, ...), target) -> AUCs (E, 4, 2): insertion, deletion of each
    target's map under that target's own score."""
    def one(params, x, attr, target):
        encode = lambda xb: bench.encode(params, xb)
        _, aucs = metrics.insertion_deletion(encode, target, x, baselines.gaussian_blur(x), attr,
                                             n_steps=bench.insdel_steps, batch_size=84)
        k = jnp.arange(aucs.shape[0])
        return aucs[k, :, k]  # (K, 2): attribution k measured by target k
    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


def _run(program, *args):
    """(result, seconds of one call, compile excluded)."""
    compiled = program.lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def _pass_flops(bench: Bench, method: str) -> float:
    """XLA cost-analysis FLOPs of one pass: a forward (RISE) or a forward + 4 backward (gradients:
    GradientSHAP's pass and IG's are the same program, compiled once)."""
    kind = "forward" if method == "rise" else "gradient"
    if kind not in bench.flops:
        bench.flops[kind] = _program_flops(bench, method)
    return bench.flops[kind]


def _program_flops(bench: Bench, method: str) -> float:
    x = bench.xs[:1]
    target = jax.tree_util.tree_map(lambda a: a[0], bench.target)
    f = lambda p, xb: target(bench.encode(p, xb))
    fn = f if method == "rise" else jax.jacrev(lambda p, xb: f(p, xb)[0], argnums=1)
    cost = jax.jit(fn).lower(bench.params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


# ----------------------------------------------------------------------------- quality


def quality(attrs: np.ndarray, ref: np.ndarray, image_shape) -> dict:
    """Mean over explicands x targets of Spearman and top-10% overlap with the reference."""
    scores = lambda a: np.asarray(metrics.feature_scores(jnp.asarray(a), image_shape))
    rhos, overlaps = [], []
    for a, r in zip(attrs.reshape((-1,) + attrs.shape[2:]), ref.reshape((-1,) + ref.shape[2:])):
        sa, sr = scores(a), scores(r)
        rhos.append(scipy.stats.spearmanr(sa, sr).statistic)
        top = max(1, int(round(0.1 * sa.size)))
        overlaps.append(len(np.intersect1d(np.argsort(-sa)[:top], np.argsort(-sr)[:top])) / top)
    return {"spearman": float(np.mean(rhos)), "top10": float(np.mean(overlaps))}


def passes_to_reach(points: list[tuple[int, float]], goal: float) -> float | None:
    """Smallest pass count whose Spearman reaches `goal`, interpolated linearly in log(passes)
    between ladder points; None if no point reaches it."""
    points = sorted(points)
    for i, (n, q) in enumerate(points):
        if q >= goal:
            if i == 0:
                return float(n)
            n0, q0 = points[i - 1]
            t = (goal - q0) / (q - q0)
            return float(np.exp(np.log(n0) + t * (np.log(n) - np.log(n0))))
    return None


def measure_bench(bench: Bench, quick: bool, peak: float, log, smoke: bool = False) -> dict:
    image_shape = tuple(bench.xs.shape[1:])
    keys = jax.random.split(jax.random.key(0), bench.xs.shape[0])
    ref_keys = jax.random.split(jax.random.key(12345), bench.xs.shape[0])  # independent of the estimates
    insdel = _insdel(bench)
    result = {"model": bench.name, "note": bench.note, "explicands": int(bench.xs.shape[0]),
              "reference": bench.reference, "methods": {}}
    for method, estimators in ESTIMATORS.items():
        ref_options = {"rise": {"centered": True}, "gradient_shap": {"antithetic": True, "stratified_alpha": True},
                       "ig": {"method": "riemann_trapezoid"}}[method]
        ref, ref_s = _run(_attribute(bench, method, bench.reference[method], ref_options),
                          bench.params, bench.xs, ref_keys, bench.target)
        ref = np.asarray(ref)
        ref_auc = np.asarray(insdel(bench.params, bench.xs, jnp.asarray(ref), bench.target))
        log(f"  {bench.name} {method}: reference {bench.reference[method]} passes "
            f"({ref_options}) in {ref_s:.1f}s")
        rows = []
        chosen = [(n, o) for n, o in estimators.items() if n not in bench.skip]
        for name, options in chosen[: 2 if quick else None]:
            for n in ladder(method, name, bench.full_ladder, quick, smoke):
                attrs, seconds = _run(_attribute(bench, method, n, options), bench.params, bench.xs, keys, bench.target)
                attrs = np.asarray(attrs)
                auc = np.asarray(insdel(bench.params, bench.xs, jnp.asarray(attrs), bench.target))
                q = quality(attrs, ref, image_shape)
                diff = np.abs(auc - ref_auc).mean(axis=(0, 1))
                rate = bench.xs.shape[0] * n / seconds
                rows.append({"estimator": name, "passes": n, **q, "d_ins": float(diff[0]), "d_del": float(diff[1]),
                             "passes_per_s": rate, "seconds": seconds})
                log(f"    {name:>28} {n:6d} passes: spearman {q['spearman']:.3f} top10 {q['top10']:.3f} "
                    f"|dAUC| ins {diff[0]:.4f} del {diff[1]:.4f}  {rate:.1f} passes/s")
        result["methods"][method] = {"rows": rows, "summary": summarize(method, rows, bench, peak, quick)}
    return result


def summarize(method: str, rows: list[dict], bench: Bench, peak: float, quick: bool) -> list[dict]:
    d = default_passes(method, quick)
    default_rows = {r["passes"]: r for r in rows if r["estimator"] == "default"}
    goal = default_rows[d]["spearman"]
    third = _even(d / 3)
    flops = _pass_flops(bench, method)
    out = []
    for name in dict.fromkeys(r["estimator"] for r in rows):
        mine = [r for r in rows if r["estimator"] == name]
        # The default needs the paper's count by definition (its curve is noisy, not monotone).
        needed = float(d) if name == "default" else passes_to_reach([(r["passes"], r["spearman"]) for r in mine], goal)
        at_third = next((r for r in mine if r["passes"] == third), None)
        # Rates from the largest count both ran (the longest call: least timing noise).
        common = max(r["passes"] for r in mine if r["passes"] in default_rows)
        rate = next(r["passes_per_s"] for r in mine if r["passes"] == common)
        rate_ratio = rate / default_rows[common]["passes_per_s"]
        out.append({
            "estimator": name, "goal_spearman": goal, "passes_needed": needed,
            "at_first_point": needed is not None and needed == min(r["passes"] for r in mine)
                              and name != "default",
            "max_passes_tried": max(r["passes"] for r in mine),
            "passes_speedup": d / needed if needed else None,
            "rate": rate, "rate_ratio": rate_ratio,
            "speedup": d / needed * rate_ratio if needed else None,
            "third": at_third, "roofline": flops * rate / (peak * 1e9) if peak else float("nan"),
        })
    return out


# ----------------------------------------------------------------------------- report


def _fmt_needed(s: dict, method: str) -> str:
    if s["passes_needed"] is None:
        return f"not reached at {s['max_passes_tried']}"
    if s.get("at_first_point"):  # already better at the smallest count tried
        return f"<= {s['passes_needed']:.0f}"
    return f"{s['passes_needed']:.0f}"


def render(out: dict) -> str:
    env = out["environment"]
    lines = ["# Fewer encoder passes: quality vs passes of the opt-in estimators", "",
             f"Command: `{env['command']}`. Date: {env['date']}. Machine: {env['machine']}. "
             f"Versions: {env['versions']}. Matmul peak measured in this run: {out['peak_gflops']:.1f} GFLOP/s. "
             f"Total wall time {out['wall_s']:.0f} s.", "",
             "Quality is measured against a high-count reference of the same expectation (RISE: centred "
             "estimator; GradientSHAP: antithetic + stratified alpha; IG: trapezoid rule; each with an "
             "independent key), per explicand x target (4 targets stacked), then averaged. A noisy reference "
             "lowers every estimator's correlation alike, so the pass counts where curves cross are what "
             "matters. \"passes to match\" = passes an estimator needs for the paper default's mean Spearman "
             "at the paper's count (RISE 5000, GradientSHAP 50, IG 50 Gauss-Legendre steps), interpolated in "
             "log(passes); speed-up = passes ratio x passes/s ratio (both measured here, compile excluded). "
             "The passes/s ratios swing by up to 2x between calls on this shared machine (load average "
             "about 10 on 2 cores during the run); every option does the same encoder work per pass, so "
             "the passes ratio is the reliable speed-up. For the same reason the matmul peak measured "
             "here is depressed and the roofline column exceeds 100% in places: treat it as relative "
             "only (benchmarks/results/RESULTS.md has roofline fractions from a quiet machine). "
             "Insertion/deletion AUCs use "
             f"{out['benches'][0]['insdel_steps'] if out['benches'] else 20} steps.", ""]
    for b in out["benches"]:
        lines += [f"## {b['model']}: {b['note']}", "",
                  f"{b['explicands']} explicand(s) x 4 targets; reference passes {b['reference']}.", "",
                  "| method | estimator | passes to match default | speed-up (passes) | passes/s | passes/s ratio "
                  "| end-to-end speed-up | roofline | at 1/3 passes: Spearman | top-10% | abs dAUC ins | abs dAUC del |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, m in b["methods"].items():
            for s in m["summary"]:
                t = s["third"] or {}
                label = DEFAULT_LABEL[method] if s["estimator"] == "default" else s["estimator"]
                speed = f"{s['passes_speedup']:.1f}x" if s["passes_speedup"] else "-"
                if s.get("at_first_point") and s["passes_speedup"]:
                    speed = ">= " + speed
                e2e = f"**{s['speedup']:.1f}x**" if s["speedup"] and s["speedup"] >= 3 else (
                    f"{s['speedup']:.1f}x" if s["speedup"] else "-")
                lines.append(
                    f"| {method} | {label} | {_fmt_needed(s, method)} | {speed} | {s['rate']:.1f} | "
                    f"{s['rate_ratio']:.2f} | {e2e} | {s['roofline']:.0%} | {t.get('spearman', float('nan')):.3f} | "
                    f"{t.get('top10', float('nan')):.3f} | {t.get('d_ins', float('nan')):.4f} | "
                    f"{t.get('d_del', float('nan')):.4f} |")
        lines += ["", "All points (mean Spearman / top-10% overlap / |dAUC| insertion, deletion):", "",
                  "| method | estimator | passes | Spearman | top-10% | abs dAUC ins | abs dAUC del | passes/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for method, m in b["methods"].items():
            for r in m["rows"]:
                lines.append(f"| {method} | {r['estimator']} | {r['passes']} | {r['spearman']:.3f} | {r['top10']:.3f} | "
                             f"{r['d_ins']:.4f} | {r['d_del']:.4f} | {r['passes_per_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def plot(out: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    benches = out["benches"]
    fig, axes = plt.subplots(len(benches), 3, figsize=(13, 3.4 * len(benches)), squeeze=False)
    for row, b in zip(axes, benches):
        for ax, (method, m) in zip(row, b["methods"].items()):
            for name in dict.fromkeys(r["estimator"] for r in m["rows"]):
                pts = sorted((r["passes"], r["spearman"]) for r in m["rows"] if r["estimator"] == name)
                ax.plot(*zip(*pts), marker="o", label=DEFAULT_LABEL[method] if name == "default" else name)
            ax.axhline(m["summary"][0]["goal_spearman"], color="grey", ls="--", lw=0.8)
            ax.axvline(DEFAULT_PASSES[method] / 3, color="grey", ls=":", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(f"{b['model']}: {method}")
            ax.set_xlabel("encoder passes per explicand")
            ax.set_ylabel("Spearman vs reference")
            ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=80), binary=True)
    plt.close(fig)


def _atomic_write(path: str, write, binary: bool = False) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_outputs(out: dict, out_path: str) -> None:
    _atomic_write(out_path, lambda fh: fh.write(render(out)))
    _atomic_write(os.path.splitext(out_path)[0] + ".json", lambda fh: json.dump(out, fh, indent=1, default=float))
    plot(out, os.path.splitext(out_path)[0] + ".png")


def environment(command: str) -> dict:
    import flax
    cpu = cpu_name()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{cpu}, {os.cpu_count()} logical cores, JAX backend {jax.default_backend()}",
            "versions": f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
                        f"numpy {np.__version__}", "command": command}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites.estimators", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: digits only, 1 explicand, tiny counts")
    parser.add_argument("--smoke", action="store_true",
                        help="--quick with one pass count per estimator, the default's (the test suite's run)")
    parser.add_argument("--out", default=None, help="Markdown output (default benchmarks/results/RESULTS_estimators.md; "
                                                    "with --quick runs/estimators/RESULTS_quick.md)")
    parser.add_argument("--models", nargs="+", choices=["digits", "resnet18", "clip"], default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--render", metavar="JSON", help="only re-render the Markdown and plot of a saved run")
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    if args.render:
        with open(args.render) as fh:
            out = json.load(fh)
        for b in out["benches"]:
            for m in b["methods"].values():
                for s in m["summary"]:
                    if s["estimator"] == "default":  # as summarize() now does
                        d = max(r["passes"] for r in m["rows"] if r["estimator"] == "default")
                        s.update(passes_needed=float(d), passes_speedup=1.0, speedup=1.0)
                    mine = [r["passes"] for r in m["rows"] if r["estimator"] == s["estimator"]]
                    s["at_first_point"] = (s["passes_needed"] is not None and s["passes_needed"] == min(mine)
                                           and s["estimator"] != "default")
        _write_outputs(out, os.path.splitext(args.render)[0] + ".md")
        return out
    out_path = args.out or (os.path.join("runs", "estimators", "RESULTS_quick.md") if args.quick
                            else os.path.join(RESULTS, "RESULTS_estimators.md"))
    if os.path.exists(out_path) and not args.overwrite:
        print(f"python -m benchmarks.suites.estimators: error: {out_path} exists (pass --overwrite)", file=sys.stderr)
        raise SystemExit(2)
    start = time.perf_counter()
    log = lambda msg: print(msg, flush=True)
    peak = measure_peak(512 if args.quick else 2048, 1 if args.quick else 3)["peak"]
    log(f"matmul peak {peak:.1f} GFLOP/s")
    command = "python -m benchmarks.suites.estimators" + (" --smoke" if args.smoke else " --quick" if args.quick else "") + (
        f" --models {' '.join(args.models)}" if args.models else "")
    out = {"environment": environment(command), "peak_gflops": peak, "benches": []}
    for bench in build_benches(args.quick, args.models, args.smoke):
        log(f"{bench.name}: {bench.note}")
        res = measure_bench(bench, args.quick, peak, log, args.smoke)
        res["insdel_steps"] = bench.insdel_steps
        out["benches"].append(res)
        out["wall_s"] = time.perf_counter() - start
        _write_outputs(out, out_path)  # after each model: a killed run keeps what it measured
        for method, m in res["methods"].items():
            for s in m["summary"]:
                log(f"  {bench.name} {method} {s['estimator']:>28}: passes to match default "
                    f"{_fmt_needed(s, method)}, passes/s {s['rate']:.1f} (ratio vs default {s['rate_ratio']:.2f}), "
                    f"end-to-end speed-up {s['speedup'] if s['speedup'] is None else round(s['speedup'], 2)}, "
                    f"roofline {s['roofline']:.0%}")
    log(f"wrote {out_path} (+ .json, .png) in {out['wall_s']:.0f}s")
    return out


if __name__ == "__main__":
    main()
