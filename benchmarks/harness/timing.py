"""Timing: wall seconds of warm calls, and compile time + XLA's memory estimate of a program."""
from __future__ import annotations

import time

import jax
import numpy as np

REPEATS = 1  # timed calls per figure after warm-up (the machine's noise dominates anyway)


def block(tree):
    """Wait for every array in `tree` (JAX dispatch is asynchronous); returns `tree`."""
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def time_call(fn, repeats: int, warmup: bool = True) -> float:
    """Median seconds of `repeats` calls, after one warm-up call if `warmup`."""
    if warmup:
        block(fn())
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compile_timed(fn, *args):
    """(compiled program, seconds to compile, XLA's memory estimate in MiB or nan)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    try:
        mem = compiled.memory_analysis()
        mem_mib = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20
    except Exception:  # noqa: BLE001
        mem_mib = float("nan")
    return compiled, seconds, mem_mib
