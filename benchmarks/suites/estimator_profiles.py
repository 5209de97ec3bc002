"""Estimator profiles `paper` vs `fast` on a small digits sweep: wall time and the AUC table.

    python -m benchmarks.suites.estimator_profiles [--seeds 0,1,2] [--classes 0,1,2] [--out PATH] [--quick]

Runs the INSTALLED `cocoa-jax sweep` twice on the reduced digits protocol (docs/sweep.md) with the
paper's estimator counts (methods = {} each: IG 50 steps, GradientSHAP 50 samples, RISE 5000
masks), once with `estimators: "paper"` and once with `estimators: "fast"` (centred RISE with 416
masks, IG 16 steps; GradientSHAP unchanged), each in a fresh run directory with its own empty
compilation cache (both are first runs), the profiles' order alternating over `--repeats`.
Reports both wall times and their ratio, the attribution seconds per method (from the units'
rows), and for every cell (method x target x insertion/deletion x measure) of the AUC table
whether fast's mean over seeds lies inside paper's 95% confidence interval over seeds (Student t,
as `cocoa-jax report`). Writes benchmarks/results/RESULTS_profiles.md and a .json beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import RESULTS

PAPER_METHODS = {"integrated_gradients": {}, "gradient_shap": {}, "rise": {}}


def _cli(code: str | None = None) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "cocoa-jax")
    return [exe] if os.path.isfile(exe) and code is None else [sys.executable, "-m", "cocoa_jax"]


def run_sweep(run_dir: str, cache: str, profile: str, seeds, classes, quick: bool,
              code: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds (user + system) of the sweep process)."""
    sets = {"seeds": seeds, "classes": classes, "methods": PAPER_METHODS, "estimators": profile}
    if quick:
        sets.update(methods={"integrated_gradients": {"n_steps": 4}, "rise": {"n_masks": 64}},
                    explicands_per_class=2, foil_size=50, eval_steps=4)
    args = ["sweep", run_dir, "--no-progress", "--compile-cache", cache]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.pop("XLA_FLAGS", None)
    if code is not None:  # another checkout of cocoa-jax (an A/B against older code)
        env["PYTHONPATH"] = os.path.abspath(code)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(_cli(code) + args, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"cocoa-jax sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cells(run_dir: str):
    """{(method, target, kind, measure): {seed: mean AUC over the seed's classes and explicands}}."""
    from cocoa_jax.sweep import report

    _, _, _, per_seed = report.collect(run_dir)
    out = {}
    for (method, target), by_measure in per_seed.items():
        for (kind, measure), by_seed in by_measure.items():
            out[(method, target, kind, measure)] = dict(by_seed)
    return out


def attribution_seconds(run_dir: str) -> dict:
    from cocoa_jax.sweep.store import open_existing

    _, store = open_existing(run_dir)
    out: dict[str, float] = {}
    for row in store.read_rows(verify=False, warn=False).values():
        out[row["method"]] = out.get(row["method"], 0.0) + row.get("attribution_seconds", 0.0)
    return {k: round(v, 2) for k, v in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites.estimator_profiles",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--classes", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "RESULTS_profiles.md"))
    parser.add_argument("--rewrite", action="store_true", help="only rewrite --out from its .json")
    parser.add_argument("--code", default=None,
                        help="run `python -m cocoa_jax` from this checkout (PYTHONPATH) instead of the installed one")
    args = parser.parse_args(argv)
    if args.rewrite:
        with open(os.path.splitext(args.out)[0] + ".json") as fh:
            write(json.load(fh), args.out)
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    classes = [int(c) for c in args.classes.split(",")]
    scratch = tempfile.mkdtemp(prefix="cj_profiles_")
    walls = {"paper": [], "fast": []}
    cpu = {"paper": [], "fast": []}
    loads, loads_after = [], []
    try:
        for r in range(args.repeats):
            order = ("paper", "fast") if r % 2 == 0 else ("fast", "paper")
            for profile in order:
                loads.append(os.getloadavg()[0])
                run_dir = os.path.join(scratch, f"{profile}_{r}")
                wall, seconds = run_sweep(run_dir, os.path.join(scratch, f"cache_{profile}_{r}"), profile, seeds,
                                          classes, args.quick, args.code)
                loads_after.append(os.getloadavg()[0])
                walls[profile].append(round(wall, 2))
                cpu[profile].append(round(seconds, 2))
                print(f"{profile} repeat {r}: {wall:.1f} s, CPU {seconds:.1f} s (load {loads[-1]:.1f} before, "
                      f"{loads_after[-1]:.1f} after)", flush=True)
        paper, fast = cells(os.path.join(scratch, "paper_0")), cells(os.path.join(scratch, "fast_0"))
        seconds = {p: attribution_seconds(os.path.join(scratch, f"{p}_0")) for p in walls}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from cocoa_jax.sweep.report import ci95_halfwidth

    table, inside = [], 0
    for key in sorted(paper):
        if key[0] == "random":
            continue
        p_values = [paper[key][s] for s in sorted(paper[key])]
        f_values = [fast[key][s] for s in sorted(fast[key])]
        mean, half = float(np.mean(p_values)), float(ci95_halfwidth(p_values))
        fmean, fhalf = float(np.mean(f_values)), float(ci95_halfwidth(f_values))
        ok = abs(fmean - mean) <= half
        inside += ok
        table.append({"cell": list(key), "paper": [mean, half], "fast": [fmean, fhalf], "inside": bool(ok)})
    result = {"walls": walls, "cpu_seconds": cpu, "load_avg_1m_after": loads_after, "code": args.code,
              "attribution_seconds": seconds, "cells": table, "inside": inside,
              "n_cells": len(table), "seeds": seeds, "classes": classes, "load_avg_1m": loads,
              "machine": platform.platform(), "cpus": os.cpu_count(), "quick": args.quick}
    write(result, args.out)
    return 0


