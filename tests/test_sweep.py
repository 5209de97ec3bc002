"""Sweep: units, resume after SIGKILL, integrity checks, config hash, report."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax.data.image_folder import ArrayImages
from cocoa_jax.sweep import SweepConfig, run_sweep
from cocoa_jax.sweep import report as report_mod
from cocoa_jax.sweep.store import RunDirMismatch, open_existing

IMAGE_SHAPE = (16, 16, 1)
N_CLASSES = 3


class TinyConvEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2))(x))
        h = h.reshape(h.shape[0], -1)
        return nn.relu(nn.Dense(8)(h))


class TinyEncoder:
    """Random-weight encoder with the attributes the sweep needs."""

    def __init__(self):
        module = TinyConvEncoder()
        self.params = module.init(jax.random.key(1), jnp.zeros((1,) + IMAGE_SHAPE))
        self.encode_fn = module.apply
        self.input_shape = IMAGE_SHAPE
        self.preprocess = None


def tiny_datasets():
    """Class-dependent blobs so classes are separable for the probe."""
    rng = np.random.default_rng(0)

    def make(n):
        labels = np.arange(n) % N_CLASSES
        yy, xx = np.mgrid[0:16, 0:16]
        images = np.zeros((n,) + IMAGE_SHAPE, np.float32)
        for i, c in enumerate(labels):
            cy, cx = 4 + 4 * c, 4 + 3 * c
            images[i, ..., 0] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        images += 0.1 * rng.random(images.shape).astype(np.float32)
        return ArrayImages(images, labels)

    return {"train": make(60), "test": make(30)}


def tiny_config(**changes) -> SweepConfig:
    base = dict(encoder="custom:tiny", dataset="custom:blobs", classes=(0, 1), explicands_per_class=3,
                corpus_size=5, foil_size=12, seeds=(0, 1),
                methods={"integrated_gradients": {"n_steps": 4}, "rise": {"n_masks": 24}},
                blur_kernel_size=5, blur_sigma=1.0, eval_steps=8, explicand_batch=2, eval_batch=64)
    base.update(changes)
    return SweepConfig(**base)


_ENCODER = None


def tiny_encoder() -> TinyEncoder:
    # One instance per process: the sweep caches compiled functions per encode_fn.
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = TinyEncoder()
    return _ENCODER


def run_tiny(run_dir, **kwargs):
    return run_sweep(tiny_config(), str(run_dir), encoder=tiny_encoder(), datasets=tiny_datasets(),
                     progress=False, **kwargs)


def _unit_arrays(run_dir):
    _, store = open_existing(str(run_dir))
    rows = store.read_rows(warn=False)
    return {uid: store.load_unit(row) for uid, row in rows.items()}


def test_full_run_then_rerun_skips_everything(tmp_path):
    first = run_tiny(tmp_path / "run")
    n_units = 2 * 2 * 3  # seeds x classes x (IG, RISE, random)
    assert len(first.computed) == n_units and not first.skipped
    second = run_tiny(tmp_path / "run")
    assert second.computed == [] and len(second.skipped) == n_units
    arrays = _unit_arrays(tmp_path / "run")
    ig = arrays["s0_c1_integrated_gradients"]
    assert ig["attributions"].shape == (3, 4, 16, 16)  # N explicands, K=4 targets
    assert ig["curves"].shape == (3, 4, 2, 9, 5)
    assert np.isfinite(ig["aucs"]).all()
    assert arrays["s0_c1_random"]["attributions"].shape == (3, 1, 16, 16)
    # Report: table rows = 2 methods x 4 targets + random.
    paths = report_mod.write_report(str(tmp_path / "run"))
    text = open(paths["markdown"]).read()
    assert "COCOA" in text and "Random" in text
    assert len(open(paths["csv"]).read().strip().splitlines()) == 1 + 2 * 4 + 1
    assert os.path.getsize(paths["plot"]) > 0


def test_changed_config_never_mixes(tmp_path):
    run_tiny(tmp_path / "run", max_units=1)
    with pytest.raises(RunDirMismatch, match="another config"):
        run_sweep(tiny_config(corpus_size=6), str(tmp_path / "run"), encoder=tiny_encoder(),
                  datasets=tiny_datasets(), progress=False)
    # Execution-only fields do not change the hash.
    assert tiny_config(explicand_batch=3).config_hash() == tiny_config().config_hash()
    # Same config, other encoder weights (e.g. a re-trained checkpoint): refused too.
    other = TinyEncoder()
    other.params = jax.tree_util.tree_map(lambda p: p * 1.01, other.params)
    with pytest.raises(RunDirMismatch, match="another config, encoder or data"):
        run_sweep(tiny_config(), str(tmp_path / "run"), encoder=other, datasets=tiny_datasets(), progress=False)
    # The matching run resumes.
    assert len(run_tiny(tmp_path / "run", max_units=1).skipped) == 1


def test_corrupted_and_partial_files_are_recomputed(tmp_path):
    run_dir = tmp_path / "run"
    run_tiny(run_dir, max_units=3)
    reference = _unit_arrays(run_dir)
    results = run_dir / "results.p0.jsonl"
    lines = results.read_bytes().splitlines()
    # 1) flip bytes in one unit file, 2) truncate another unit's row mid-way (a killed append).
    victim = json.loads(lines[0])
    path = run_dir / victim["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    results.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][: len(lines[2]) // 2])
    with pytest.warns(UserWarning, match="corrupted"):
        resumed = run_tiny(run_dir, max_units=2)
    assert set(resumed.computed) == {victim["unit"], json.loads(lines[2])["unit"]}
    after = _unit_arrays(run_dir)
    for uid, arrays in reference.items():
        np.testing.assert_array_equal(after[uid]["aucs"], arrays["aucs"])


_CHILD = r"""
import sys, time
sys.path.insert(0, {tests!r})
import test_sweep
def slow(uid):
    time.sleep(0.4)  # widen the window between units so the kill lands mid-run
test_sweep.run_tiny({run_dir!r}, on_unit=slow)
"""


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    reference = run_tiny(tmp_path / "reference")
    run_dir = tmp_path / "killed"
    code = _CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)), run_dir=str(run_dir))
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=env, cwd=repo_root)
    results = run_dir / "results.p0.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= 3:
            break
        if child.poll() is not None:
            pytest.fail("sweep child exited before it could be killed: " + child.stderr.read().decode()[-2000:])
        time.sleep(0.05)
    else:
        child.kill()
        pytest.fail("sweep child made no progress")
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = open_existing(str(run_dir))[1].read_rows(warn=False)
    n_total = len(reference.computed)
    assert 3 <= len(before) < n_total, "the kill must land mid-run"
    resumed = run_tiny(run_dir)
    # Nothing lost, nothing computed twice.
    assert set(resumed.skipped) == set(before)
    assert not set(resumed.computed) & set(before)
    assert set(resumed.computed) | set(before) == set(reference.computed)
    rows = [json.loads(line) for line in results.read_bytes().splitlines() if line.strip()]
    finished_units = [r["unit"] for r in rows if "unit" in r]
    assert sorted(finished_units) == sorted(reference.computed)  # one row per unit
    # Same numbers as the uninterrupted run.
    expected, got = _unit_arrays(tmp_path / "reference"), _unit_arrays(run_dir)
    for uid in reference.computed:
        for name in ("attributions", "curves", "aucs"):
            np.testing.assert_allclose(got[uid][name], expected[uid][name], rtol=1e-6, atol=1e-7, err_msg=uid)
