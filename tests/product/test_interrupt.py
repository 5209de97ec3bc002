"""Ctrl-C (SIGINT) at chosen moments of every command, on the INSTALLED `cocoa-jax`.

Each case starts the command as a subprocess with `COCOA_JAX_TEST_PHASES=1` (`cocoa_jax.phases`:
the command prints `cocoa-jax phase: NAME` on stderr as it reaches each phase), waits for the
phase line of its moment (`start`: before the arguments are parsed; `run`: arguments checked,
imports under way; `load`, `compute`, `method M`, `train`, `convert`, `unit N`, `write`: the command's
own phases; or "commit": inside the final write, held open by `cocoa_jax.files.COMMIT_PAUSE_ENV` until
the signal arrives) and sends one SIGINT. No moment is a number of seconds: the same cases hold on
a slow or a fast machine. Each checks: exit status 130 (never a signal death, never 139), exactly
one line containing "interrupted" and it is the last line of stderr (phase lines aside), no
traceback or "Exception ignored", the outputs all there (and readable) or none of them, and no
temporary left. A moment followed by work (every one but `write`) must interrupt the command; at
`write` only rendering is left, so "finished before the signal: exit 0, every output complete" is
accepted there too. Sweep: finished units still verify and a re-run resumes from them. The quick
subset runs unmarked; the rest is `slow`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading

import numpy as np
import pytest

from conftest import cli_env, run_cli, start_cli, wait_for

from cocoa_jax.files import COMMIT_PAUSE_ENV
from cocoa_jax.phases import PHASES_ENV, PREFIX as PHASE_PREFIX

EXPLAIN_SMALL = ["--n-steps", "4", "--n-samples", "4", "--n-masks", "200", "--explicands", "2", "--quiet"]
LOCALIZE_SMALL = ["--explicands", "2", "--n-steps", "4", "--n-samples", "4", "--n-masks", "100", "--quiet"]
AUG_SMALL = ["--explicands", "1", "--n-steps", "4", "--n-samples", "4", "--n-masks", "100", "--foil-size", "50",
             "--quiet"]
TRAIN_SMALL = ["--steps", "5", "--batch-size", "32", "--warmup-steps", "1", "--quiet"]
TINY_SWEEP = ["--set", "seeds=[0]", "--set", "classes=[1,7]", "--set", "explicands_per_class=2",
              "--set", "corpus_size=8", "--set", "foil_size=8", "--set", "eval_steps=4",
              "--set", "probe_train_size=200", "--set", "probe_test_size=100",
              "--set", "methods.integrated_gradients.n_steps=4", "--set", "methods.gradient_shap.n_samples=4",
              "--set", "methods.rise.n_masks=64", "--no-progress"]
FILES3 = ("figure.png", "attributions.npz", "settings.json")
COMMIT = "commit"
# Moments after which only the outputs' rendering is left: a fast machine may finish first.
MAY_FINISH = ("write",)
# Moments where only the last steps (rendering, the commit held open by COMMIT_PAUSE_ENV) are
# under test: these runs use the session's compilation cache, as users' second runs do; every
# other moment keeps the cache off, so the signal lands while the command compiles.
CACHED = (COMMIT, *MAY_FINISH)
HANG_GUARD_S = 1800  # only a hung command waits this long (a loaded 2-core host took 10 min once)
BAD_MARKERS = ("Traceback", "Exception ignored", "Segmentation fault", "Fatal Python error", "core dumped")


@dataclasses.dataclass
class Ended:
    returncode: int
    stdout: str
    stderr: str  # phase lines removed

    @property
    def finished(self) -> bool:
        """The command ended on its own (exit 0) before the signal could act."""
        return self.returncode == 0


class _Lines:
    """Collects a pipe's lines on a thread; `seen` is set when a wanted line arrives."""

    def __init__(self, stream, wanted: str | None = None):
        self.lines: list[str] = []
        self.seen = threading.Event()
        self._wanted = wanted
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)
            if self._wanted is not None and line.rstrip("\n") == self._wanted:
                self.seen.set()
        self.seen.set()  # end of the stream: nothing more to wait for

    def text(self) -> str:
        self._thread.join(HANG_GUARD_S)
        return "".join(self.lines)


