"""The roofline: the machine's float32 matmul peak, measured in the same run, and the fraction of
it a rate reaches (model FLOPs per unit, from XLA's cost analysis, x units/s / peak)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness.timing import time_call


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


def fraction(flops_per_unit: float, rate: float, peak_gflops: float) -> float:
    """Fraction of the peak reached by `rate` units/s of `flops_per_unit` FLOPs each."""
    return flops_per_unit * rate / (peak_gflops * 1e9)


def program_flops(fn, *args) -> float:
    """XLA cost-analysis FLOPs of one call of `fn(*args)` (compiled, not run)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
