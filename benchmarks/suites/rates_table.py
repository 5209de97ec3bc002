"""The suite's main table: each model's cells (method, K targets, E explicands), cocoa-jax vs the
official way in PyTorch (+ Captum for the gradient methods) on the same machine, with rooflines."""
from __future__ import annotations

import time

from benchmarks.harness import models as M
from benchmarks.harness.jax_side import jax_measure, shared_model
from benchmarks.harness.rate_row import RateRow
from benchmarks.harness.sizes import sizes
from benchmarks.harness.timing import REPEATS


def spec_of(name: str) -> M.ModelSpec:
    return M.tiny_spec() if name == "tiny_resnet" else M.SPECS[name]


def section_main(model_names, quick: bool, mesh, peak: float, out: dict, scale: int = 1,
                 torch_device: str = "cpu") -> list:
    """RateRows of every model's cells; records each model's FLOPs per unit in out["flops"]."""
    from benchmarks.harness.torch_rates import torch_measure

    rows = []
    torch_cache: dict = {}
    for name in model_names:
        spec = spec_of(name)
        sz = sizes(quick, scale)[name]
        jm = shared_model(spec)
        flops = {}
        for method, k, e in sz["cells"]:
            key = ("fwd",) if method in ("rise", "insdel") else ("grad", k)
            if key not in flops:
                flops[key] = jm.unit_flops(method, k, 1 if key[0] == "grad" else 4)
            t0 = time.perf_counter()
            j = jax_measure(jm, method, k, e, sz, mesh, REPEATS)
            layouts = (False, True) if spec.has_layout_choice else (False,)
            tr = {cl: torch_measure(spec, method, k, e, sz, cl, REPEATS, torch_cache, torch_device) for cl in layouts}
            row = RateRow.measured(name, method, k, e, j, tr, flops[key], peak, time.perf_counter() - t0)
            rows.append(row)
            print(row.progress(), flush=True)
        out["flops"] = out.get("flops", {}) | {f"{name}:{'/'.join(map(str, kk))}": v for kk, v in flops.items()}
    return rows