def _signal_at(proc, moment: str, outputs, signum=signal.SIGINT) -> Ended:
    """Send `signum` to `proc` once it reports phase `moment` (or, for COMMIT, once its first
    output is in place: the commit is then paused until the signal); returns how it ended."""
    err = _Lines(proc.stderr, None if moment == COMMIT else f"{PHASE_PREFIX}{moment}")
    out = _Lines(proc.stdout)
    try:
        if moment == COMMIT:
            wait_for(lambda: any(os.path.exists(p) for p in outputs) or proc.poll() is not None,
                     timeout=HANG_GUARD_S, interval=0.02)
        else:
            err.seen.wait(HANG_GUARD_S)
        if proc.poll() is None:
            proc.send_signal(signum)
        proc.wait(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.text().splitlines(keepends=True) if not line.startswith(PHASE_PREFIX)]
    return Ended(proc.returncode, out.text(), "".join(lines))


def _interrupt(args, cwd, moment, outputs, *, env_extra=None, cached=None) -> Ended:
    """Start `cocoa-jax ARGS`, SIGINT at phase `moment`; fail if the command ended before it
    unless the moment is one after which it may finish first (`MAY_FINISH`). `cached`: use the
    session's compilation cache (None: at the CACHED moments only)."""
    # Keep the persistent compilation cache out of it, except at the CACHED moments: the compiling
    # phases are what is tested.
    cached = moment in CACHED if cached is None else cached
    cache = {} if cached else {"COCOA_JAX_CACHE_DIR": "none"}
    env = cli_env(**{**cache, PHASES_ENV: "1",
                     **({COMMIT_PAUSE_ENV: str(HANG_GUARD_S)} if moment == COMMIT else {}), **(env_extra or {})})
    ended = _signal_at(start_cli(args, cwd=cwd, env=env), moment, outputs)
    if ended.returncode != 130 and not (ended.finished and moment in MAY_FINISH):
        pytest.fail(f"the command did not end by the signal at {moment!r}: exit {ended.returncode}\n"
                    f"stdout:\n{ended.stdout[-2000:]}\nstderr:\n{ended.stderr[-4000:]}")
    return ended


def _assert_interrupted(ended: Ended, command):
    out, err = ended.stdout, ended.stderr
    assert ended.returncode == 130, f"exit {ended.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    for marker in BAD_MARKERS:
        assert marker not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    hits = [line for line in lines if "interrupted" in line]
    assert len(hits) == 1 and lines[-1] == hits[0], err
    assert hits[0].startswith(f"cocoa-jax {command}: interrupted (Ctrl-C)"), hits[0]
    return hits[0]


def _assert_all_or_none(outputs, readable=True):
    present = [os.path.exists(p) for p in outputs]
    assert all(present) or not any(present), dict(zip(outputs, present))
    if all(present) and readable:
        for path in outputs:
            if path.endswith(".json"):
                with open(path) as fh:
                    json.load(fh)
            elif path.endswith(".npz"):
                with np.load(path) as npz:
                    assert npz.files, path
            elif path.endswith(".png"):
                with open(path, "rb") as fh:
                    assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path
    return all(present)


def _assert_no_temporaries(root):
    left = [os.path.join(d, n) for d, dirs, names in os.walk(root) for n in names + dirs
            if ".tmp-" in n or ".old.tmp-" in n]
    assert not left, left


def _check_three_files(tmp_path, command, args, moment):
    """Interrupt at `moment`; returns whether the three outputs are there (all or none)."""
    out_dir = tmp_path / "out"
    outputs = [str(out_dir / name) for name in FILES3]
    ended = _interrupt([command, *args, "--out", out_dir], tmp_path, moment, outputs)
    if ended.finished:  # only at a MAY_FINISH moment (checked by _interrupt): complete outputs
        assert _assert_all_or_none(outputs), "a finished command must leave every output"
        _assert_no_temporaries(tmp_path)
        return True
    _assert_interrupted(ended, command)
    complete = _assert_all_or_none(outputs)
    _assert_no_temporaries(tmp_path)
    if moment == COMMIT:
        assert complete, "a commit under way must complete"
    return complete


# ----------------------------------------------------------------------------------- explain

@pytest.mark.parametrize("moment", ["start", "load", "compute"])
def test_explain_quick(tmp_path, cocoa_jax_cmd, moment):
    assert not _check_three_files(tmp_path, "explain", EXPLAIN_SMALL, moment)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["run", "load", "compute", "method integrated_gradients",
                                    "method gradient_shap", "write", COMMIT])
def test_explain_slow(tmp_path, cocoa_jax_cmd, moment):
    """The default explain (~30 s): start-up, compiling, each method computing, the figure, the commit."""
    complete = _check_three_files(tmp_path, "explain", ["--quiet"], moment)
    if moment not in (COMMIT, *MAY_FINISH):  # at "write", a signal in the commit leaves all three
        assert not complete


