"""Where `cocoa-jax explain`'s time goes: first run (empty compilation cache) vs repeated run.

    python -m benchmarks.suites.explain_first_run [--repeats 2] [--profiles paper,fast] [--out PATH] [--quick]

Runs the INSTALLED `cocoa-jax explain` (no arguments: the digits encoder, 4 explicands, 4 targets,
IG / GradientSHAP / RISE) as a user does, in a subprocess, with `$COCOA_JAX_CACHE_DIR` pointing at
a fresh directory (first run) and then at the same directory again (repeated runs), for each
estimator profile (`--estimators paper|fast`). Also: the cache off (`none`), and the cache with
JAX's default threshold (`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1`: only programs that took
>= 1 s to compile are stored) against ours (0: every program). Per run: wall time of the process,
the phases `settings.json` records (load = model + data, targets = encoding corpus / foil /
explicands + baselines, one entry per method = its compile (when not cached) + compute, write =
figure + files), start-up = wall -
the command's own total (interpreter, imports, argument checks), the process's CPU seconds (user +
system, all threads), and the 1-minute load average before the run. Writes benchmarks/results/RESULTS_explain.md and a .json beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import RESULTS


def _cli() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "cocoa-jax")
    return [exe] if os.path.isfile(exe) else [sys.executable, "-m", "cocoa_jax"]


def run_once(out_dir: str, cache: str, profile: str, extra_env=None, quick: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.pop("XLA_FLAGS", None)
    env["COCOA_JAX_CACHE_DIR"] = cache
    env.update(extra_env or {})
    args = ["explain", "--quiet", "--overwrite", "--out", out_dir, "--estimators", profile]
    if quick:
        args += ["--explicands", "1", "--methods", "integrated_gradients,rise", "--n-steps", "4", "--n-masks", "64"]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(_cli() + args, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"cocoa-jax explain failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with open(os.path.join(out_dir, "settings.json")) as fh:
        timings = json.load(fh)["timings_s"]
    return {"wall": round(wall, 2), "cpu": round(cpu, 2), "startup": round(wall - timings["total"], 2),
            "load_avg_1m": round(load, 2),
            **{k: round(v, 2) for k, v in timings.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites.explain_first_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profiles", default="paper,fast")
    parser.add_argument("--no-threshold", action="store_true", help="skip the min-compile-time comparison")
    parser.add_argument("--quick", action="store_true", help="a tiny explain (smoke test)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "RESULTS_explain.md"))
    args = parser.parse_args(argv)
    profiles = [p for p in args.profiles.split(",") if p]
    scratch = tempfile.mkdtemp(prefix="cj_first_run_")
    rows: list[dict] = []
    try:
        for r in range(args.repeats):
            for profile in profiles:  # interleaved: each repeat sees the same machine for every mode
                cache = os.path.join(scratch, f"cache_{profile}_{r}")
                out = os.path.join(scratch, "out")
                modes = [("first run", cache, {}), ("repeated", cache, {}), ("repeated", cache, {}),
                         ("cache off", "none", {})]
                if profile == "paper" and not args.no_threshold:
                    c1 = os.path.join(scratch, f"cache1_{r}")
                    one = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1"}
                    modes += [("first run, threshold 1 s", c1, one), ("repeated, threshold 1 s", c1, one)]
                for mode, c, extra in modes:
                    row = {"profile": profile, "mode": mode, "repeat": r,
                           **run_once(out, c, profile, extra, args.quick)}
                    if c != "none":
                        row["cache_files"] = len([f for f in os.listdir(c) if f.endswith("-cache")])
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write(rows, args.out)
    return 0


def write(rows: list[dict], path: str) -> None:
    phases = ["wall", "cpu", "startup", "load", "targets", "integrated_gradients", "gradient_shap", "rise", "write"]
    lines = [f"# `cocoa-jax explain`: first run vs repeated run ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; shared machine: the 1-minute load average before each run is listed. "
             f"Seconds, min / median over runs. `python -m benchmarks.suites.explain_first_run`.", "",
             "| profile | mode | runs | load avg | " + " | ".join(phases) + " |",
             "|---|---|---|---|" + "---|" * len(phases)]
    keys = []
    for row in rows:
        if (row["profile"], row["mode"]) not in keys:
            keys.append((row["profile"], row["mode"]))
    for profile, mode in keys:
        sel = [r for r in rows if r["profile"] == profile and r["mode"] == mode]
        cells = []
        for p in phases:
            values = [r[p] for r in sel if p in r]
            cells.append(f"{min(values):.1f} / {statistics.median(values):.1f}" if values else "-")
        loads = [r["load_avg_1m"] for r in sel]
        lines.append(f"| {profile} | {mode} | {len(sel)} | {min(loads):.1f}-{max(loads):.1f} | " + " | ".join(cells) + " |")
    lines += ["", "Phases: cpu = the process's user + system CPU seconds (all threads; less sensitive to the load "
              "than wall); startup = process wall - the command's own total (interpreter, imports, argument checks); "
              "load = model + data; targets = blurring and encoding the explicands, baselines, corpus and foil, "
              "the targets and scores; one column "
              "per method = its compile (when not cached) + its "
              "compute; write = figure + files.", ""]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    with open(os.path.splitext(path)[0] + ".json", "w") as fh:
        json.dump({"rows": rows, "machine": platform.platform(), "cpus": os.cpu_count()}, fh, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
