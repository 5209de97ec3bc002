"""Smoke test: the benchmark suite runs end to end at tiny sizes and writes its results.

No timing assertion: only that every section ran and produced finite figures. The suite
runs in a subprocess (it forces CPU host devices before JAX starts).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_writes_results(tmp_path):
    out = tmp_path / "RESULTS.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suites.rates", "--quick", "--devices", "2", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    text = out.read_text()
    for heading in ("## Rates vs PyTorch", "## Scaling: forced host devices", "## bf16 vs float32",
                    "## IG quadrature", "## End to end", "matmul peak"):
        assert heading in text, heading
    results = json.loads((tmp_path / "RESULTS.json").read_text())
    assert results["env"]["devices"].startswith("2 x")
    methods = {(r["method"], r["K"], r["E"]) for r in results["main"]}
    assert {"rise", "integrated_gradients", "gradient_shap", "insdel"} == {m for m, _, _ in methods}
    assert any(k == 4 for _, k, _ in methods) and any(e > 1 for _, _, e in methods)
    for row in results["main"]:
        for key in ("jax", "torch_nchw", "ratio_best", "roofline_jax"):
            assert math.isfinite(row[key]) and row[key] > 0, (row, key)
    assert results["peak"]["peak"] > 0
    assert [r["devices"] for r in results["devices"]] == [2]
    assert all(math.isfinite(r["rel_err"]) for r in results["bf16"])
    assert results["e2e"]["speedup"] > 0 and math.isfinite(results["e2e"]["speedup"])


@pytest.mark.slow
def test_quick_digits_benchmark_writes_its_table(tmp_path):
    out = tmp_path / "RESULTS_digits.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suites.digits", "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| rise") or line.startswith("| integrated_gradients")]
    assert len(rows) == 4  # K=1 and K=4 for each method
    rates = [float(row.split("|")[3].split()[0]) for row in rows]
    assert all(math.isfinite(r) and r > 0 for r in rates)
