"""XLA_FLAGS for the processes tests start: N forced CPU host devices, or one.

A test that starts a process says how many devices it wants; nothing else of this process's
XLA_FLAGS is dropped (`meshes.host_device_count_flags` does the same for users).

Tried and rejected on 2026-12-07: compiling the test session at XLA's backend optimisation level 0
(`--xla_backend_optimization_level=0`). Tiny programs compile ~40% faster, but the results are not
those of the default level: a BERT's embedding gradients with max pooling differed from
sentence-transformers' by 0.61 relative (1e-7 at the default level) and a sweep report's number
moved in its 8th digit. Tests run what users run.
"""
from __future__ import annotations

import os


def child_flags(devices: int | None = None) -> str:
    """This process's XLA_FLAGS without its forced device count, plus `devices` forced CPU host
    devices when given (None: one device, JAX's default)."""
    flags = os.environ.get("XLA_FLAGS", "")
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    if devices is not None:
        kept.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(kept)
