"""Insertion/deletion AUCs at fewer evaluation steps: `python -m benchmarks eval_steps [--quick]`.

On the embedded digits encoder and the sweep's own evaluation (`cocoa_jax.sweep`: the digits
test split, the reduced protocol's corpus / foil sizes, the linear probe the sweep trains, the
Gaussian-blur baseline and every measure of `metrics.MEASURE_NAMES`), the maps of IG,
GradientSHAP and RISE under the `fast` estimator profile are computed ONCE for `--classes` x
`--per-class` explicands (seed 0) and the 4 targets; then their insertion and deletion curves
are taken at a many-step reference (`--reference`, default 200 steps) and at the paper's 50
and fewer steps (`--steps`). Each curve is integrated over the fraction of pixels removed by
the sweep's trapezoid rule (`metrics.auc`) and by composite Simpson (`simpson_auc`: piecewise
quadratic through pairs of intervals, exact for quadratics on any grid and for cubics on a
uniform one; a curve of a smooth measure gains an order of accuracy, a kinked one does not).

Per (measure, kind, steps, rule): mean and max over cells (method x target, each the mean over
explicands) and over explicands of |AUC - reference AUC| (the reference: the reference step
count under the same rule); whether every method ranking (by mean AUC, per target, measure
and kind) equals the reference's; whether every cell's mean AUC lies inside the 50-step
trapezoid's 95% CI over explicands (Student t, as `cocoa-jax report`). Writes
benchmarks/results/RESULTS_eval_steps.md and a .json beside it (with --quick:
runs/eval_steps/RESULTS_quick.md).
"""
from __future__ import annotations

import argparse
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
from benchmarks.harness.machine import cpu_name
from cocoa_jax import metrics
from cocoa_jax.sweep import config as config_mod
from cocoa_jax.sweep import inputs
from cocoa_jax.sweep.programs import SweepPrograms, local_mesh
from cocoa_jax.sweep.runner import UnitRunner, get_probe
from cocoa_jax.sweep.store import RunStore

METHODS = ("integrated_gradients", "gradient_shap", "rise")
RULES = ("trapezoid", "simpson")
PAPER_STEPS = 50


# ----------------------------------------------------------------------------- quadrature


def simpson_auc(curves: np.ndarray, fractions) -> np.ndarray:
    """Composite Simpson area under curves over their step axis, on any increasing grid.

    Pairs of intervals (h0, h1) integrate the quadratic through their 3 points; an odd interval
    count integrates the last interval under the quadratic through the last 3 points. Exact for
    quadratics on any grid, for cubics on a uniform grid with an even interval count.

    Args:
      curves: (..., S + 1, M) values at each step (the step axis is -2, as `metrics.auc`).
      fractions: (S + 1,) strictly increasing x-coordinates, S >= 2.
    Returns: (..., M) float64.
    """
    x = np.asarray(fractions, np.float64)
    y = np.asarray(curves, np.float64)
    if x.ndim != 1 or x.shape[0] < 3:
        raise ValueError(f"`fractions` must be (S + 1,) with S >= 2, got shape {x.shape}")
    if y.ndim < 2 or y.shape[-2] != x.shape[0]:
        raise ValueError(f"`curves` must have shape (..., {x.shape[0]}, M), got {y.shape}")
    h = np.diff(x)
    if np.any(h <= 0):
        raise ValueError("`fractions` must be strictly increasing")
    n = h.shape[0]
    even = n - (n % 2)
    h0, h1 = h[0:even:2], h[1:even:2]
    f0, f1, f2 = y[..., 0:even:2, :], y[..., 1:even:2, :], y[..., 2:even + 1:2, :]
    c0 = (2.0 - h1 / h0)[:, None]
    c1 = ((h0 + h1) ** 2 / (h0 * h1))[:, None]
    c2 = (2.0 - h0 / h1)[:, None]
    total = np.sum(((h0 + h1) / 6.0)[:, None] * (c0 * f0 + c1 * f1 + c2 * f2), axis=-2)
    if n % 2:  # the last interval under the quadratic through the last 3 points
        a, b = h[-2], h[-1]
        total = total + (y[..., -1, :] * (2 * b * b + 3 * a * b) / (6 * (a + b))
                         + y[..., -2, :] * (b * b + 3 * a * b) / (6 * a)
                         - y[..., -3, :] * b ** 3 / (6 * a * (a + b)))
    return total


def areas(curves: np.ndarray, fractions) -> dict:
    """{rule: (..., M) float64 AUCs} of curves (..., S + 1, M) under each rule of RULES."""
    # the sweep's own rule, in its own precision (float32)
    return {"trapezoid": np.asarray(metrics.auc(jnp.asarray(curves, jnp.float32), fractions), np.float64),
            "simpson": simpson_auc(curves, fractions)}


