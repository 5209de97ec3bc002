"""The benchmark harness's arithmetic (no timing asserted): table rows, rooflines, sizes."""
from __future__ import annotations

import dataclasses
import math

import pytest

from benchmarks.harness.rate_row import HEADER, RateRow
from benchmarks.harness.roofline import fraction
from benchmarks.harness.sizes import SCALED, sizes


def _row():
    jax_result = {"rate": 20.0, "compile_s": 1.5, "mem_mib": float("nan")}
    torch_results = {False: {"rate": 10.0}, True: {"rate": 16.0}}
    return RateRow.measured("m", "rise", 4, 1, jax_result, torch_results, unit_flops=2e9, peak_gflops=100.0,
                            wall_s=3.0)


def test_rate_row_ratios_and_rooflines():
    row = _row()
    assert row.unit == "masks/s" and row.K == 4 and row.E == 1
    assert row.ratio_best == pytest.approx(20 / 16) and row.ratio_nchw == pytest.approx(2.0)
    assert row.roofline_jax == pytest.approx(0.4) and row.roofline_torch == pytest.approx(16 * 2 / 100)
    assert row.unit_gflop == pytest.approx(2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.jax = 1.0


def test_rate_row_without_layout_choice_and_peak_rescale():
    row = RateRow.measured("v", "integrated_gradients", 1, 1, {"rate": 5.0, "compile_s": 0.1, "mem_mib": 10.0},
                           {False: {"rate": 4.0}}, 1e9, 10.0, 1.0)
    assert math.isnan(row.torch_cl) and row.ratio_best == row.ratio_nchw == pytest.approx(1.25)
    half = row.with_peak_scaled(0.5)
    assert half.roofline_jax == pytest.approx(row.roofline_jax / 2) and half.jax == row.jax
    assert set(row.as_dict()) >= {"model", "method", "K", "E", "jax", "torch_nchw", "ratio_best", "roofline_jax"}


def test_rate_row_line_fits_the_header():
    columns = HEADER.splitlines()[0].count("|")
    line = _row().line()
    assert line.count("|") == columns and "| - |" in line  # nan memory shows as '-'
    assert fraction(1e9, 50.0, 100.0) == pytest.approx(0.5)


def test_scale_multiplies_counts_not_quick_nor_steps():
    base, scaled = sizes(False), sizes(False, 8)
    assert {"dinov2_vits14", "clip_vit_b16"} <= set(base)
    for name, sz in base.items():
        for key, value in sz.items():
            assert scaled[name][key] == (value * 8 if key in SCALED else value), (name, key)
    assert sizes(True, 8) == sizes(True)
    assert {(m, k) for m, k, _ in base["clip_vit_b16"]["cells"]} == {
        (m, k) for m in ("rise", "integrated_gradients") for k in (1, 4)}
