"""Bad method option values, through the installed `cocoa-jax`: one error line naming the
option, exit status 2, nothing written."""
from __future__ import annotations

import os

from conftest import run_cli


def test_sweep_refuses_a_bad_rise_option_before_creating_the_run_dir(tmp_path):
    proc = run_cli(["sweep", "run", "--set", "methods.rise.n_masks=-5"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cocoa-jax sweep: error: "), proc.stderr
    assert "methods.rise.n_masks" in lines[0] and "-5" in lines[0]
    assert not os.path.exists(tmp_path / "run") and os.listdir(tmp_path) == []


def test_explain_refuses_zero_masks(tmp_path):
    proc = run_cli(["explain", "--n-masks", "0", "--out", "out"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cocoa-jax explain: error: ") and "--n-masks" in lines[0]
    assert os.listdir(tmp_path) == []


def test_localize_refuses_a_grid_larger_than_the_image(tmp_path):
    proc = run_cli(["localize", "--grid-size", "65", "--out", "out"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--grid-size" in lines[0] and "64" in lines[0], proc.stderr
    assert os.listdir(tmp_path) == []


def test_localize_images_is_paths_and_the_grid_count_is_explicands(tmp_path):
    """`--images` means image files in every command; localize's old count gets a one-line hint."""
    proc = run_cli(["localize", "--images", "4", "--out", "out"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cocoa-jax localize: error: --images"), proc.stderr
    assert "--explicands 4" in lines[0], lines
    assert os.listdir(tmp_path) == []
