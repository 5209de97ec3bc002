"""benchmarks/suites/resnet_quality.py (LRP beside IG, GradientSHAP and RISE on the trained digits
SmallResNet) against hand computations: the modelled FLOPs, the compared variants and the blend-only
markdown. No run of the suite (40 explicands, five methods: minutes)."""
from __future__ import annotations

import pytest

from benchmarks.suites import resnet_quality as rq
from benchmarks.suites import vit_quality as vq


def test_explicand_flops_is_passes_times_the_pass_flops():
    per_pass = {"forward": 10.0, "gradient": 30.0, "gradient_lrp": 33.0}
    assert rq.explicand_flops("lrp", (0, 1), per_pass) == 33.0  # the relevance mode's gradient pass
    assert rq.explicand_flops("integrated_gradients", (0, 16), per_pass) == 16 * 30.0
    assert rq.explicand_flops("rise", (417, 0), per_pass) == 417 * 10.0


def test_variants_compare_lrp_with_the_reference():
    table = rq.variants(416)
    assert table["LRP"] == ("lrp", {}) and table[rq.REFERENCE] == ("integrated_gradients", {"n_steps": 50})
    assert table["RISE centred"] == ("rise", {"n_masks": 416, "centered": True})
    assert set(table) == {"LRP", "IG-16", "IG-50", "GradientSHAP", "RISE centred"}


def test_blend_only_markdown():
    cells = {"IG-50": [0.5, 0.6, 0.7], "LRP": [0.1, 0.1, 0.1]}
    aucs = {label: {("blend", m, k): v for m in vq.MEASURE_NAMES for k in ("insertion", "deletion")}
            for label, v in cells.items()}
    rows = vq.auc_table(aucs, rq.REFERENCE)
    text = vq.markdown(rows, {"IG-50": 0.2, "LRP": 0.01}, {"IG-50": (0, 50), "LRP": (0, 1)}, "# t",
                       {"IG-50": 1000e6, "LRP": 20e6}, removals=rq.REMOVALS)
    assert text.count("Evaluated by") == 1 and "token drop" not in text
    # ccs insertion: higher is better, so LRP's 0.1 outside IG's interval is worse; deletion: lower, better.
    assert "| LRP | 0, 1 | 20 | 50.0 | 0.0100 | 20.0 | 0.100 [0.100, 0.100] **worse** | 0.100 [0.100, 0.100] **better** |" \
        in text
    # The random reference: no passes, no time -> "-" in the cost columns.
    random = {"Random": {("blend", m, k): [0.2, 0.3, 0.4] for m in vq.MEASURE_NAMES for k in ("insertion", "deletion")}}
    text = vq.markdown(vq.auc_table({**aucs, **random}, rq.REFERENCE), {"IG-50": 0.2, "Random": float("nan")},
                       {"IG-50": (0, 50), "Random": (0, 0)}, "# t", {"IG-50": 1000e6, "Random": 0.0},
                       removals=rq.REMOVALS)
    assert "| Random | 0, 0 | - | - | - |  | 0.300 [" in text
    with pytest.raises(KeyError):  # the ViT suite's removals need token-drop rows
        vq.markdown(rows, {"IG-50": 0.2, "LRP": 0.01}, {"IG-50": (0, 50), "LRP": (0, 1)}, "# t")
