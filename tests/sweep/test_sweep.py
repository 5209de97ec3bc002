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

from tests.support.paths import REPO
from tests.support.tiny_sweep import (IMAGE_SHAPE, N_CLASSES, TinyConvEncoder, TinyEncoder,  # noqa: F401
                                      run_tiny, tiny_config, tiny_datasets, tiny_encoder)


def _unit_arrays(run_dir):
    _, store = open_existing(str(run_dir))
    rows = store.read_rows(warn=False)
    return {uid: store.load_unit(row) for uid, row in rows.items()}


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_full_run_then_rerun_skips_everything(tiny_sweep_run):
    run_dir, first = tiny_sweep_run  # one uninterrupted run, shared by the session (conftest)
    n_units = 2 * 2 * 3  # seeds x classes x (IG, RISE, random)
    assert len(first.computed) == n_units and not first.skipped
    second = run_tiny(run_dir)
    assert second.computed == [] and len(second.skipped) == n_units
    arrays = _unit_arrays(run_dir)
    ig = arrays["s0_c1_integrated_gradients"]
    assert ig["attributions"].shape == (3, 4, 16, 16)  # N explicands, K=4 targets
    assert ig["curves"].shape == (3, 4, 2, 9, 5)
    assert np.isfinite(ig["aucs"]).all()
    assert arrays["s0_c1_random"]["attributions"].shape == (3, 1, 16, 16)
    # Report: table rows = 2 methods x 4 targets + random.
    paths = report_mod.write_report(str(run_dir))
    text = open(paths["markdown"]).read()
    assert "COCOA" in text and "Random" in text
    assert len(open(paths["csv"]).read().strip().splitlines()) == 1 + 2 * 4 + 1
    assert os.path.getsize(paths["plot"]) > 0


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
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


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
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
import sys, threading
sys.path.insert(0, {repo!r})
from tests.support import tiny_sweep as test_sweep
done = []
def hold_before_the_last(uid):
    # The kill lands wherever the run is once 3 units are saved; holding after the last but one
    # unit (until killed) makes sure it lands mid-run on any machine, however fast.
    done.append(uid)
    if len(done) == {n_total} - 1:
        threading.Event().wait()