@pytest.mark.slow
def test_explain_overwrite_keeps_the_earlier_run_whole(tmp_path, cocoa_jax_cmd):
    """--overwrite, interrupted before the commit: the earlier run's three files, untouched."""
    out_dir = tmp_path / "out"
    first = run_cli(["explain", *EXPLAIN_SMALL, "--out", out_dir], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {name: (out_dir / name).read_bytes() for name in FILES3}
    outputs = [str(out_dir / name) for name in FILES3]
    ended = _interrupt(["explain", *EXPLAIN_SMALL, "--seed", "1", "--overwrite", "--out", out_dir],
                       tmp_path, "compute", outputs)
    _assert_interrupted(ended, "explain")
    assert {name: (out_dir / name).read_bytes() for name in FILES3} == before
    _assert_no_temporaries(tmp_path)


# --------------------------------------------------------------------- localize, augmentations

@pytest.mark.parametrize("moment", ["run"])
def test_localize_quick(tmp_path, cocoa_jax_cmd, moment):
    assert not _check_three_files(tmp_path, "localize", LOCALIZE_SMALL, moment)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["compute", "write", COMMIT])
def test_localize_slow(tmp_path, cocoa_jax_cmd, moment):
    _check_three_files(tmp_path, "localize", LOCALIZE_SMALL, moment)


@pytest.mark.parametrize("moment", ["run"])
def test_augmentations_quick(tmp_path, cocoa_jax_cmd, moment):
    assert not _check_three_files(tmp_path, "augmentations", AUG_SMALL, moment)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["compute", "write", COMMIT])
def test_augmentations_slow(tmp_path, cocoa_jax_cmd, moment):
    _check_three_files(tmp_path, "augmentations", AUG_SMALL, moment)


# -------------------------------------------------------------------------- training commands

@pytest.mark.parametrize("command, moment", [
    ("train-digits", "run"), ("train-digits-clip", "run"),
    pytest.param("train-digits", "train", marks=pytest.mark.slow),
    pytest.param("train-digits", "evaluate", marks=pytest.mark.slow),
    pytest.param("train-digits", COMMIT, marks=pytest.mark.slow),
    pytest.param("train-digits-clip", "train", marks=pytest.mark.slow),
    pytest.param("train-digits-clip", COMMIT, marks=pytest.mark.slow),
])
def test_training(tmp_path, cocoa_jax_cmd, command, moment):
    ckpt = tmp_path / "ckpt"
    outputs = [str(ckpt), str(ckpt) + ".json"]
    # At `evaluate`, the session cache holds no evaluation program yet (this case runs before the
    # commit case, the only other cached run of TRAIN_SMALL): the signal lands while those compile,
    # and the training programs it compiled and stored spare the commit case their compile.
    ended = _interrupt([command, *TRAIN_SMALL, "--out", ckpt], tmp_path, moment, outputs,
                       cached=True if moment == "evaluate" else None)
    _assert_interrupted(ended, command)
    complete = _assert_all_or_none(outputs)
    _assert_no_temporaries(tmp_path)
    assert complete == (moment == COMMIT)
    if complete:
        from cocoa_jax import models

        assert models.load("digits", str(ckpt)) if command == "train-digits" else True


# ------------------------------------------------------------------------------------ convert

