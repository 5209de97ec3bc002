"""cocoa-jax benchmark suite: one command, `python -m benchmarks.run [--quick] [--out PATH]`.

Measures, for CIFAR ResNet-18 (32 px), ResNet-50 (224 px) and the CLIP ViT-B/32 image tower
(224 px), random weights: RISE masks/s, IG and GradientSHAP gradient steps/s, insertion/
deletion evaluations/s, per explicand (E=1) and for a batch of explicands, with K=1 and K=4
targets; the same work done the official way in PyTorch + Captum in the same run (ratios);
the roofline fraction (model FLOPs from XLA's cost analysis x rate / matmul peak measured
in the same run); XLA's memory estimate per program; scaling over batch size, host devices
(subprocesses), bf16 vs float32 with the attribution error bf16 costs; Gauss-Legendre steps
vs accuracy; and the paper's protocol end to end vs the official code's way.

Units. A RISE "mask" and an insertion/deletion "evaluation" are one masked forward pass
(all K targets and measures read from it). A gradient "step" is one path point / sample of
one explicand with the gradients of all K targets (cocoa-jax: one forward and K backward
passes; Captum: K forward-backward passes, one target per call).

On CPU, cocoa-jax runs over `--devices` forced host devices (default: the core count, set
before JAX starts): measured, one XLA CPU device leaves part of the cores idle.
Writes benchmarks/RESULTS.md (or --out) and a .json beside it; prints the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, < ~1 min (smoke test)")
    parser.add_argument("--out", default=None, help="results markdown path (default benchmarks/RESULTS.md)")
    parser.add_argument("--devices", type=int, default=None,
                        help="forced CPU host devices for cocoa-jax (default: os.cpu_count())")
    parser.add_argument("--models", default=None, help="comma-separated subset of models")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: "
                        "main,batch,devices,bf16,steps,e2e")
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import models as M  # noqa: E402
from benchmarks.machine import cpu_name  # noqa: E402
from cocoa_jax import attribution, baselines, sharding, targets  # noqa: E402
from cocoa_jax import methods as _methods  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:  # the evaluation module may be absent in older trees
    from cocoa_jax import metrics as _metrics
except Exception:  # noqa: BLE001
    _metrics = None


# ----------------------------------------------------------------------------- sizes


SCALED = ("rise_masks", "rise_batch", "ig_steps", "ig_batch", "gs_samples", "insdel_batch")


def sizes(quick: bool) -> dict:
    """`_sizes(quick)` with every count and batch multiplied by `--scale` (1 unless given)."""
    scale = ARGS.scale if ARGS is not None and not quick else 1
    out = _sizes(quick)
    if scale != 1:
        out = {name: {k: v * scale if k in SCALED else v for k, v in sz.items()} for name, sz in out.items()}
    return out


def torch_device() -> str:
    """The PyTorch side's device (`--torch-device`; auto: cuda when JAX runs on a GPU and torch sees one)."""
    import torch

    choice = ARGS.torch_device if ARGS is not None else "auto"
    if choice == "auto":
        return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    return choice


def _sizes(quick: bool) -> dict:
    """Work per measurement and the cells measured: (method, K, E) triples.

    Small counts for the 224 px models on CPU: rates are what is compared, and every figure
    is work done / wall time of a warm call.
    """
    if quick:
        tiny = dict(rise_masks=40, rise_batch=20, grid=4, ig_steps=8, ig_batch=8, gs_samples=8, insdel_steps=8,
                    insdel_batch=18, explicands=2,
                    cells=[("rise", 1, 1), ("integrated_gradients", 4, 2), ("gradient_shap", 1, 1), ("insdel", 4, 1)])
        return {"tiny_resnet": tiny}
    big_cells = [("rise", 1, 1), ("rise", 4, 1), ("integrated_gradients", 1, 1), ("integrated_gradients", 4, 1), ("gradient_shap", 1, 1),
                 ("insdel", 1, 1)]
    return {
        "resnet18_cifar": dict(rise_masks=200, rise_batch=100, grid=4, ig_steps=20, ig_batch=20, gs_samples=20,
                               insdel_steps=50, insdel_batch=102, explicands=4,
                               cells=[(m, k, e) for m in ("rise", "integrated_gradients") for k in (1, 4) for e in (1, 4)]
                               + [("gradient_shap", 1, 1), ("gradient_shap", 4, 1), ("insdel", 1, 1),
                                  ("insdel", 4, 1)]),
        "resnet50": dict(rise_masks=32, rise_batch=16, grid=7, ig_steps=8, ig_batch=8, gs_samples=8,
                         insdel_steps=15, insdel_batch=16, explicands=2, cells=big_cells),
        "clip_vit_b32": dict(rise_masks=32, rise_batch=16, grid=7, ig_steps=8, ig_batch=8, gs_samples=8,
                             insdel_steps=15, insdel_batch=16, explicands=2, cells=big_cells),
    }


