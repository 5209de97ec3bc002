"""The suite's scaling sections: RISE rate over the batch size, and over forced host devices
(each device count in its own subprocess: the count is fixed when JAX starts; the count the suite
itself runs with is measured in its own process)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax

from benchmarks import REPO
from benchmarks.harness import models as M
from benchmarks.harness.jax_side import jax_measure, shared_model
from benchmarks.harness.roofline import fraction
from benchmarks.harness.sizes import sizes
from benchmarks.harness.timing import REPEATS
from cocoa_jax import meshes



def _model(quick: bool):
    name = "tiny_resnet" if quick else "resnet18_cifar"
    return name, (M.tiny_spec() if quick else M.SPECS[name])


def section_batch_size(quick: bool, mesh, peak: float, scale: int = 1) -> list:
    name, spec = _model(quick)
    base_sz = sizes(quick, scale)[name]
    jm = shared_model(spec)
    flops = jm.unit_flops("rise", 1, 4)
    rows = []
    for b in ((20,) if quick else (25, 50, 100, 200)):
        sz = dict(base_sz, rise_batch=b, rise_masks=max(base_sz["rise_masks"], b))
        label = f"{mesh.devices.size} devices"
        j = jax_measure(jm, "rise", 1, 1, sz, mesh, REPEATS)
        rows.append({"model": name, "batch": b, "devices": label, "rate": j["rate"],
                     "roofline": fraction(flops, j["rate"], peak), "mem_mib": j["mem_mib"]})
        print(f"  RISE batch {b:4d} on {label}: {j['rate']:.1f} masks/s, memory {j['mem_mib']:.0f} MiB", flush=True)
    return rows


def worker_devices(quick: bool) -> dict:
    """Run inside a subprocess with N forced host devices: RISE and IG rates (E=1, K=1) and RISE E>1."""
    name, spec = _model(quick)
    sz = sizes(quick)[name]
    jm = shared_model(spec)
    mesh = meshes.make_mesh()
    out = {"devices": jax.device_count()}
    out["rise"] = jax_measure(jm, "rise", 1, 1, sz, mesh, REPEATS)["rate"]
    nan = float("nan")
    out["ig"] = nan if quick else jax_measure(jm, "integrated_gradients", 1, 1, sz, mesh, REPEATS)["rate"]
    out["rise_batch"] = nan if quick else jax_measure(jm, "rise", 1, sz["explicands"], sz, mesh, REPEATS)["rate"]
    return out


def _worker_process(n: int, quick: bool) -> dict:
    """`worker_devices` in a fresh process with n forced host devices."""
    cmd = [sys.executable, "-m", "benchmarks.suites.rates", "--worker", "devices", "--devices", str(n)]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, XLA_FLAGS=meshes.host_device_count_flags(n, os.environ.get("XLA_FLAGS", "")))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"device-scaling worker ({n} devices) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1].replace("NaN", "null"))
    return {k: (float("nan") if v is None else v) for k, v in result.items()}


def section_devices(quick: bool, peak: float, flops_fwd: float, flops_grad) -> list:
    """`flops_grad`: FLOPs of one IG step, or a callable giving them (only called where IG is
    measured: not with --quick). The device count this process already runs on (a CPU backend
    with as many host devices) is measured here, in-process: a fresh process would repeat it."""
    rows = []
    counts = (2,) if quick else (1, 2, 4)
    for n in counts:
        if jax.default_backend() == "cpu" and jax.device_count() == n:
            result = worker_devices(quick)
        else:
            result = _worker_process(n, quick)
        if callable(flops_grad) and math.isfinite(result["ig"]):
            flops_grad = flops_grad()  # computed once, where first needed
        result["rise_roofline"] = fraction(flops_fwd, result["rise"], peak)
        result["ig_roofline"] = float("nan") if callable(flops_grad) else fraction(flops_grad, result["ig"], peak)
        rows.append(result)
        print(f"  {n} host devices: RISE {result['rise']:.1f} masks/s ({result['rise_roofline']:.0%}), "
              f"IG {result['ig']:.1f} steps/s ({result['ig_roofline']:.0%}), RISE E>1 {result['rise_batch']:.1f} masks/s",
              flush=True)
    return rows
