"""The rates suite: cocoa-jax vs PyTorch on one machine, `python -m benchmarks rates [--quick] [--out PATH]`.

Measures, for CIFAR ResNet-18 (32 px), ResNet-50, the CLIP ViT-B/32 image tower, DINOv2
ViT-S/14 and the CLIP ViT-B/16 image tower (224 px), random weights: RISE masks/s, IG and
GradientSHAP gradient steps/s, insertion/deletion evaluations/s, per explicand (E=1) and for a
batch of explicands, with K=1 and K=4 targets; the same work done the official way in PyTorch +
Captum in the same run (ratios); the roofline fraction (model FLOPs from XLA's cost analysis x
rate / matmul peak measured in the same run); XLA's memory estimate per program; scaling over
batch size, host devices (subprocesses), bf16 vs float32 with the attribution error bf16 costs;
Gauss-Legendre steps vs accuracy; and the paper's protocol end to end vs the official code's way.

Units. A RISE "mask" and an insertion/deletion "evaluation" are one masked forward pass
(all K targets and measures read from it). A gradient "step" is one path point / sample of
one explicand with the gradients of all K targets (cocoa-jax: one forward and K backward
passes; Captum: K forward-backward passes, one target per call).

On CPU, cocoa-jax runs over `--devices` forced host devices (default: the core count, set
before JAX starts): measured, one XLA CPU device leaves part of the cores idle.
Writes benchmarks/results/RESULTS.md (or --out) and a .json beside it; prints the tables.

This file runs the suite (flags, which sections run, the results files). The harness
(`benchmarks/harness/`): sizes, timing, the roofline, the table row (`rate_row`), the cocoa-jax
side (`jax_side`), the PyTorch side's rates (`torch_rates`, timing the reference
`tests/reference/torch_side.py`), models (`models`); the sections (`rates_table`, `rates_scaling`,
`rates_precision`, `rates_e2e`, beside this file) and the markdown (`benchmarks/report.py`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

SECTIONS = ("main", "batch", "devices", "bf16", "steps", "e2e")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites.rates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, < ~1 min (smoke test)")
    parser.add_argument("--out", default=None, help="results markdown path (default benchmarks/results/RESULTS.md)")
    parser.add_argument("--devices", type=int, default=None,
                        help="forced CPU host devices for cocoa-jax (default: os.cpu_count())")
    parser.add_argument("--models", default=None, help="comma-separated subset of models")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: " + ",".join(SECTIONS))
    parser.add_argument("--scale", type=int, default=1, metavar="N",
                        help="multiply every count and batch size by N (accelerators: 8 keeps an H100/H200 busy)")
    parser.add_argument("--torch-device", default="auto", metavar="DEV",
                        help="PyTorch side's device: cpu, cuda, or auto (cuda when JAX runs on a GPU and torch "
                             "sees one; default)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f"--scale must be a positive integer, got {args.scale}")
    if args.devices is not None and args.devices <= 0:
        parser.error(f"--devices must be a positive integer, got {args.devices}")
    return args


ARGS = _parse_args() if __name__ == "__main__" else None
N_HOST_DEVICES = (ARGS.devices if ARGS and ARGS.devices else None) or os.cpu_count() or 1
if __name__ == "__main__" and "jax" not in sys.modules:
    # Must happen before JAX initialises its CPU backend.
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(kept + [f"--xla_force_host_platform_device_count={N_HOST_DEVICES}"])

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import RESULTS  # noqa: E402
from benchmarks.harness import models as M  # noqa: E402
from benchmarks.harness.jax_side import HAS_METRICS, shared_model  # noqa: E402
from benchmarks.harness.machine import cpu_name  # noqa: E402
from benchmarks.harness.roofline import measure_peak  # noqa: E402
from benchmarks.report import kept_findings, render  # noqa: E402
from benchmarks.suites.rates_e2e import section_e2e  # noqa: E402
from benchmarks.suites.rates_precision import section_bf16, section_steps  # noqa: E402
from benchmarks.suites.rates_table import section_main  # noqa: E402
from benchmarks.suites.rates_scaling import section_batch_size, section_devices, worker_devices  # noqa: E402
from cocoa_jax import meshes  # noqa: E402



def torch_device(choice: str = "auto") -> str:
    """The PyTorch side's device (`--torch-device`; auto: cuda when JAX runs on a GPU and torch sees one)."""
    import torch

    if choice == "auto":
        return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    return choice