REPEATS = 1  # timed calls per figure after warm-up (the machine's noise dominates anyway)


# ----------------------------------------------------------------------------- timing


def method_options(method: str, sz: dict) -> dict:
    """The benchmark's sizes as options of the method table (`cocoa_jax.methods`)."""
    return {"rise": {"n_masks": sz["rise_masks"], "grid_size": (sz["grid"],) * 2, "batch_size": sz["rise_batch"]},
            "integrated_gradients": {"n_steps": sz["ig_steps"], "batch_size": sz["ig_batch"]},
            "gradient_shap": {"n_samples": sz["gs_samples"], "batch_size": sz["ig_batch"]}}[method]


def _block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def time_call(fn, repeats: int, warmup: bool = True) -> float:
    """Median seconds of `repeats` calls, after one warm-up call if `warmup`."""
    if warmup:
        _block(fn())
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compile_timed(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    try:
        mem = compiled.memory_analysis()
        mem_mib = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20
    except Exception:  # noqa: BLE001
        mem_mib = float("nan")
    return compiled, seconds, mem_mib


def measure_peak(n: int, repeats: int = 3) -> dict:
    """float32 matmul GFLOP/s: XLA (one device), torch, numpy/OpenBLAS; peak = the best."""
    import torch
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    flops = 2 * n ** 3
    xa = jnp.asarray(a)
    mm = jax.jit(lambda p: p @ p)
    out = {"xla": flops / time_call(lambda: mm(xa), repeats) / 1e9}
    ta = torch.from_numpy(a)
    out["torch"] = flops / time_call(lambda: torch.mm(ta, ta), repeats) / 1e9
    out["numpy"] = flops / time_call(lambda: a @ a, repeats) / 1e9
    out["peak"] = max(out.values())
    out["n"] = n
    return out


# ----------------------------------------------------------------------------- the JAX side


class JaxModel:
    """Encoder, targets and per-explicand attribution programs for one model."""

    def __init__(self, spec: M.ModelSpec, dtype=jnp.float32, seed: int = 0):
        self.spec = spec
        self.module, self.variables = M.init_flax(spec, seed, dtype)
        self.dtype = dtype
        rng = np.random.default_rng(seed)
        d = spec.rep_dim
        self.corpus = jnp.asarray(rng.standard_normal((8, d)), jnp.float32)
        self.foil = jnp.asarray(rng.standard_normal((16, d)), jnp.float32)

    def encode(self, variables, xb):
        return self.module.apply(variables, xb.astype(self.dtype)).astype(jnp.float32)

    def target(self, rep, k: int):
        """K=1: COCOA; K=4: COCOA, corpus, label-free and contrastive label-free (explicand rep `rep`)."""
        cocoa = targets.cocoa(self.corpus, self.foil)
        if k == 1:
            return cocoa
        four = [cocoa, targets.corpus(self.corpus), targets.label_free(rep),
                targets.contrastive_label_free(rep, self.foil)]
        return targets.stack(four[:k])

    def f(self, variables, x, k):
        rep = self.encode(variables, x[None])[0] if k > 1 else None
        return targets.explain_fn(lambda xb: self.encode(variables, xb), self.target(rep, k))

    # Per-explicand programs: (variables, x, key) -> attribution / curves.
    def program(self, method: str, k: int, sz: dict, mesh):
        def run(variables, x, key):
            f = self.f(variables, x, k)
            base = baselines.gaussian_blur(x)
            if method == "insdel":
                # K attributions of this explicand (random ones: evaluation cost does not depend on them).
                attr = jax.random.uniform(key, ((k,) if k > 1 else ()) + x.shape[:2])
                return self.insdel(variables, x, base, attr, k, sz, mesh)
            return _methods.attribute(method, f, x, base, key, mesh=mesh, **method_options(method, sz))
        return run

    def insdel(self, variables, x, base, attr, k, sz, mesh=None):
        def encode(xb):
            if mesh is not None:  # split each evaluation batch over the devices (measured +30% on 2 host devices)
                xb = jax.lax.with_sharding_constraint(xb, sharding.explicand_sharding(mesh))
            return self.encode(variables, xb)
        if k == 1:
            measures = self.target(None, 1)
            if _metrics is not None:
                measures = _metrics.make_measures("ccs", ccs=measures)
        else:
            measures = self.target(self.encode(variables, x[None])[0], k)
        if _metrics is not None:
            curves, aucs = _metrics.insertion_deletion(encode, measures, x, base, attr, n_steps=sz["insdel_steps"],
                                                       batch_size=sz["insdel_batch"])
            return aucs
        # Fallback: masked forward passes of the same shape.
        n = 2 * (sz["insdel_steps"] + 1) * (k if k > 1 else 1)
        masks = (jax.random.uniform(jax.random.key(0), (n,) + x.shape[:2]) < 0.5).astype(x.dtype)
        inputs = x * masks[..., None] + base * (1 - masks[..., None])
        return jax.lax.map(lambda b: measures(encode(b)), inputs.reshape((-1, sz["insdel_batch"]) + x.shape))

    def units(self, method: str, k: int, sz: dict) -> int:
        """Work units per explicand: masks, steps, or evaluations."""
        return {"rise": sz["rise_masks"], "integrated_gradients": sz["ig_steps"], "gradient_shap": sz["gs_samples"],
                "insdel": 2 * (sz["insdel_steps"] + 1) * k}[method]

    def unit_flops(self, method: str, k: int, batch: int) -> float:
        """XLA cost-analysis FLOPs of one unit: a forward pass, or the K input-gradients at one point."""
        x = jnp.zeros((batch,) + (self.spec.image_size, self.spec.image_size, 3), self.dtype)
        if method in ("rise", "insdel"):
            fn = lambda v, xb: self.encode(v, xb)
        else:
            def fn(v, xb):  # the target's explicand representation is fixed: not part of a step
                f = targets.explain_fn(lambda b: self.encode(v, b), self.target(self.corpus[0], k))
                return jax.vmap(jax.grad(f) if k == 1 else jax.jacrev(f))(xb)
        cost = jax.jit(fn).lower(self.variables, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / batch


def jax_measure(jm: JaxModel, method: str, k: int, n_explicands: int, sz: dict, mesh, repeats: int) -> dict:
    """Rate (units/s) of cocoa-jax on E explicands: E=1 shards the perturbations over the mesh,
    E>1 shards the explicands (ExplicandMap)."""
    size = jm.spec.image_size
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.uniform(-1, 1, (n_explicands, size, size, 3)), jnp.float32).astype(jm.dtype)
    keys = jax.random.split(jax.random.key(2), n_explicands)
    if n_explicands == 1:
        program = jm.program(method, k, sz, mesh)
        compiled, compile_s, mem = compile_timed(program, jm.variables, xs[0], keys[0])
        call = lambda: compiled(jm.variables, xs[0], keys[0])
        _block(call())  # first execution (allocations) not timed
    else:
        program = jm.program(method, k, sz, None)
        mapper = sharding.ExplicandMap(program, mesh, in_axes=(None, 0, 0))
        start = time.perf_counter()
        _block(mapper(jm.variables, xs, keys))
        compile_s = time.perf_counter() - start  # includes one run
        mem = float("nan")
        call = lambda: mapper(jm.variables, xs, keys)
    seconds = time_call(call, repeats, warmup=False)
    units = jm.units(method, k, sz) * n_explicands
    return {"rate": units / seconds, "seconds": seconds, "compile_s": compile_s, "mem_mib": mem}


# ----------------------------------------------------------------------------- the PyTorch side


def torch_measure(spec: M.ModelSpec, method: str, k: int, n_explicands: int, sz: dict, channels_last: bool,
                  repeats: int, cache: dict) -> dict:
    import torch

    from benchmarks import torch_side as T

    device = torch_device()
    key = (spec.name, channels_last)
    if key not in cache:
        cache[key] = M.init_torch(spec, channels_last=channels_last).to(device)
        prime = torch.zeros(2, 3, spec.image_size, spec.image_size, requires_grad=True, device=device)
        cache[key](prime.contiguous(memory_format=torch.channels_last) if channels_last else prime).sum().backward()
    model = cache[key]
    rng = np.random.default_rng(1)
    size = spec.image_size
    xs = torch.as_tensor(rng.uniform(-1, 1, (n_explicands, 3, size, size)).astype(np.float32), device=device)
    base = T.blur(xs)
    dirs = np.random.default_rng(3).standard_normal((k, spec.rep_dim)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    target = T.TorchTarget(dirs, single=(k == 1))
    if channels_last:
        xs, base = xs.contiguous(memory_format=torch.channels_last), base.contiguous(memory_format=torch.channels_last)

    def run():
        if method == "rise":  # the official code: one explicand at a time
            return [T.rise(model, target, xs[e:e + 1], base[e:e + 1], sz["rise_masks"], sz["rise_batch"], sz["grid"],
                           channels_last=channels_last) for e in range(n_explicands)]
        if method == "integrated_gradients":  # Captum batches the explicands itself
            return T.integrated_gradients(model, target, xs, base, sz["ig_steps"], sz["ig_batch"] * n_explicands, k,
                                          channels_last)
        if method == "gradient_shap":
            return [T.gradient_shap(model, target, xs[e:e + 1], base[e:e + 1], sz["gs_samples"], k, channels_last)
                    for e in range(n_explicands)]
        if method == "insdel":
            attrs = [rng.uniform(size=(size, size)).astype(np.float32) for _ in range(k)]
            return [T.insertion_deletion(model, target, xs[e:e + 1], base[e:e + 1], attrs, sz["insdel_steps"],
                                         sz["insdel_batch"], channels_last) for e in range(n_explicands)]
        raise ValueError(method)

    def run_synced():
        out = run()
        if device != "cpu":
            torch.cuda.synchronize()
        return out

    with torch.inference_mode(mode=method in ("rise", "insdel")):
        seconds = time_call(run_synced, repeats, warmup=device != "cpu")  # model primed above (CPU)
    units = {"rise": sz["rise_masks"], "integrated_gradients": sz["ig_steps"], "gradient_shap": sz["gs_samples"],
             "insdel": 2 * (sz["insdel_steps"] + 1) * k}[method] * n_explicands
    return {"rate": units / seconds, "seconds": seconds}


# ----------------------------------------------------------------------------- sections

UNIT = {"rise": "masks/s", "integrated_gradients": "steps/s", "gradient_shap": "steps/s", "insdel": "evals/s"}


def section_main(model_names, quick, mesh, peak, out):
    rows = []
    torch_cache: dict = {}
    for name in model_names:
        spec = M.tiny_spec() if name == "tiny_resnet" else M.SPECS[name]
        sz = sizes(quick)[name]
        jm = JaxModel(spec)
        flops = {}
        for method, k, e in sz["cells"]:
            if True:
                key = ("fwd",) if method in ("rise", "insdel") else ("grad", k)
                if key not in flops:
                    flops[key] = jm.unit_flops(method, k, 1 if key[0] == "grad" else 4)
                if True:
                    t0 = time.perf_counter()
                    j = jax_measure(jm, method, k, e, sz, mesh, REPEATS)
                    layouts = (False, True) if spec.has_layout_choice else (False,)
                    tr = {cl: torch_measure(spec, method, k, e, sz, cl, REPEATS, torch_cache) for cl in layouts}
                    best = max(v["rate"] for v in tr.values())
                    row = {
                        "model": name, "method": method, "K": k, "E": e, "unit": UNIT[method],
                        "jax": j["rate"], "torch_nchw": tr[False]["rate"],
                        "torch_cl": tr[True]["rate"] if True in tr else float("nan"),
                        "ratio_best": j["rate"] / best, "ratio_nchw": j["rate"] / tr[False]["rate"],
                        "unit_gflop": flops[key] / 1e9,
                        "roofline_jax": flops[key] * j["rate"] / (peak * 1e9),
                        "roofline_torch": flops[key] * best / (peak * 1e9),
                        "compile_s": j["compile_s"], "mem_mib": j["mem_mib"],
                        "wall_s": time.perf_counter() - t0,
                    }
                    rows.append(row)
                    print(f"  {name:15s} {method:13s} K={k} E={e}: cocoa-jax {row['jax']:8.2f} {row['unit']}, "
                          f"torch {row['torch_nchw']:8.2f} / cl {row['torch_cl']:8.2f}, ratio {row['ratio_best']:.2f}, "
                          f"roofline {row['roofline_jax']:.0%} ({row['wall_s']:.0f}s)", flush=True)
        out["flops"] = out.get("flops", {}) | {f"{name}:{'/'.join(map(str, kk))}": v for kk, v in flops.items()}
    return rows


def section_batch_size(quick, mesh, peak):
    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    base_sz = sizes(quick)[name]
    jm = JaxModel(spec)
    flops = jm.unit_flops("rise", 1, 4)
    rows = []
    for b in ((20,) if quick else (25, 50, 100, 200)):
        sz = dict(base_sz, rise_batch=b, rise_masks=max(base_sz["rise_masks"], b))
        for label, m in ((f"{mesh.devices.size} devices", mesh),):
            j = jax_measure(jm, "rise", 1, 1, sz, m, REPEATS)
            rows.append({"model": name, "batch": b, "devices": label, "rate": j["rate"],
                         "roofline": flops * j["rate"] / (peak * 1e9), "mem_mib": j["mem_mib"]})
            print(f"  RISE batch {b:4d} on {label}: {j['rate']:.1f} masks/s, memory {j['mem_mib']:.0f} MiB", flush=True)
    return rows


def worker_devices(quick: bool) -> dict:
    """Run inside a subprocess with N forced host devices: RISE and IG rates (E=1, K=1) and RISE E>1."""
    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    sz = sizes(quick)[name]
    jm = JaxModel(spec)
    mesh = sharding.make_mesh()
    out = {"devices": jax.device_count()}
    out["rise"] = jax_measure(jm, "rise", 1, 1, sz, mesh, REPEATS)["rate"]
    nan = float("nan")
    out["ig"] = nan if quick else jax_measure(jm, "integrated_gradients", 1, 1, sz, mesh, REPEATS)["rate"]
    out["rise_batch"] = nan if quick else jax_measure(jm, "rise", 1, sz["explicands"], sz, mesh, REPEATS)["rate"]
    return out


def section_devices(quick, peak, flops_fwd, flops_grad):
    rows = []
    counts = (2,) if quick else (1, 2, 4)
    for n in counts:
        cmd = [sys.executable, "-m", "benchmarks.run", "--worker", "devices", "--devices", str(n)]
        if quick:
            cmd.append("--quick")
        env = dict(os.environ, XLA_FLAGS=sharding.host_device_count_flags(n, os.environ.get("XLA_FLAGS", "")))
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"device-scaling worker ({n} devices) failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1].replace("NaN", "null"))
        result = {k: (float("nan") if v is None else v) for k, v in result.items()}
        result["rise_roofline"] = flops_fwd * result["rise"] / (peak * 1e9)
        result["ig_roofline"] = flops_grad * result["ig"] / (peak * 1e9)
        rows.append(result)
        print(f"  {n} host devices: RISE {result['rise']:.1f} masks/s ({result['rise_roofline']:.0%}), "
              f"IG {result['ig']:.1f} steps/s ({result['ig_roofline']:.0%}), RISE E>1 {result['rise_batch']:.1f} masks/s",
              flush=True)
    return rows


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _spearman(a, b):
    ra = np.argsort(np.argsort(np.ravel(a)))
    rb = np.argsort(np.argsort(np.ravel(b)))
    return float(np.corrcoef(ra, rb)[0, 1])


def section_bf16(quick, mesh, peak):
    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    sz = sizes(quick)[name]
    size = spec.image_size
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (size, size, 3)), jnp.float32)
    key = jax.random.key(2)
    results, rows = {}, []
    # The model (weights, activations) runs in the dtype; perturbations, targets and sums in
    # float32 (the core's input checks reject bfloat16 inputs, see the report).
    for dtype in (jnp.float32, jnp.bfloat16):
        jm = JaxModel(spec, dtype=dtype)
        for method in (("rise",) if quick else ("rise", "integrated_gradients")):
            program = jm.program(method, 1, sz, mesh)
            compiled, _, mem = compile_timed(program, jm.variables, x, key)
            _block(compiled(jm.variables, x, key))
            seconds = time_call(lambda: compiled(jm.variables, x, key), REPEATS, warmup=False)
            results[(jnp.dtype(dtype).name, method)] = np.asarray(compiled(jm.variables, x, key), np.float32)
            rows.append({"dtype": jnp.dtype(dtype).name, "method": method,
                         "rate": jm.units(method, 1, sz) / seconds, "mem_mib": mem})
    for row in rows:
        ref = results[("float32", row["method"])]
        got = results[(row["dtype"], row["method"])]
        row["rel_err"] = _rel_err(got, ref)
        row["spearman"] = _spearman(got.mean(-1) if got.ndim == 3 else got, ref.mean(-1) if ref.ndim == 3 else ref)
        print(f"  {row['dtype']:8s} {row['method']:5s}: {row['rate']:.1f}/s, rel. error vs f32 {row['rel_err']:.2e}, "
              f"rank corr {row['spearman']:.4f}", flush=True)
    return rows


