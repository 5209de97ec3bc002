"""The summary of benchmarks/suites/vit_quality.py (the trained-ViT AUC table) against hand computations:
the 95% t-interval, the verdict against IG's interval with each measure's direction, the table rows and
its markdown. No run of the suite (it explains 50 explicands with five methods: minutes)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.suites import vit_quality as vq


def test_mean_ci_is_the_t_interval_by_hand():
    values = [1.0, 2.0, 4.0]
    mean = 7.0 / 3.0
    s = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2) / 2)  # ddof 1
    half = 4.302652729911275 * s / math.sqrt(3)  # t_{0.975, 2}, from a table
    got = vq.mean_ci(values)
    np.testing.assert_allclose(got, (mean, mean - half, mean + half), rtol=1e-9)
    assert vq.mean_ci([0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="finite"):
        vq.mean_ci([1.0, float("nan")])


def test_verdict_follows_the_measure_direction():
    ref = (0.5, 0.4, 0.6)
    assert vq.verdict(0.45, ref, "higher") == "within" == vq.verdict(0.6, ref, "lower")
    assert vq.verdict(0.7, ref, "higher") == "better" and vq.verdict(0.7, ref, "lower") == "worse"
    assert vq.verdict(0.3, ref, "higher") == "worse" and vq.verdict(0.3, ref, "lower") == "better"


def test_auc_table_rows_and_markdown():
    ig = {("blend", "ccs", "insertion"): [0.5, 0.6, 0.7], ("blend", "ccs", "deletion"): [0.1, 0.2, 0.3]}
    other = {("blend", "ccs", "insertion"): [0.9, 0.9, 0.9], ("blend", "ccs", "deletion"): [0.9, 1.0, 1.1]}
    rows = vq.auc_table({"IG-50": ig, "Other": other})
    by = {(r["method"], r["kind"]): r for r in rows}
    assert len(rows) == 4 and all(r["n"] == 3 for r in rows)
    assert by[("IG-50", "insertion")]["vs_ref"] == "within"
    assert by[("Other", "insertion")]["vs_ref"] == "better"   # ccs insertion: higher is better
    assert by[("Other", "deletion")]["vs_ref"] == "worse"     # ccs deletion: lower is better
    np.testing.assert_allclose(by[("Other", "deletion")]["mean"], 1.0)
    with pytest.raises(ValueError, match="reference"):
        vq.auc_table({"Other": other})
    full = {label: {(removal, m, k): v[("blend", "ccs", k)] for removal in vq.REMOVALS for m in vq.MEASURE_NAMES
                    for k in ("insertion", "deletion")} for label, v in (("IG-50", ig), ("Other", other))}
    text = vq.markdown(vq.auc_table(full), {"IG-50": 0.2, "Other": 0.01}, {"IG-50": (0, 50), "Other": (0, 1)}, "# t",
                       {"IG-50": 1500e6, "Other": 30e6})
    assert "| Other | 0, 1 | 30 | 50.0 | 0.0100 | 20.0 | 0.900 [0.900, 0.900] **better** |" in text
    assert text.count("Evaluated by") == 2


def test_explicand_flops_is_passes_times_the_pass_flops():
    per_pass = {"forward": 10.0, "forward_half": 4.0, "gradient": 30.0, "gradient_lrp": 31.0}
    assert vq.explicand_flops("integrated_gradients", {"n_steps": 50}, (0, 50), per_pass) == 50 * 30.0
    assert vq.explicand_flops("attn_lrp", {}, (0, 1), per_pass) == 31.0  # the LRP mode's gradient
    assert vq.explicand_flops("rise", {"removal": "token_drop"}, (1000, 0), per_pass) == 1000 * 4.0
    assert vq.explicand_flops("rise", {}, (1000, 0), per_pass) == 1000 * 10.0