test_sweep.run_tiny({run_dir!r}, on_unit=hold_before_the_last)
"""


@pytest.mark.slow  # a killed subprocess sweep (~17 s)
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, tiny_sweep_run):
    reference_dir, reference = tiny_sweep_run
    run_dir = tmp_path / "killed"
    code = _CHILD.format(repo=str(REPO), run_dir=str(run_dir),
                         n_total=len(reference.computed))
    repo_root = str(REPO)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=env, cwd=repo_root)
    results = run_dir / "results.p0.jsonl"
    deadline = time.time() + 600  # a guard against a hung child only
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
    expected, got = _unit_arrays(reference_dir), _unit_arrays(run_dir)
    for uid in reference.computed:
        for name in ("attributions", "curves", "aucs"):
            np.testing.assert_allclose(got[uid][name], expected[uid][name], rtol=1e-6, atol=1e-7, err_msg=uid)


# ----------------------------------------------------------------------------- config and CLI errors

BAD_CONFIGS = [
    ({"methods": {"integrated_gradients": {"n_stepz": 5}}}, ValueError, "n_stepz.*valid options.*n_steps"),
    ({"methods": {"rise": {"n_masks": "many"}}}, TypeError, r"`methods\.rise\.n_masks`"),
    ({"methods": {"shap_deep": {}}}, ValueError, "shap_deep"),
    ({"seeds": 0}, TypeError, "seeds.*list of integers"),
    ({"seeds": [0, "1"]}, TypeError, "seeds"),
    ({"targets": ["cocoa", "relax"]}, ValueError, "relax"),
    ({"corpus_size": True}, TypeError, "corpus_size"),
    ({"eval_steps": 0}, ValueError, "eval_steps"),
    ({"blur_sigma": "5"}, TypeError, "blur_sigma"),
    ({"explicand_batch": 2.5}, TypeError, "explicand_batch"),
    ({"classes": []}, ValueError, "classes"),
]


@pytest.mark.parametrize("changes,error,match", BAD_CONFIGS)
def test_bad_configs_are_refused_naming_the_field(changes, error, match):
    base = tiny_config().to_dict()
    base.update(changes)
    with pytest.raises(error, match=match):
        SweepConfig.from_dict(base)


def test_unknown_top_level_field_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown config field.*'sedes'.*valid fields"):
        SweepConfig.from_dict(dict(tiny_config().to_dict(), sedes=[0]))


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_mismatch_refusal_names_the_fields_that_differ(tmp_path):
    run_tiny(tmp_path / "run", max_units=1)
    with pytest.raises(RunDirMismatch) as info:
        run_sweep(tiny_config(corpus_size=6, methods={"integrated_gradients": {"n_steps": 5}, "rise": {"n_masks": 24}}),
                  str(tmp_path / "run"), encoder=tiny_encoder(), datasets=tiny_datasets(), progress=False,
                  compile_cache=None)
    message = str(info.value)
    assert "corpus_size: 5 -> 6" in message and "methods.integrated_gradients.n_steps: 4 -> 5" in message
    assert "{" not in message.split("differs in:")[1].split("methods.")[0]  # fields, not hash dictionaries


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_method_streams_are_stable_when_methods_are_added(tmp_path):
    """A unit's draws depend on its method's name only: adding a method changes no other result."""
    rise_only = tiny_config(methods={"rise": {"n_masks": 24}}, include_random=False)
    both = tiny_config(methods={"integrated_gradients": {"n_steps": 4}, "rise": {"n_masks": 24}}, include_random=False)
    for config, name in ((rise_only, "a"), (both, "b")):
        run_sweep(config, str(tmp_path / name), encoder=tiny_encoder(), datasets=tiny_datasets(), progress=False,
                  compile_cache=None)
    a, b = _unit_arrays(tmp_path / "a"), _unit_arrays(tmp_path / "b")
    for uid in a:
        np.testing.assert_array_equal(a[uid]["attributions"], b[uid]["attributions"], err_msg=uid)
    # The stream ids are part of the run hash (changing them would mix old and new draws).
    assert "method_streams" in rise_only.result_fields()


CLI_ERRORS = [
    (["sweep", "{run}", "--set", 'methods={"integrated_gradients":{"n_stepz":5}}'], "n_stepz"),
    (["sweep", "{run}", "--set", "seeds=0"], "seeds"),
    (["sweep", "{run}", "--set", "nonsense"], "FIELD=JSON"),
    (["sweep", "{run}", "--set", "encoder=resnet9000"], "encoder"),
    (["sweep", "{run}", "--devices", "0"], "--devices"),
    (["sweep", "{run}", "--num-processes", "2"], "multi-host needs"),
    (["sweep", "{run}", "--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    (["sweep", "{run}", "--config", "{missing}"], "--config"),
    (["report", "{missing}"], "not a directory"),
    (["report", "{run}", "--measures", "bogus"], "bogus"),
]


# All command-line cases of this module in ONE child process (each a fresh `cli.main` call with its
# own stdout and stderr): the exit status and the lines are the command's, without a cold start of
# Python and JAX per case.
_CLI_ERRORS_CHILD = r"""
import contextlib, io, json, sys
from cocoa_jax import cli
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code
    results.append([status, err.getvalue(), out.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The child's runs: "errors" (case index -> (argv, files before, exit status, stderr, the case's
    folder)), "other_config" (run folder, exit status, stderr) of a run folder holding another
    config's record, "help" (exit status, stdout) of `report --help`."""
    cases = []
    for i, (argv, _) in enumerate(CLI_ERRORS):
        folder = tmp_path_factory.mktemp(f"cli_error_{i}")
        run_dir, missing = folder / "run", folder / "missing"
        argv = [a.replace("{run}", str(run_dir)).replace("{missing}", str(missing)) for a in argv]
        if argv[0] == "report":
            run_dir.mkdir()
        cases.append((argv, sorted(p.name for p in folder.rglob("*")), folder))
    other = tmp_path_factory.mktemp("other_config") / "run"
    other.mkdir()
    from cocoa_jax.sweep.config import digits_reduced
    (other / "config.json").write_text(json.dumps({"config_hash": "x", "identity": {
        "config": digits_reduced().replace(eval_steps=7).result_fields()}}))
    argvs = [c[0] for c in cases] + [["sweep", str(other)], ["report", "--help"]]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _CLI_ERRORS_CHILD, json.dumps(argvs)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=other.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = {i: (argv, before, status, err, folder) for i, ((argv, before, folder), (status, err, _))
              in enumerate(zip(cases, results))}
    (other_status, other_err, _), (help_status, _, help_out) = results[len(cases):]
    return {"errors": errors, "other_config": (other, other_status, other_err), "help": (help_status, help_out)}


@pytest.fixture(scope="module")
def cli_error_runs(cli_runs):
    return cli_runs["errors"]


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("case", range(len(CLI_ERRORS)), ids=[m for _, m in CLI_ERRORS])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(cli_error_runs, case):
    argv, before, status, stderr, folder = cli_error_runs[case]
    match = CLI_ERRORS[case][1]
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cocoa-jax {argv[0]}: error:") and match in lines[0], stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written
    assert not (folder / "missing").exists()


def test_cli_refuses_a_run_dir_of_another_config_before_any_work(cli_runs):
    run, status, stderr = cli_runs["other_config"]  # `sweep RUN` (the default config) in the module's child
    assert status == 2 and "eval_steps: 7 -> 32" in stderr, stderr
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_help_lists_the_measures(cli_runs):
    status, stdout = cli_runs["help"]
    assert status == 0 and "corpus_majority_prob" in stdout and "rep_shift" in stdout