def t_interval(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the 95% Student-t confidence interval of the mean over `axis`."""
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    half = scipy.stats.t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean - half, mean + half


# ----------------------------------------------------------------------------- the sweep's inputs


def study_config(quick: bool, classes, per_class: int) -> config_mod.SweepConfig:
    """The reduced digits protocol, `fast` estimators (paper counts where fast changes nothing)."""
    base = config_mod.digits_reduced()
    methods = {m: {} for m in METHODS}
    if quick:  # two methods (a ranking), tiny counts: the test suite's run
        methods = {"integrated_gradients": {"n_steps": 4}, "rise": {"n_masks": 32}}
    return base.replace(classes=tuple(classes), explicands_per_class=per_class, seeds=(0,), methods=methods,
                        estimators="fast", foil_size=50 if quick else base.foil_size,
                        probe_train_size=100 if quick else None, probe_test_size=50 if quick else None)


def compute_curves(config, steps_list, log) -> dict:
    """{"curves": {steps: (E, 3 methods, K, 2, S+1, M)}, "fractions": {steps: (S+1,)}, ...}: maps once,
    curves at every step count with the sweep's own evaluation program."""
    mesh = local_mesh(1)
    spec = inputs.resolve_encoder(config)
    config.check_method_values(tuple(spec.input_shape))
    corpus_source, explicand_source = inputs.resolve_datasets(config, spec)
    classes = inputs.classes_of(config, corpus_source)
    programs = SweepPrograms(spec, config, mesh)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp, dict(config.to_dict()), "eval-steps-study")
        encode = lambda images: programs.encode(programs.trained, images)
        probe, accuracy = get_probe(config, store, corpus_source, explicand_source, encode)
    runner = UnitRunner(config, programs, corpus_source, explicand_source, probe, classes)
    keys = ("xs", "directions", "keys", "ccs", "majority", "pred", "reps")
    maps, batch = {}, None
    t0 = time.perf_counter()
    methods = tuple(config.methods)  # the explaining methods (no random reference map)
    for method in methods:
        parts = [runner._unit_inputs(config_mod.Unit(0, c, method)) for c in classes]
        batch = {k: (jnp.concatenate([p[k] for p in parts]) if k == "keys" else np.concatenate([p[k] for p in parts]))
                 for k in keys}
        maps[method] = jax.block_until_ready(programs.attribute(programs.trained, method, batch["xs"],
                                                                batch["directions"], batch["keys"]))
        log(f"maps {method}: {tuple(maps[method].shape)}")
    attribution_s = time.perf_counter() - t0
    # The methods' maps as one batch of 3E explicands (one evaluation program per step count): a
    # single-channel map (E, K, H, W, 1) ranks pixels as its (E, K, H, W) squeeze does.
    e = batch["xs"].shape[0]
    stacked = np.concatenate([np.asarray(m[..., 0] if m.ndim == 5 and m.shape[-1] == 1 else m) for m in
                              (maps[method] for method in methods)])
    repeat = {k: np.concatenate([np.asarray(batch[k])] * len(methods))
              for k in ("xs", "ccs", "majority", "pred", "reps")}
    curves, fractions, seconds = {}, {}, {}
    for steps in steps_list:
        at = SweepPrograms(spec, config.replace(eval_steps=steps), mesh)
        t0 = time.perf_counter()
        c, _, _ = at.evaluate(programs.trained, probe, repeat["xs"], stacked, repeat["ccs"], repeat["majority"],
                              repeat["pred"], repeat["reps"])
        c = np.asarray(c, np.float64)
        curves[steps] = np.moveaxis(c.reshape((len(methods), e) + c.shape[1:]), 0, 1)  # (E, methods, K, 2, S+1, M)
        fractions[steps] = np.asarray(at.eval_fractions(), np.float64)
        seconds[steps] = time.perf_counter() - t0
        log(f"curves at {steps} steps: {seconds[steps]:.1f} s ({len(methods)} methods, compile included)")
    return {"curves": curves, "fractions": fractions, "eval_seconds": seconds, "attribution_seconds": attribution_s,
            "probe_accuracy": accuracy, "methods": list(methods), "targets": [t for t, _ in config.target_columns()],
            "n_explicands": int(batch["xs"].shape[0]), "image_shape": list(spec.input_shape)}


# ----------------------------------------------------------------------------- the comparison


def ranking(cell_means: np.ndarray) -> np.ndarray:
    """Method order (descending mean AUC) per (target, measure): (methods, K, M) -> (K, M, methods)."""
    return np.argsort(-np.moveaxis(cell_means, 0, -1), axis=-1, kind="stable")


