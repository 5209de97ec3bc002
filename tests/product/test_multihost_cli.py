"""`cocoa-jax sweep` under jax.distributed, as users run it: the INSTALLED command, one
subprocess per process, on 127.0.0.1 with free ports, loading the model from its directory.

Checked: 2 processes on the shipped digits encoder and 3 on a converted ResNet-18 directory give
the 1-process results and report; a SIGKILLed process and a restart with another process count
compute nothing twice and report the same; an unreachable coordinator (or a peer that never
joins) is one error line and exit 2 within --init-timeout; processes started with different
configs are refused before anything is written.
"""
from __future__ import annotations

import json
import os
import signal
import socket

import numpy as np
import pytest

from conftest import cli_env, run_cli, start_cli, wait_for

from cocoa_jax.phases import HOLD_ENV

# A tiny protocol: 1 seed, RISE with few masks, few evaluation steps, small corpus and foil.
TINY = {
    "encoder": "digits", "dataset": "digits", "seeds": [0], "classes": [0, 1], "explicands_per_class": 1,
    "corpus_size": 4, "foil_size": 8, "methods": {"rise": {"n_masks": 8}}, "include_random": False,
    "eval_steps": 4, "probe_train_size": 60, "probe_test_size": 20,
}
# No --compile-cache: the test session's cache (tests/conftest.py). What is checked is the split,
# the resume and the results, not compiling: each job's processes load the programs that the
# one-process reference compiled (the same per-process programs; a different one would not hit).
COMMON = ["--devices", "1", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(tmp_path, name: str = "tiny", **changes) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(dict(TINY, **changes)))
    return str(path)


def _start_job(run_dir, config: str, n: int, cwd, extra=(), per_process=None, port=None, env_of=None):
    """Start the n processes of one job; per_process(i) adds arguments to process i, env_of(i) its
    environment (None: the default)."""
    port = port or _free_port()
    return [start_cli(["sweep", run_dir, "--config", config, *COMMON, *extra,
                       "--num-processes", n, "--process-id", i, "--coordinator", f"127.0.0.1:{port}",
                       *(per_process(i) if per_process else ())], cwd=cwd, env=env_of(i) if env_of else None)
            for i in range(n)]


def _finish(procs, timeout: float = 400) -> list[tuple[int, str, str]]:
    out = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            out.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def _ok(results):
    for i, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"process {i} exited {rc}:\n{stdout}\n{stderr[-4000:]}"
        assert "Traceback" not in stderr, stderr


def _arrays(run_dir):
    from cocoa_jax.sweep.store import open_existing

    _, store = open_existing(str(run_dir))
    return {uid: store.load_unit(row) for uid, row in store.read_rows(warn=False).items()}


def _assert_same_results(got_dir, expected_dir, rtol=1e-5):
    from cocoa_jax.sweep import report

    got, expected = _arrays(got_dir), _arrays(expected_dir)
    assert got and sorted(got) == sorted(expected)
    for uid in expected:
        for name in ("attributions", "curves", "aucs"):
            scale = np.abs(expected[uid][name]).max()
            assert scale > 0, f"{uid}/{name} is all zero"
            np.testing.assert_allclose(got[uid][name], expected[uid][name], rtol=rtol, atol=rtol * scale,
                                       err_msg=f"{uid}/{name}")
    assert report.markdown_table(str(got_dir)) == report.markdown_table(str(expected_dir))


def _rows(run_dir, index: int) -> list[str]:
    path = os.path.join(run_dir, f"results.p{index}.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line)["unit"] for line in fh if line.strip().endswith("}")]