def section_steps(quick, mesh):
    """IG accuracy vs steps: Gauss-Legendre vs trapezoid, against Gauss-Legendre with many steps."""
    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    jm = JaxModel(spec)
    size = spec.image_size
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (size, size, 3)), jnp.float32)
    batch = 16 if quick else 32

    def ig(method, n):
        def run(variables, x_):
            f = jm.f(variables, x_, 1)
            return attribution.integrated_gradients(f, x_, baselines.gaussian_blur(x_), n_steps=n, method=method,
                                                    batch_size=batch, mesh=mesh, return_delta=True)
        return jax.jit(run)(jm.variables, x)

    ref, _ = ig("gausslegendre", 8 if quick else 128)
    ends = jax.vmap(jm.f(jm.variables, x, 1))(jnp.stack([x, baselines.gaussian_blur(x)]))
    gap = float(abs(ends[0] - ends[1]))
    rows = []
    for method, ns in (("gausslegendre", (4,) if quick else (4, 8, 16, 32)),
                       ("riemann_trapezoid", (4,) if quick else (8, 16, 32, 64))):
        for n in ns:
            attr, delta = ig(method, n)
            rows.append({"method": method, "steps": n, "rel_err": _rel_err(attr, ref),
                         "completeness": float(abs(delta)) / max(gap, 1e-30)})
            print(f"  IG {method:17s} {n:3d} steps: rel. error {rows[-1]['rel_err']:.2e}, "
                  f"|delta|/|f(x)-f(b)| {rows[-1]['completeness']:.2e}", flush=True)
    return rows