def fast_is_better(cell: dict) -> bool:
    """Whether fast's mean is on the better side of paper's: insertion curves should rise and deletion
    curves fall for the similarity / probability measures; representation shift the other way round
    (the distance to the explicand's representation)."""
    _, _, kind, measure = cell["cell"]
    up = (kind == "insertion") != (measure == "rep_shift")
    return (cell["fast"][0] > cell["paper"][0]) == up


def write(result: dict, path: str) -> None:
    walls = result["walls"]
    ratio = min(walls["paper"]) / min(walls["fast"])
    lines = [f"# Estimator profiles on a digits sweep ({time.strftime('%Y-%m-%d')})", "",
             f"`python -m benchmarks.suites.estimator_profiles`: `cocoa-jax sweep` on the reduced digits protocol, seeds "
             f"{result['seeds']}, classes {result['classes']}, 5 explicands per class, the paper's counts "
             f"(`methods` = {{}} each), `estimators` paper vs fast, each a first run (empty compilation cache). "
             f"Machine: {os.cpu_count()} CPUs, shared (1-minute load average before each sweep: "
             f"{', '.join(f'{x:.1f}' for x in result['load_avg_1m'])}"
             + (f"; after: {', '.join(f'{x:.1f}' for x in result['load_avg_1m_after'])}"
                if result.get("load_avg_1m_after") else "") + ").", "",
             "| | paper | fast | ratio |", "|---|---|---|---|",
             f"| sweep wall time (s) | {', '.join(map(str, walls['paper']))} | {', '.join(map(str, walls['fast']))} | "
             f"**{ratio:.2f}x** |"]
    if result.get("cpu_seconds"):
        cpu = result["cpu_seconds"]
        lines.append(f"| sweep CPU time, user + system (s) | {', '.join(map(str, cpu['paper']))} | "
                     f"{', '.join(map(str, cpu['fast']))} | {min(cpu['paper']) / min(cpu['fast']):.2f}x |")
    for method in ("integrated_gradients", "gradient_shap", "rise"):
        a, b = result["attribution_seconds"]["paper"].get(method), result["attribution_seconds"]["fast"].get(method)
        if a is not None and b is not None:
            lines.append(f"| {method} attribution (s, summed over units) | {a} | {b} | {a / b:.2f}x |")
    lines += ["", f"AUC cells (method x target x insertion/deletion x measure; random excluded) where fast's mean "
                  f"over seeds lies inside paper's 95% CI over seeds: **{result['inside']} of {result['n_cells']}**.",
              ""]
    outside = [c for c in result["cells"] if not c["inside"]]
    if outside:
        better = sum(fast_is_better(c) for c in outside)
        lines += [f"Of the {len(outside)} cells outside, fast scores BETTER than paper in {better} (insertion higher / "
                  f"deletion lower for the probability and similarity measures, the reverse for representation "
                  f"shift) and worse in {len(outside) - better}.", ""]
    lines += ["| method | target | kind | measure | paper mean (95% CI half-width) | fast mean | inside | fast better |",
              "|---|---|---|---|---|---|---|---|"]
    for cell in result["cells"]:
        m, t, k, meas = cell["cell"]
        lines.append(f"| {m} | {t} | {k} | {meas} | {cell['paper'][0]:.3f} ({cell['paper'][1]:.3f}) | "
                     f"{cell['fast'][0]:.3f} | {'yes' if cell['inside'] else '**no**'} | "
                     f"{'same' if cell['fast'][0] == cell['paper'][0] else 'yes' if fast_is_better(cell) else 'no'} |")
    if result.get("notes"):  # measurements added by hand to the .json (A/B runs), rendered as written
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.splitext(path)[0] + ".json", "w") as fh:
        json.dump(result, fh, indent=1)
    print("\n".join(lines[:14]))


if __name__ == "__main__":
    sys.exit(main())
