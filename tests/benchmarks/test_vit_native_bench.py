"""Smoke test of benchmarks/suites/vit_native.py at its --quick sizes (16 px miniatures): every row
present with finite positive rates, ratios against blend RISE from the same run, FLOPs per token-
drop pass below blend's, results written. No timing assertion."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks.suites import vit_native


@pytest.mark.slow
def test_quick_run_writes_every_row(tmp_path):
    out = tmp_path / "vit_native.json"
    rows = vit_native.main(["--quick", "--n-masks", "8", "--batch", "8", "--out", str(out)])
    assert {(r["model"], r["method"]) for r in rows} == {
        (m, name) for m in ("ViT-S/14 (tiny)", "ViT-B/16 (tiny)") for name in ("rise_blend", "rise_token_drop", "rollout")}
    for row in rows:
        for key in ("explicands_per_s", "flops_per_pass", "roofline", "ratio_vs_blend_rise"):
            assert math.isfinite(row[key]) and row[key] > 0, (row, key)
    by = {(r["model"], r["method"]): r for r in rows}
    for model in ("ViT-S/14 (tiny)", "ViT-B/16 (tiny)"):
        assert by[(model, "rise_blend")]["ratio_vs_blend_rise"] == 1.0
        assert by[(model, "rise_token_drop")]["flops_per_pass"] < 0.75 * by[(model, "rise_blend")]["flops_per_pass"]
    record = json.loads(out.read_text())
    assert record["rows"] == rows and record["n_masks"] == 8 and "load_avg_1min" in record