def compare(data: dict, reference: int, steps_list, ci_steps: int = PAPER_STEPS) -> list[dict]:
    """One row per (measure, kind, steps, rule): errors against the reference, ranking, and the
    cells inside the `ci_steps` trapezoid's 95% CI."""
    aucs = {s: areas(data["curves"][s], data["fractions"][s]) for s in data["curves"]}  # rule -> (E, m, K, 2, M)
    paper = aucs[ci_steps]["trapezoid"]
    low, high = t_interval(paper)  # (m, K, 2, M)
    rows = []
    for mi, measure in enumerate(metrics.MEASURE_NAMES):
        for ki, kind in enumerate(metrics.KINDS):
            for steps in steps_list:
                for rule in RULES:
                    a = aucs[steps][rule][..., ki, mi]  # (E, methods, K)
                    ref = aucs[reference][rule][..., ki, mi]
                    per_explicand = np.abs(a - ref)
                    cell = np.abs(a.mean(0) - ref.mean(0))
                    inside = (a.mean(0) >= low[..., ki, mi]) & (a.mean(0) <= high[..., ki, mi])
                    same = np.all(ranking(a.mean(0)) == ranking(ref.mean(0)), axis=-1)  # (K,)
                    rows.append(dict(measure=measure, kind=kind, steps=int(steps), rule=rule,
                                     mean_abs_err=float(per_explicand.mean()), max_abs_err=float(per_explicand.max()),
                                     cell_mean_abs_err=float(cell.mean()), cell_max_abs_err=float(cell.max()),
                                     ranking_same=bool(np.all(same)), rankings_changed=int(np.sum(~same)),
                                     inside_ci=bool(np.all(inside)), cells_outside=int(np.sum(~inside)),
                                     ci_half_min=float(np.min(high[..., ki, mi] - low[..., ki, mi]) / 2),
                                     cells=int(inside.size)))
    return rows


def decide(rows: list[dict], steps_list, ci_steps: int = PAPER_STEPS) -> dict:
    """Per rule, the smallest step count that qualifies (every measure x kind keeps every cell inside
    the `ci_steps` CI and every ranking) together with every larger count compared (a count that
    passes below a failing one is luck, not a margin); "chosen": the cheapest (steps, rule) below
    `ci_steps`, None when none qualifies. "passing": the counts that qualify on their own."""
    verdict, passing = {}, {}
    for rule in RULES:
        ok = {s for s in steps_list if all(r["inside_ci"] and r["ranking_same"] for r in rows
                                           if r["steps"] == s and r["rule"] == rule)}
        passing[rule] = sorted(ok)
        upward = [s for s in sorted(steps_list) if all(t in ok for t in steps_list if t >= s)]
        verdict[rule] = min(upward) if upward else None
    # ties go to the earlier rule of RULES (the trapezoid: the sweep's rule, nothing to change)
    below = [(s, RULES.index(rule), rule) for rule, s in verdict.items() if s is not None and s < ci_steps]
    best = min(below)[::2] if below else None
    return {"smallest_qualifying": verdict, "passing": passing,
            "chosen": None if best is None else {"steps": best[0], "rule": best[1]}}


# ----------------------------------------------------------------------------- output


def render(out: dict) -> str:
    env = out["environment"]
    lines = [
        "# Insertion/deletion AUCs at fewer evaluation steps (digits encoder)", "",
        f"{env['date']}; {env['machine']}; load average {env['load']} at start (machine shared by other jobs: "
        "times are indicative only). " + env["versions"], "",
        f"Command: `{env['command']}`", "",
        f"{out['n_explicands']} explicands (digits test split, seed 0, classes {out['classes']}), methods "
        f"{', '.join(out['methods'])} under the `fast` profile, targets {', '.join(out['targets'])}, the sweep's "
        f"evaluation (blur baseline, probe accuracy {out['probe_accuracy']:.3f}). Reference: "
        f"{out['reference']} steps under the same rule. Errors are |AUC - reference AUC| in the measure's units: "
        "'expl.' over every explicand x method x target, 'cell' over the cells' means (method x target, mean "
        f"over explicands). 'CI': cells whose mean lies outside the {out['ci_steps']}-step trapezoid's 95% CI "
        "over explicands. 'rank': (target) rankings of the methods that differ from the reference's.", "",
        "'CI half': the smallest half-width of a cell's CI (the margin the errors are measured against).", "",
        "| measure | kind | steps | rule | expl. mean | expl. max | cell mean | cell max | rank changed | CI out "
        "| CI half |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        lines.append(f"| {r['measure']} | {r['kind']} | {r['steps']} | {r['rule']} | {r['mean_abs_err']:.2e} | "
                     f"{r['max_abs_err']:.2e} | {r['cell_mean_abs_err']:.2e} | {r['cell_max_abs_err']:.2e} | "
                     f"{r['rankings_changed']}/{len(out['targets'])} | {r['cells_outside']}/{r['cells']} | "
                     f"{r.get('ci_half_min', float('nan')):.2e} |")
    d = out["decision"]
    lines += ["", f"Evaluation seconds per step count ({len(out['methods'])} methods, compile included): "
              + ", ".join(f"{s}: {t:.1f}" for s, t in out["eval_seconds"].items()) + ".", "",
              f"Step counts with every cell inside the {out['ci_steps']}-step CI and every ranking unchanged, "
              "per rule: " + "; ".join(f"{k}: {v}" for k, v in d["passing"].items()) + ". Smallest such count "
              "with every larger count compared also passing: "
              + ", ".join(f"{k}: {v}" for k, v in d["smallest_qualifying"].items()) + "."]
    lines.append("Decision: " + (f"no step count below {out['ci_steps']} qualifies." if d["chosen"] is None else
                                 f"{d['chosen']['steps']} steps, {d['chosen']['rule']}."))
    return "\n".join(lines) + "\n"