def section_e2e(quick, mesh, peak):
    """The paper's protocol on one batch of explicands: IG, GradientSHAP and RISE with K=4 targets,
    then insertion/deletion of every attribution; cocoa-jax (one program, explicands sharded,
    K targets per pass) vs the official way (one explicand at a time, each target separately)."""
    import torch

    from benchmarks import torch_side as T

    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    sz = dict(sizes(quick)[name])
    k = 4
    n_e = 2  # the official way is slow: one explicand and one target at a time
    jm = JaxModel(spec)
    size = spec.image_size
    rng = np.random.default_rng(5)
    xs_np = rng.uniform(-1, 1, (n_e, size, size, 3)).astype(np.float32)

    def protocol(variables, x, key):
        f = jm.f(variables, x, k)
        base = baselines.gaussian_blur(x)
        keys = jax.random.split(key, 3)
        attrs = []
        for method, method_key in zip(("integrated_gradients", "gradient_shap", "rise"), keys):
            maps = _methods.attribute(method, f, x, base, method_key, **method_options(method, sz))
            attrs.append(maps.mean(-1) if maps.ndim == 4 else maps)  # (K, H, W): channel mean
        all_attrs = jnp.concatenate(attrs)  # (3K, H, W)
        return jm.insdel(variables, x, base, all_attrs, 3 * k, sz)

    mapper = sharding.ExplicandMap(protocol, mesh, in_axes=(None, 0, 0))
    keys = jax.random.split(jax.random.key(0), n_e)
    start = time.perf_counter()
    _block(mapper(jm.variables, jnp.asarray(xs_np), keys))
    first = time.perf_counter() - start
    jax_s = time_call(lambda: mapper(jm.variables, jnp.asarray(xs_np), keys), 1, warmup=False)

    model = M.init_torch(spec, channels_last=False)
    dirs = np.random.default_rng(3).standard_normal((k, spec.rep_dim)).astype(np.float32)
    xs_t = torch.as_tensor(xs_np.transpose(0, 3, 1, 2).copy())
    base_t = T.blur(xs_t)

    def official():
        for e in range(n_e):
            x, b = xs_t[e:e + 1], base_t[e:e + 1]
            for t in range(k):  # each target separately, batch of 1 explicand
                target = T.TorchTarget(dirs[t:t + 1], single=True)
                ig = T.integrated_gradients(model, target, x, b, sz["ig_steps"], sz["ig_batch"], 1)[0]
                gs = T.gradient_shap(model, target, x, b, sz["gs_samples"], 1)[0]
                with torch.inference_mode():
                    rs = T.rise(model, target, x, b, sz["rise_masks"], sz["rise_batch"], sz["grid"])[0]
                    attrs = [ig[0].mean(0).detach().numpy(), gs[0].mean(0).detach().numpy(), rs.numpy()]
                    T.insertion_deletion(model, target, x, b, attrs, sz["insdel_steps"], sz["insdel_batch"])

    start = time.perf_counter()
    official()
    torch_s = time.perf_counter() - start
    row = {"model": name, "explicands": n_e, "targets": k, "jax_s": jax_s, "jax_first_call_s": first,
           "official_s": torch_s, "speedup": torch_s / jax_s}
    print(f"  end to end ({n_e} explicands, K={k}): cocoa-jax {jax_s:.1f} s (first call incl. compile {first:.1f} s), "
          f"official way {torch_s:.1f} s, speed-up {row['speedup']:.1f}x", flush=True)
    return row