def environment(args) -> dict:
    import flax
    import torch
    try:
        import captum
        captum_v = captum.__version__
    except Exception:  # noqa: BLE001
        captum_v = "absent"
    cpu = cpu_name()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, "
                   f"JAX backend {jax.default_backend()} ({jax.devices()[0].device_kind})",
        "versions": f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
                    f"torch {torch.__version__}, captum {captum_v}, numpy {np.__version__}",
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "torch_threads": torch.get_num_threads(),
        "command": " ".join(["python -m benchmarks.suites.rates"] + (sys.argv[1:] if args is ARGS else
                                                              (["--quick"] if args.quick else []))),
        "notes": [],
    }


def _model_names(args) -> list:
    names = ["tiny_resnet"] if args.quick else list(M.SPECS)
    if args.models:
        names = [m.strip() for m in args.models.split(",")]
        bad = [m for m in names if m not in M.SPECS and m != "tiny_resnet"]
        if bad:
            raise SystemExit(f"--models: unknown {bad}; choose from {sorted(M.SPECS)}")
    return names


def main(args) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if args.worker == "devices":
        print(json.dumps(worker_devices(args.quick)))
        return {}
    t_start = time.perf_counter()
    out_path = args.out or os.path.join(RESULTS, "RESULTS.md")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--skip: unknown sections {sorted(unknown)}")
    model_names = _model_names(args)
    quick, scale = args.quick, args.scale
    mesh = meshes.make_mesh()
    out = {"env": environment(args)}
    if not HAS_METRICS:
        out["env"]["notes"].append("cocoa_jax.metrics absent: insertion/deletion timed as masked forward passes")
    print(f"cocoa-jax benchmark: {out['env']['devices']}, {out['env']['versions']}", flush=True)
    peak_n, peak_repeats = (512, 2) if quick else (4096, 3)
    out["peak"] = measure_peak(peak_n, peak_repeats)
    peak = out["peak"]["peak"]
    print(f"matmul peak GFLOP/s: {out['peak']}", flush=True)
    out["section_s"] = {}
    last = [time.perf_counter()]

    def done(section):
        now = time.perf_counter()
        out["section_s"][section] = now - last[0]
        last[0] = now

    done("peak")
    if "main" not in skip:
        print("== rates vs PyTorch", flush=True)
        out["main"] = section_main(model_names, quick, mesh, peak, out, scale, torch_device(args.torch_device))
        done("main")
    if "batch" not in skip and not quick:  # same code path as the main section
        print("== batch size", flush=True)
        out["batch"] = section_batch_size(quick, mesh, peak, scale)
        done("batch")
    if "devices" not in skip:
        print("== host devices", flush=True)
        name = "tiny_resnet" if quick else "resnet18_cifar"
        known = out.get("flops", {})  # the main section's FLOPs per unit, where it measured this model
        jm = shared_model(M.tiny_spec() if quick else M.SPECS[name])
        out["devices"] = section_devices(
            quick, peak, known.get(f"{name}:fwd") or jm.unit_flops("rise", 1, 4),
            lambda: known.get(f"{name}:grad/1") or jm.unit_flops("integrated_gradients", 1, 1))
        done("devices")
    if "bf16" not in skip:
        print("== bf16 vs float32", flush=True)
        out["bf16"] = section_bf16(quick, mesh, peak, scale)
        done("bf16")
    if "steps" not in skip:
        print("== IG steps vs accuracy", flush=True)
        out["steps"] = section_steps(quick, mesh)
        done("steps")
    if "e2e" not in skip:
        print("== end to end", flush=True)
        out["e2e"] = section_e2e(quick, mesh, peak, scale)
        done("e2e")
    # The peak again at the end: on a shared machine the load changes during the run, and a
    # roofline fraction needs the machine's best rate, so fractions use the larger of the two.
    end_peak = measure_peak(peak_n, peak_repeats)
    out["peak_end"] = end_peak
    if end_peak["peak"] > peak:
        rescale = peak / end_peak["peak"]
        if "main" in out:
            out["main"] = [row.with_peak_scaled(rescale) for row in out["main"]]
        for section in ("batch", "devices"):
            for row in out.get(section) or []:
                for key in [k for k in row if "roofline" in k]:
                    row[key] *= rescale
        out["peak"]["peak"] = end_peak["peak"]
    print(f"matmul peak at the end, GFLOP/s: {end_peak}", flush=True)
    out["total_s"] = time.perf_counter() - t_start
    out["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = render(out)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    text += kept_findings(out_path)
    with open(out_path, "w") as fh:
        fh.write(text)
    with open(os.path.splitext(out_path)[0] + ".json", "w") as fh:
        json.dump(dict(out, main=[row.as_dict() for row in out["main"]]) if "main" in out else out, fh, indent=1,
                  default=str)
    print(text)
    print(f"wrote {out_path}", flush=True)
    return out


if __name__ == "__main__":
    main(ARGS)
