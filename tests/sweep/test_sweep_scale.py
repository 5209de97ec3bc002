"""The sweep on every device and every host: 8 forced CPU devices and 2 local processes
(`jax.distributed` on 127.0.0.1) give the results of one device and one process; a process
killed with SIGKILL and the job restarted split the missing units between them, and the report
equals the uninterrupted one."""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.support.xla import child_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
TESTS = pathlib.Path(__file__).resolve().parent
N_PROCESSES = 2


def _env(devices: int | None = None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = child_flags(devices or None)
    return env


def _arrays(run_dir):
    from cocoa_jax.sweep.store import open_existing

    _, store = open_existing(str(run_dir))
    return {uid: store.load_unit(row) for uid, row in store.read_rows(warn=False).items()}


def _assert_same_results(got_dir, expected_dir, rtol=1e-5):
    got, expected = _arrays(got_dir), _arrays(expected_dir)
    assert sorted(got) == sorted(expected)
    for uid in expected:
        for name in ("attributions", "curves", "aucs"):
            scale = np.abs(expected[uid][name]).max() + 1e-12
            np.testing.assert_allclose(got[uid][name], expected[uid][name], rtol=rtol, atol=rtol * scale,
                                       err_msg=f"{uid}/{name}")


# ----------------------------------------------------------------------------- 8 devices

_DEVICES_CHILD = r"""
import sys, jax
from tests.support import tiny_sweep as ts
assert jax.local_device_count() == 8, jax.local_devices()
for devices, batch, out in ((8, 6, sys.argv[1]), (3, 4, sys.argv[2])):
    config = ts.tiny_config(explicand_batch=batch)
    result = ts.run_sweep(config, out, encoder=ts.tiny_encoder(), datasets=ts.tiny_datasets(), progress=False,
                          devices=devices, compile_cache=None)
    assert result.num_devices == devices
"""


@pytest.fixture(scope="module")
def reference(tiny_sweep_run):
    """The one-process, one-device run of ts.tiny_config() (explicand_batch 2; shared by the
    session, see conftest)."""
    return tiny_sweep_run[0]


@pytest.mark.slow
def test_eight_devices_give_the_one_device_results(tmp_path, reference):
    dirs = [reference] + [tmp_path / name for name in ("eight", "three")]
    proc = subprocess.run([sys.executable, "-c", _DEVICES_CHILD] + [str(d) for d in dirs[1:]], env=_env(8),
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    from cocoa_jax.sweep.store import open_existing
    assert {r["devices"] for r in open_existing(str(reference))[1].read_rows().values()} == {1}
    _assert_same_results(dirs[1], dirs[0])  # 8 devices, groups of 2 units padded to 8 lanes
    _assert_same_results(dirs[2], dirs[0])  # 3 devices: a count that divides nothing
    rows = _arrays(dirs[1])
    assert rows  # and the rows record the device count and grouping
    from cocoa_jax.sweep.store import open_existing
    _, store = open_existing(str(dirs[1]))
    assert {r["devices"] for r in store.read_rows().values()} == {8}
    assert max(r["group_units"] for r in store.read_rows().values()) == 2


# ----------------------------------------------------------------------------- 2 processes

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(process_id: int, port: int, run_dir: str, hold: bool) -> None:
    from cocoa_jax import distributed

    distributed.initialize_distributed(f"127.0.0.1:{port}", N_PROCESSES, process_id, heartbeat_timeout_seconds=10)
    from cocoa_jax import compile_cache
    from tests.support import tiny_sweep as ts

    # The test session's compilation cache (tests/conftest.py): what is checked is the split, the
    # resume and the results, not compiling, so the jobs after the first load their programs.
    session_cache = os.environ.get(compile_cache.ENV_DIR)
    compile_cache.enable(compile_cache.resolve(session_cache) if session_cache else None)

    def slow(_uid):
        if process_id == 1 and hold:
            # The victim holds after its first unit until it is killed: the kill lands mid-run
            # on any machine (the peer goes on at its own pace).
            threading.Event().wait()

    result = ts.run_sweep(ts.tiny_config(), run_dir, encoder=ts.tiny_encoder(), datasets=ts.tiny_datasets(),
                          progress=False, compile_cache=None, on_unit=slow)
    print("COMPUTED", " ".join(result.computed), flush=True)
    print("SKIPPED", " ".join(result.skipped), flush=True)


def _start(run_dir, hold=False):
    port = _free_port()
    return [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(run_dir), str(int(hold))], cwd=REPO,
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(N_PROCESSES)]


def _finish(procs, timeout=400):
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for i, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"process {i}:\n{log[-6000:]}"
    return [_parse(log) for log in logs]


def _parse(log: str) -> dict:
    out = {}
    for line in log.splitlines():
        for tag in ("COMPUTED", "SKIPPED"):
            if line.startswith(tag):
                out[tag.lower()] = line.split()[1:]
    return out


def _results_units(path):
    import json
    return [json.loads(line)["unit"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_two_processes_give_the_one_process_results(tmp_path, reference):
    from cocoa_jax.sweep import report

    run_dir = tmp_path / "run"
    logs = _finish(_start(run_dir))
    own = [set(log["computed"]) for log in logs]
    assert own[0] and own[1] and not own[0] & own[1]  # no unit done twice
    # Each process wrote only its own results file, holding only its own units.
    for i in range(N_PROCESSES):
        assert set(_results_units(run_dir / f"results.p{i}.jsonl")) == own[i]
    _assert_same_results(run_dir, reference)
    assert report.markdown_table(str(run_dir)) == report.markdown_table(str(reference))


@pytest.mark.slow
def test_sigkill_of_one_process_then_restart_resumes_and_reports_the_same(tmp_path, reference):
    from cocoa_jax.sweep import report

    run_dir = tmp_path / "run"
    procs = _start(run_dir, hold=True)
    victim = run_dir / "results.p1.jsonl"
    deadline = time.time() + 600  # a guard against a hung job only
    while time.time() < deadline and not (victim.exists() and victim.read_text().count("\n") >= 1):
        assert procs[1].poll() is None, "the victim ended before the kill"
        time.sleep(0.05)
    assert procs[1].poll() is None, "the victim ended before the kill"
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    # Process 0 goes on with its own units; its peer is gone, so the job ends (JAX's
    # coordination service stops it, or we do): a killed host means restarting the job.
    try:
        procs[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].wait()
    killed_done = set(_results_units(victim))
    done_before = killed_done | (set(_results_units(run_dir / "results.p0.jsonl"))
                                 if (run_dir / "results.p0.jsonl").exists() else set())
    logs = _finish(_start(run_dir))
    # Every process starts from process 0's view of the finished units (what the killed process
    # had finished included) and only the missing units are split between the processes.
    assert killed_done <= set(logs[1]["skipped"]) and set(logs[0]["skipped"]) == set(logs[1]["skipped"])
    assert not set(logs[0]["computed"] + logs[1]["computed"]) & done_before
    _assert_same_results(run_dir, reference)
    assert report.markdown_table(str(run_dir)) == report.markdown_table(str(reference))


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], bool(int(sys.argv[4])))