# ----------------------------------------------------------------------------- report


def _fmt(v, digits=1):
    if isinstance(v, float):
        if np.isnan(v):
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def render(out: dict) -> str:
    lines = ["# cocoa-jax benchmark results", ""]
    env = out["env"]
    lines += [f"- date: {env['date']}", f"- machine: {env['machine']}", f"- versions: {env['versions']}",
              f"- cocoa-jax devices: {env['devices']}; torch threads: {env['torch_threads']}",
              f"- command: `{env['command']}` (total {out.get('total_s', 0):.0f} s; per section: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in out.get("section_s", {}).items()) + ")",
              f"- matmul peak ({out['peak']['n']}^2 float32), GFLOP/s: XLA {out['peak']['xla']:.1f}, "
              f"torch {out['peak']['torch']:.1f}, numpy {out['peak']['numpy']:.1f} at the start; "
              + (f"XLA {out['peak_end']['xla']:.1f}, torch {out['peak_end']['torch']:.1f}, numpy "
                 f"{out['peak_end']['numpy']:.1f} at the end; " if "peak_end" in out else "")
              + f"peak used = {out['peak']['peak']:.1f} (the best figure)",
              ""]
    if env.get("notes"):
        lines += [f"- note: {n}" for n in env["notes"]] + [""]
    lines += ["Units: a mask / evaluation = one masked forward pass (all K targets read from it); a gradient step = "
              "one path point or sample with the gradients of all K targets. Ratio = cocoa-jax / best PyTorch layout. "
              "Roofline = XLA cost-analysis FLOPs per unit x rate / matmul peak. E = explicands per call "
              "(E=1: perturbations sharded over devices; E>1: explicands sharded).", ""]
    if out.get("main"):
        lines += ["## Rates vs PyTorch", "",
                  "| model | method | K | E | cocoa-jax | PyTorch NCHW | PyTorch channels-last | ratio (best) | "
                  "ratio (NCHW) | GFLOP/unit | roofline cocoa-jax | roofline PyTorch | XLA memory MiB | compile s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in out["main"]:
            lines.append(f"| {r['model']} | {r['method']} | {r['K']} | {r['E']} | {r['jax']:.2f} {r['unit']} | "
                         f"{r['torch_nchw']:.2f} | {_fmt(r['torch_cl'], 2)} | {r['ratio_best']:.2f} | "
                         f"{r['ratio_nchw']:.2f} | {r['unit_gflop']:.2f} | {r['roofline_jax']:.0%} | "
                         f"{r['roofline_torch']:.0%} | {_fmt(r['mem_mib'], 0)} | {r['compile_s']:.1f} |")
        lines.append("")
    if out.get("batch"):
        lines += ["## Scaling: RISE batch size (E=1, K=1)", "", "| model | batch | devices | masks/s | roofline | "
                  "XLA memory MiB |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['devices']} | {r['rate']:.1f} | {r['roofline']:.0%} | "
                  f"{_fmt(r['mem_mib'], 0)} |" for r in out["batch"]] + [""]
    if out.get("devices"):
        lines += ["## Scaling: forced host devices (subprocesses)", "",
                  "| devices | RISE masks/s (E=1) | roofline | IG steps/s (E=1) | roofline | RISE masks/s (E>1) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['devices']} | {r['rise']:.1f} | {r['rise_roofline']:.0%} | {r['ig']:.1f} | "
                  f"{r['ig_roofline']:.0%} | {r['rise_batch']:.1f} |" for r in out["devices"]] + [""]
    if out.get("bf16"):
        lines += ["## bf16 vs float32 (E=1, K=1)", "",
                  "| dtype | method | rate | rel. L2 error vs float32 | rank correlation vs float32 | XLA memory MiB |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['method']} | {r['rate']:.1f} | {r['rel_err']:.2e} | {r['spearman']:.4f} | "
                  f"{_fmt(r['mem_mib'], 0)} |" for r in out["bf16"]] + [""]
    if out.get("steps"):
        lines += ["## IG quadrature: steps vs accuracy (reference: Gauss-Legendre, many steps)", "",
                  "| rule | steps | rel. L2 error | completeness gap / abs(f(x) - f(b)) |", "|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['steps']} | {r['rel_err']:.2e} | {r['completeness']:.2e} |"
                  for r in out["steps"]] + [""]
    if out.get("e2e"):
        r = out["e2e"]
        lines += ["## End to end: the paper's protocol on one explicand batch", "",
                  f"{r['explicands']} explicands ({r['model']}), K={r['targets']} targets, IG + GradientSHAP + RISE, "
                  "then insertion and deletion of every attribution. Official way: one explicand at a time, each "
                  "target separately, Captum/batched RISE, default layout.", "",
                  "| cocoa-jax s | cocoa-jax first call (incl. compile) s | official way s | speed-up |",
                  "|---|---|---|---|",
                  f"| {r['jax_s']:.1f} | {r['jax_first_call_s']:.1f} | {r['official_s']:.1f} | {r['speedup']:.1f}x |", ""]
    lines += [f"Peak resident memory of the benchmark process: {out.get('max_rss_mib', 0):.0f} MiB.", ""]
    return "\n".join(lines)


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
        "command": "python -m benchmarks.run" + (" --quick" if args.quick else ""),
        "notes": [],
    }