def _atomic_write(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def environment(command: str) -> dict:
    import flax
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{cpu_name()}, {os.cpu_count()} logical cores, JAX backend {jax.default_backend()}",
            "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
            "versions": f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}",
            "command": command}


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks eval_steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 explicands, tiny counts, 4 steps, CI at 8, reference 16 (no claim)")
    parser.add_argument("--steps", type=_int_list, default=None, help="step counts compared (default 8,12,16,24,32,50)")
    parser.add_argument("--reference", type=int, default=None, help="reference step count (default 200)")
    parser.add_argument("--classes", type=_int_list, default=None, help="explicand classes (default 0..9)")
    parser.add_argument("--per-class", type=int, default=None, help="explicands per class (default 2)")
    parser.add_argument("--render", metavar="JSON", help="only re-decide and re-render a saved run's Markdown")
    parser.add_argument("--out", default=None, help="Markdown output (default benchmarks/results/RESULTS_eval_steps.md;"
                                                    " with --quick runs/eval_steps/RESULTS_quick.md)")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as fh:
            out = json.load(fh)
        out.setdefault("ci_steps", PAPER_STEPS)
        out["decision"] = decide(out["rows"], out["steps"], out["ci_steps"])
        _atomic_write(os.path.splitext(args.render)[0] + ".md", render(out))
        _atomic_write(args.render, json.dumps(out, indent=1))
        return out
    steps = args.steps or ([4] if args.quick else [8, 12, 16, 24, 32])
    ci_steps = 8 if args.quick else PAPER_STEPS  # the setting whose CI every cell must stay inside
    reference = args.reference or (16 if args.quick else 200)
    classes = args.classes or ([0] if args.quick else list(range(10)))
    per_class = args.per_class or 2
    for name, value, least in (("--reference", reference, 2), ("--per-class", per_class, 1),
                               *(("--steps", s, 2) for s in steps)):
        if value < least:
            print(f"python -m benchmarks eval_steps: error: {name} must be >= {least}, got {value}", file=sys.stderr)
            raise SystemExit(2)
    if len(classes) * per_class < 2:
        print("python -m benchmarks eval_steps: error: needs at least 2 explicands (a CI)", file=sys.stderr)
        raise SystemExit(2)
    steps = sorted(set(steps) - {ci_steps, reference}) + [ci_steps]
    out_path = args.out or (os.path.join("runs", "eval_steps", "RESULTS_quick.md") if args.quick
                            else os.path.join(RESULTS, "RESULTS_eval_steps.md"))
    env = environment("python -m benchmarks eval_steps " + " ".join(argv if argv is not None else sys.argv[1:]))
    log = lambda text: print(text, file=sys.stderr, flush=True)
    config = study_config(args.quick, classes, per_class)
    data = compute_curves(config, steps + [reference], log)
    rows = compare(data, reference, steps, ci_steps)
    out = {"environment": env, "classes": classes, "methods": data["methods"], "reference": reference, "steps": steps,
           "ci_steps": ci_steps, "targets": data["targets"],
           "n_explicands": data["n_explicands"], "probe_accuracy": float(data["probe_accuracy"]),
           "attribution_seconds": data["attribution_seconds"],
           "eval_seconds": {str(s): t for s, t in data["eval_seconds"].items()},
           "rows": rows, "decision": decide(rows, steps, ci_steps)}
    _atomic_write(out_path, render(out))
    _atomic_write(os.path.splitext(out_path)[0] + ".json", json.dumps(out, indent=1))
    log(f"wrote {out_path}")
    return out


if __name__ == "__main__":
    main()
