"""The suite's precision sections: what bf16 costs (rate, attribution error vs float32), and IG's
quadrature error over the number of steps (Gauss-Legendre vs trapezoid)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import models as M
from benchmarks.harness.jax_side import shared_model
from benchmarks.harness.sizes import sizes
from benchmarks.harness.timing import REPEATS, block, compile_timed, time_call
from cocoa_jax import attribution, baselines


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _spearman(a, b):
    ra = np.argsort(np.argsort(np.ravel(a)))
    rb = np.argsort(np.argsort(np.ravel(b)))
    return float(np.corrcoef(ra, rb)[0, 1])


def section_bf16(quick: bool, mesh, peak: float, scale: int = 1) -> list:
    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    sz = sizes(quick, scale)[name]
    size = spec.image_size
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (size, size, 3)), jnp.float32)
    key = jax.random.key(2)
    results, rows = {}, []
    # The model (weights, activations) runs in the dtype; perturbations, targets and sums in
    # float32 (the core's input checks reject bfloat16 inputs, see the report).
    for dtype in (jnp.float32, jnp.bfloat16):
        jm = shared_model(spec, dtype)
        for method in (("rise",) if quick else ("rise", "integrated_gradients")):
            program = jm.program(method, 1, sz, mesh)
            compiled, _, mem = compile_timed(program, jm.variables, x, key)
            block(compiled(jm.variables, x, key))
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


def section_steps(quick: bool, mesh) -> list:
    """IG accuracy vs steps: Gauss-Legendre vs trapezoid, against Gauss-Legendre with many steps."""
    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    jm = shared_model(spec)
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
