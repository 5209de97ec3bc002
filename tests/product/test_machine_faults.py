"""Faults of the machine through the INSTALLED `cocoa-jax`: one line, never a traceback.

An output location that cannot be written (read-only file system, a file in the way, an already
full disk) is refused before any work: exit status 2, nothing written. A disk that fills up
DURING the work is one line `cocoa-jax CMD: error: No space left on device (PATH)...`, exit
status 1, nothing half-written; a sweep keeps its finished units, and the run directory, moved to
a roomy disk, resumes from them. Real file systems: small tmpfs mounts, where this process may
mount them (root in a container that allows it); elsewhere those tests are skipped with the
reason, and the checks without a mount below still run. Sweep config mistakes around encoders
are one line before any work, naming the field to set.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import run_cli

EXPLAIN_SMALL = ["--n-steps", "4", "--n-samples", "4", "--n-masks", "200", "--explicands", "2", "--quiet"]
BAD_MARKERS = ("Traceback", "Exception ignored", "Error writing")
# Two units (classes 1 and 7, IG only): the first finishes, the second meets the full disk.
TINY_SWEEP = dict(seeds=[0], classes=[1, 7], explicands_per_class=2, corpus_size=8, foil_size=8, eval_steps=4,
                  probe_train_size=200, probe_test_size=100, methods={"integrated_gradients": {"n_steps": 4}},
                  include_random=False)


@contextlib.contextmanager
def tmpfs(path, size: str, *, read_only: bool = False):
    """A fresh tmpfs of `size` at `path` (created), unmounted afterwards; skips where mounting is
    not allowed."""
    os.makedirs(path, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command: cannot make a small file system to fill")
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root where mounts are allowed): "
                    f"{(mounted.stderr or mounted.stdout).strip() or 'mount failed'}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(mount: str, leave: int) -> None:
    """Fill the file system at `mount` up, then free `leave` bytes (whole pages)."""
    fd = os.open(os.path.join(mount, "filler"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError:
                if len(block) == 4096:
                    break
                block = block[:4096]
        os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - leave)
    finally:
        os.close(fd)


def files_under(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root)
                  for n in dirs + names)


def assert_one_line(proc, command: str, status: int, *fragments: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"cocoa-jax {command}: error: "), proc.stderr[-3000:]
    assert not any(marker in proc.stderr for marker in BAD_MARKERS), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- before the work, without a mount

def test_output_location_checked_before_any_work_without_a_mount(tmp_path):
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" / "out"
    proc = run_cli(["explain", *EXPLAIN_SMALL, "--out", out], cwd=tmp_path)
    assert_one_line(proc, "explain", 2, f"--out {str(out)!r} cannot be created: {tmp_path / 'file'} is a file")
    assert files_under(tmp_path) == ["file"]


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("case", ["no encoder_dir", "224-px encoder on the digits", "encoder_dir of another arch"])
def test_sweep_encoder_mistakes_are_one_line_before_any_work(tmp_path, converted_model_dir, case):
    from cocoa_jax import models

    arch, converted = converted_model_dir  # a real `cocoa-jax convert` output (32x32 SimSiam ResNet-18)
    big = tmp_path / "resnet18_224"
    big.mkdir()  # model.json as convert writes it (the checks read nothing else)
    (big / models.METADATA_FILE).write_text(json.dumps(
        {"format": models.FORMAT_VERSION, "arch": "resnet18",
         "config": dict(models.ARCHITECTURES["resnet18"].default_config), "notes": []}))
    sets, fragments = {
        "no encoder_dir": (["encoder=resnet18"], ["`encoder_dir` is required", "--set encoder_dir=DIR"]),
        "224-px encoder on the digits": (["encoder=resnet18", f"encoder_dir={big}"],
                                         ["`dataset` 'digits' holds 32x32 grey images", "224x224x3",
                                          "--set dataset=folder:<root>"]),
        "encoder_dir of another arch": (["encoder=resnet18", f"encoder_dir={converted}"],
                                        [f"holds a converted {arch!r} model", f"--set encoder={arch}"]),
    }[case]
    run_dir = tmp_path / "run"
    proc = run_cli(["sweep", run_dir, *[a for s in sets for a in ("--set", s)]], cwd=tmp_path)
    assert_one_line(proc, "sweep", 2, *fragments)
    assert not run_dir.exists()


# ----------------------------------------------------------------------------- read-only and full file systems

@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_read_only_file_system_refused_before_any_work(tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as mount:
        for argv, command, flag in (
                (["explain", *EXPLAIN_SMALL, "--out", os.path.join(mount, "out")], "explain", "--out"),
                (["sweep", os.path.join(mount, "run", "deeper"), "--no-progress"], "sweep", "RUN_DIR")):
            proc = run_cli(argv, cwd=tmp_path)
            assert_one_line(proc, command, 2, f"{flag} ", f"cannot be written: Read-only file system ({mount})")
            assert files_under(mount) == []


def test_full_disk_refused_before_any_work(tmp_path):
    with tmpfs(tmp_path / "full", "256k") as mount:
        fill(mount, leave=0)
        proc = run_cli(["explain", *EXPLAIN_SMALL, "--out", os.path.join(mount, "out")], cwd=tmp_path)
        assert_one_line(proc, "explain", 2, f"cannot be written: No space left on device ({mount})")
        assert files_under(mount) == ["filler"]


@pytest.mark.slow  # one explain to the end (~10-25 s)
def test_explain_disk_full_during_the_final_write(tmp_path):
    """The probe fits (one page), the outputs (~360 kB) do not: exit 1, one line, nothing left."""
    with tmpfs(tmp_path / "small", "64k") as mount:
        out = os.path.join(mount, "runs", "out")
        proc = run_cli(["explain", *EXPLAIN_SMALL, "--out", out], cwd=tmp_path)
        line = assert_one_line(proc, "explain", 1, "No space left on device (", "the outputs in progress were removed")
        assert f"({out}/" in line
        assert files_under(mount) == []  # no output, no temporary, not even the folders it created


@pytest.mark.slow  # three small sweeps (~40-60 s)
def test_sweep_disk_full_keeps_finished_units_and_resumes_elsewhere(tmp_path):
    config = tmp_path / "tiny.json"
    from cocoa_jax.sweep.config import digits_reduced

    config.write_text(json.dumps({**digits_reduced().to_dict(), **TINY_SWEEP}))
    sweep = ["--config", config, "--no-progress"]
    with tmpfs(tmp_path / "disk", "1m") as mount:
        run_dir = os.path.join(mount, "run")
        first = run_cli(["sweep", run_dir, *sweep, "--max-units", "1"], cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        kept = files_under(run_dir)
        snapshot = {name: open(os.path.join(run_dir, name), "rb").read() for name in kept
                    if os.path.isfile(os.path.join(run_dir, name))}
        assert "units/s0_c1_integrated_gradients.npz" in kept
        fill(mount, leave=8192)  # room for the probe of writability, not for a unit (~37 kB)
        full = run_cli(["sweep", run_dir, *sweep], cwd=tmp_path)
        line = assert_one_line(full, "sweep", 1, "No space left on device (", "1 unit(s) of the run are finished",
                               "re-run the same command to resume")
        assert f"({run_dir}/units/s0_c7_integrated_gradients.npz)" in line
        # Nothing half-written: exactly the files of the finished unit, byte for byte.
        assert files_under(run_dir) == kept
        assert all(open(os.path.join(run_dir, n), "rb").read() == data for n, data in snapshot.items())
        roomy = tmp_path / "roomy"
        shutil.copytree(run_dir, roomy)
    resumed = run_cli(["sweep", roomy, *sweep], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "computed 1 unit(s), 1 already finished" in resumed.stdout, resumed.stdout
    from cocoa_jax.sweep.store import open_existing

    _, store = open_existing(str(roomy))
    assert sorted(store.read_rows()) == ["s0_c1_integrated_gradients", "s0_c7_integrated_gradients"]
    assert (roomy / "units" / "s0_c1_integrated_gradients.npz").read_bytes() == \
        snapshot["units/s0_c1_integrated_gradients.npz"]