FINDINGS_MARKER = "<!-- findings: written by hand, kept when this file is regenerated -->"


def kept_findings(path: str) -> str:
    """The hand-written findings at the end of an existing results file (from the marker on)."""
    try:
        with open(path) as fh:
            old = fh.read()
    except OSError:
        return ""
    at = old.find(FINDINGS_MARKER)
    return "" if at < 0 else "\n" + old[at:]


def main(args) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if args.worker == "devices":
        print(json.dumps(worker_devices(args.quick)))
        return {}
    t_start = time.perf_counter()
    out_path = args.out or os.path.join(REPO, "benchmarks", "RESULTS.md")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"main", "batch", "devices", "bf16", "steps", "e2e"}
    if unknown:
        raise SystemExit(f"--skip: unknown sections {sorted(unknown)}")
    model_names = ["tiny_resnet"] if args.quick else list(M.SPECS)
    if args.models:
        model_names = [m.strip() for m in args.models.split(",")]
        bad = [m for m in model_names if m not in M.SPECS and m != "tiny_resnet"]
        if bad:
            raise SystemExit(f"--models: unknown {bad}; choose from {sorted(M.SPECS)}")
    mesh = sharding.make_mesh()
    out = {"env": environment(args)}
    if _metrics is None:
        out["env"]["notes"].append("cocoa_jax.metrics absent: insertion/deletion timed as masked forward passes")
    print(f"cocoa-jax benchmark: {out['env']['devices']}, {out['env']['versions']}", flush=True)
    out["peak"] = measure_peak(512 if args.quick else 4096, 2 if args.quick else 3)
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
        out["main"] = section_main(model_names, args.quick, mesh, peak, out)
        done("main")
    if "batch" not in skip and not args.quick:  # same code path as the main section
        print("== batch size", flush=True)
        out["batch"] = section_batch_size(args.quick, mesh, peak)
        done("batch")
    if "devices" not in skip:
        print("== host devices", flush=True)
        name = "tiny_resnet" if args.quick else "resnet18_cifar"
        jm = JaxModel(M.tiny_spec() if args.quick else M.SPECS[name])
        out["devices"] = section_devices(args.quick, peak, jm.unit_flops("rise", 1, 4), jm.unit_flops("integrated_gradients", 1, 1))
        done("devices")
    if "bf16" not in skip:
        print("== bf16 vs float32", flush=True)
        out["bf16"] = section_bf16(args.quick, mesh, peak)
        done("bf16")
    if "steps" not in skip:
        print("== IG steps vs accuracy", flush=True)
        out["steps"] = section_steps(args.quick, mesh)
        done("steps")
    if "e2e" not in skip:
        print("== end to end", flush=True)
        out["e2e"] = section_e2e(args.quick, mesh, peak)
        done("e2e")
    # The peak again at the end: on a shared machine the load changes during the run, and a
    # roofline fraction needs the machine's best rate, so fractions use the larger of the two.
    end_peak = measure_peak(512 if args.quick else 4096, 2 if args.quick else 3)
    out["peak_end"] = end_peak
    if end_peak["peak"] > peak:
        scale = peak / end_peak["peak"]
        for section in ("main", "batch", "devices"):
            for row in out.get(section) or []:
                for key in [k for k in row if "roofline" in k]:
                    row[key] *= scale
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
        json.dump(out, fh, indent=1, default=str)
    print(text)
    print(f"wrote {out_path}", flush=True)
    return out


if __name__ == "__main__":
    main(ARGS)