@pytest.fixture(scope="module")
def torch_checkpoint(tmp_path_factory):
    """A SimSiam CIFAR ResNet-18 pre-training checkpoint with random weights (as conftest makes)."""
    import sys

    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.reference import resnet as ref

    torch.manual_seed(0)
    backbone = ref.randomize_(ref.CifarResNet18(num_classes=None), 7)
    path = tmp_path_factory.mktemp("torch") / "simsiam_pretrain.pth"
    torch.save({"epoch": 800, "arch": "resnet18",
                "state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, path)
    return str(path)


@pytest.mark.torch
@pytest.mark.parametrize("moment", ["run", pytest.param("convert", marks=pytest.mark.slow),
                                    pytest.param(COMMIT, marks=pytest.mark.slow)])
def test_convert(tmp_path, cocoa_jax_cmd, torch_checkpoint, moment):
    out_dir = tmp_path / "converted"
    ended = _interrupt(["convert", "simsiam_cifar_resnet18", torch_checkpoint, out_dir], tmp_path,
                       moment, [str(out_dir)])
    _assert_interrupted(ended, "convert")
    _assert_no_temporaries(tmp_path)
    if moment == COMMIT or out_dir.exists():
        # All or none: a Ctrl-C that lands after the model directory was swapped in leaves the
        # whole, loadable model.
        from cocoa_jax import models

        assert models.load("simsiam_cifar_resnet18", str(out_dir)).representation_dim == 512


# ------------------------------------------------------------------------------ sweep, report

def _sweep_line_finished(line: str, run_dir) -> int:
    assert f"unit(s) of the run are finished and saved in {run_dir}" in line, line
    assert line.endswith("re-run the same command to resume"), line
    return int(line.split("interrupted (Ctrl-C): ", 1)[1].split(" unit(s)", 1)[0])


def test_sweep_at_start_up(tmp_path, cocoa_jax_cmd):
    run_dir = tmp_path / "run"
    ended = _interrupt(["sweep", run_dir, *TINY_SWEEP], tmp_path, "load", [])
    line = _assert_interrupted(ended, "sweep")
    assert _sweep_line_finished(line, run_dir) == 0
    _assert_no_temporaries(tmp_path)


@pytest.mark.slow
def test_sweep_after_units_then_resume(tmp_path, cocoa_jax_cmd):
    from cocoa_jax.sweep.store import open_existing

    run_dir = tmp_path / "run"
    # The moment: two units saved (the first group); four more are still to compile and compute.
    # With the session cache (no other cached run of TINY_SWEEP comes before): the next groups'
    # programs are not in it, so they still compile when the signal lands; the resume below
    # loads the first group's.
    ended = _interrupt(["sweep", run_dir, *TINY_SWEEP], tmp_path, "unit 2", [], cached=True)
    line = _assert_interrupted(ended, "sweep")
    finished = _sweep_line_finished(line, run_dir)
    _assert_no_temporaries(run_dir / "units")
    _, store = open_existing(str(run_dir))
    rows = store.read_rows(verify=True)  # every reported unit still verifies (SHA-256)
    assert finished >= 2 and len(rows) == finished
    again = run_cli(["sweep", run_dir, *TINY_SWEEP], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{finished} already finished" in again.stdout, again.stdout
    _FINISHED.append(run_dir)  # a finished run of TINY_SWEEP: test_report reads it (read-only)


_FINISHED = []  # run directories of finished TINY_SWEEP runs this module left


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A finished TINY_SWEEP run: the resumed one of test_sweep_after_units_then_resume if it
    ran (it resumes to the run an uninterrupted sweep writes), else one run here."""
    if _FINISHED:
        return _FINISHED[0]
    root = tmp_path_factory.mktemp("sweep")
    run_dir = root / "run"
    proc = run_cli(["sweep", run_dir, *TINY_SWEEP], cwd=root)
    assert proc.returncode == 0, proc.stderr
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["start", "run", COMMIT])
def test_report(tmp_path, cocoa_jax_cmd, finished_sweep, moment):
    out_dir = tmp_path / "report"
    outputs = [str(out_dir / name) for name in ("report.md", "report.csv", "curves.png")]
    ended = _interrupt(["report", finished_sweep, "--out", out_dir], tmp_path, moment, outputs)
    _assert_interrupted(ended, "report")
    complete = _assert_all_or_none(outputs)
    _assert_no_temporaries(tmp_path)
    assert complete == (moment == COMMIT)


# ------------------------------------------------------------------------------------ SIGTERM

def test_sigterm_is_143_with_one_line(tmp_path, cocoa_jax_cmd):
    proc = start_cli(["explain", *EXPLAIN_SMALL, "--out", tmp_path / "out"], cwd=tmp_path,
                     env=cli_env(COCOA_JAX_CACHE_DIR="none", **{PHASES_ENV: "1"}))
    ended = _signal_at(proc, "compute", [], signal.SIGTERM)
    assert ended.returncode == 143, ended.stderr
    assert ended.stderr.strip().splitlines() == ["cocoa-jax explain: terminated (SIGTERM)"], ended.stderr
    assert not (tmp_path / "out").exists()


def test_child_processes_do_not_inherit_blocked_signals(tmp_path):
    """A process a command starts can itself be interrupted (its signal mask is clean)."""
    import subprocess
    import sys

    code = ("import subprocess, sys; from cocoa_jax import interrupt; interrupt.install('explain'); "
            "print(subprocess.run(['grep', '-E', '^SigBlk', '/proc/self/status'], capture_output=True, "
            "text=True).stdout.split()[1])")
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip(), 16) & ((1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))) == 0