def _reference(tmp_path, config: str) -> str:
    run_dir = str(tmp_path / "one_process")
    proc = run_cli(["sweep", run_dir, "--config", config, *COMMON], cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr
    return run_dir


# ----------------------------------------------------------------------------- quick


@pytest.mark.slow  # ~30 s; the quick subset keeps the one-line failures and the config refusal
def test_two_processes_on_the_shipped_digits_encoder_equal_one_process(tmp_path):
    config = _config(tmp_path)
    reference = _reference(tmp_path, config)
    run_dir = str(tmp_path / "two_processes")
    results = _finish(_start_job(run_dir, config, 2, tmp_path, extra=["--report"]))
    _ok(results)
    own = [set(_rows(run_dir, i)) for i in range(2)]
    assert own[0] and own[1] and not own[0] & own[1]  # each process did its share, no unit twice
    assert "process 0/2" in results[0][1] and "process 1/2" in results[1][1]
    assert os.path.exists(os.path.join(run_dir, "report.md")) or "report:" in results[0][1]
    _assert_same_results(run_dir, reference)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("process_id", [1, 0], ids=["coordinator_unreachable", "peer_never_joins"])
def test_unreachable_coordinator_or_missing_peer_is_one_line_and_exit_2(tmp_path, process_id):
    timeout = 5
    address = f"127.0.0.1:{_free_port()}"  # nobody listens there (process 1); nobody joins (process 0)
    # Our line (JAX's own wait would end in SIGABRT and a fatal log after 5 minutes, which the
    # 240 s guard below also refuses); how soon it comes depends on the machine, so no clock here.
    proc = run_cli(["sweep", tmp_path / "run", "--config", _config(tmp_path), *COMMON, "--num-processes", 2,
                    "--process-id", process_id, "--coordinator", address, "--init-timeout", timeout],
                   cwd=tmp_path, timeout=240)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cocoa-jax sweep: error: "), lines
    assert address in lines[0] and f"process {process_id} of 2" in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_processes_with_different_configs_are_refused_and_write_nothing(tmp_path):
    run_dir = tmp_path / "run"
    results = _finish(_start_job(run_dir, _config(tmp_path), 2, tmp_path,
                                 per_process=lambda i: ["--set", "eval_steps=5"] if i == 1 else []))
    for rc, stdout, stderr in results:
        lines = stderr.strip().splitlines()
        assert rc == 2 and len(lines) == 1, stderr
        assert lines[0].startswith("cocoa-jax sweep: error: process(es) 1 of 2 "), lines
        assert "eval_steps" in lines[0]
    assert not run_dir.exists()


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_three_processes_on_a_converted_resnet_directory_equal_one_process(tmp_path, converted_model_dir):
    arch, model_dir = converted_model_dir
    # Digits are 32x32 grey: an RGB 32x32 encoder gets the grey level in all 3 channels.
    config = _config(tmp_path, encoder=arch, encoder_dir=model_dir, classes=[0, 1, 2],
                     methods={"rise": {"n_masks": 4}}, eval_steps=2)
    reference = _reference(tmp_path, config)
    run_dir = str(tmp_path / "three_processes")
    _ok(_finish(_start_job(run_dir, config, 3, tmp_path), timeout=600))
    own = [set(_rows(run_dir, i)) for i in range(3)]
    assert all(len(units) == 1 for units in own) and len(set().union(*own)) == 3
    _assert_same_results(run_dir, reference)


@pytest.mark.slow
def test_sigkill_then_restart_with_another_process_count_computes_nothing_twice(tmp_path):
    # One unit per group (explicand_batch 1), ten units: a kill lands between units.
    config = _config(tmp_path, classes=list(range(10)), explicand_batch=1, methods={"rise": {"n_masks": 64}})
    reference = _reference(tmp_path, config)
    run_dir = str(tmp_path / "run")
    # Process 1 holds after its first unit until killed (cocoa_jax.phases): the kill lands mid-run
    # on any machine, however fast; process 0 cannot end before it (the job's last barrier).
    procs = _start_job(run_dir, config, 2, tmp_path,
                       env_of=lambda i: cli_env(**{HOLD_ENV: "unit 1"}) if i == 1 else None)
    try:
        assert wait_for(lambda: len(_rows(run_dir, 1)) >= 1 or any(p.poll() is not None for p in procs), 600)
        assert all(p.poll() is None for p in procs), "a process ended before the kill"
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        # Its peer is gone: the job is over (a scheduler would stop the rest; so do we).
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    counts = [len(_rows(run_dir, i)) for i in range(3)]
    before = set(_rows(run_dir, 0)) | set(_rows(run_dir, 1))
    assert before and len(before) < 10, before
    # Restart with 3 processes: the missing units are re-split among them.
    results = _finish(_start_job(run_dir, config, 3, tmp_path))
    _ok(results)
    computed = [_rows(run_dir, i)[counts[i]:] for i in range(3)]  # the rows this job appended
    assert not set().union(*computed) & before  # nothing finished was computed again
    assert sum(map(len, computed)) == len(set().union(*computed)) == 10 - len(before)  # each once
    assert max(map(len, computed)) - min(map(len, computed)) <= 1  # balanced
    for rc, stdout, _ in results:
        assert f"{len(before)} already finished" in stdout
    _assert_same_results(run_dir, reference)
