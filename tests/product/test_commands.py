"""The commands README and docs show, run as users run them: the installed `cocoa-jax` as a
subprocess, in a fresh working directory, checking exit codes, stderr and every file written.

The README's exact commands (defaults included) are marked slow; the quick subset runs the same
commands with smaller counts, so every command's product path stays in the edit loop.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from conftest import cli_env, run_cli

EXPLAIN_FILES = ("figure.png", "attributions.npz", "settings.json")


def _assert_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr


def _assert_quiet(proc, *summary: str):
    """--quiet (one meaning in every command): no progress on stderr, the summary on stdout."""
    assert "%|" not in proc.stderr and "\r" not in proc.stderr, proc.stderr  # no progress bar
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[0].startswith("wrote "), proc.stdout
    for text in summary:
        assert text in proc.stdout, proc.stdout


def _assert_usage_error(proc, command: str, *needles: str):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"cocoa-jax {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def _png_ok(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert os.path.getsize(path) > 10_000, path  # a real figure, not an empty canvas


def _check_explain_outputs(out, n_explicands, methods, n_targets=4):
    assert sorted(os.listdir(out)) == sorted(EXPLAIN_FILES)  # and no temporary files
    _png_ok(os.path.join(out, "figure.png"))
    with open(os.path.join(out, "settings.json")) as fh:
        settings = json.load(fh)
    with np.load(os.path.join(out, "attributions.npz")) as data:
        for method in methods:
            maps = data[method]
            assert maps.shape[:2] == (n_explicands, n_targets), (method, maps.shape)
            assert maps.shape[2:4] == (32, 32), (method, maps.shape)
            assert np.all(np.isfinite(maps)) and np.abs(maps).max() > 0, method
    return settings


@pytest.mark.slow
def test_explain_exactly_as_readme(tmp_path):
    """README command 1's job: `cocoa-jax explain` with no arguments, then again (refused), with
    XLA's optimisations on, as users run it (the suite turns them off elsewhere: tests/conftest.py)."""
    proc = run_cli(["explain"], cwd=tmp_path, env=cli_env(JAX_DISABLE_MOST_OPTIMIZATIONS="0"))
    _assert_ok(proc)
    out = tmp_path / "runs" / "explain"
    _check_explain_outputs(out, 4, ("integrated_gradients", "gradient_shap", "rise"))
    before = {name: os.path.getmtime(out / name) for name in EXPLAIN_FILES}
    again = run_cli(["explain"], cwd=tmp_path)
    _assert_usage_error(again, "explain", "--overwrite")
    assert {name: os.path.getmtime(out / name) for name in EXPLAIN_FILES} == before


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_explain_small_then_overwrite(tmp_path):
    args = ["explain", "--explicands", "2", "--n-steps", "4", "--n-samples", "4", "--n-masks", "200",
            "--out", "small", "--quiet"]
    proc = run_cli(args, cwd=tmp_path)
    _assert_ok(proc)
    _assert_quiet(proc)
    assert len(proc.stdout.strip().splitlines()) == 1, proc.stdout  # the summary line only
    settings = _check_explain_outputs(tmp_path / "small", 2, ("integrated_gradients", "gradient_shap", "rise"))
    assert "integrated_gradients" in json.dumps(settings)
    # One forced host device per core, explicands one per device (at most as many devices as explicands).
    assert settings["devices"] == min(2, os.cpu_count() or 1), settings["devices"]
    with np.load(tmp_path / "small" / "attributions.npz") as data:
        first = {k: data[k] for k in data.files}
    _assert_ok(run_cli(args + ["--overwrite"], cwd=tmp_path))  # same seed: the same arrays
    with np.load(tmp_path / "small" / "attributions.npz") as data:
        for key, value in first.items():
            np.testing.assert_array_equal(data[key], value, err_msg=key)


@pytest.mark.slow
def test_localize_examples_in_the_order_shown(tmp_path):
    """docs/usecases.md's two offline examples, one after the other in one folder."""
    _assert_ok(run_cli(["localize"], cwd=tmp_path))
    _assert_ok(run_cli(["localize", "--query", "7", "--foil", "1", "4", "--out", "runs/localize_7"], cwd=tmp_path))
    for folder in ("localize", "localize_7"):
        files = sorted(os.listdir(tmp_path / "runs" / folder))
        assert files == ["attributions.npz", "figure.png", "settings.json"], (folder, files)
        _png_ok(tmp_path / "runs" / folder / "figure.png")


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_localize_small(tmp_path):
    proc = run_cli(["localize", "--explicands", "1", "--query", "7", "--foil", "1", "--foil", "4", "--n-steps", "4",
                    "--n-samples", "4", "--n-masks", "100", "--quiet", "--out", "loc"], cwd=tmp_path)
    _assert_ok(proc)
    _assert_quiet(proc, "pointing game")  # quiet keeps the summary: what was written, the scores
    assert json.loads((tmp_path / "loc" / "settings.json").read_text())["foil"] == "one, four"  # both --foil
    with np.load(tmp_path / "loc" / "attributions.npz") as data:
        assert all(np.all(np.isfinite(data[k])) for k in data.files if data[k].dtype.kind == "f")
    assert json.loads((tmp_path / "loc" / "settings.json").read_text())["devices"] == 1  # one grid


@pytest.mark.slow
def test_augmentations_default(tmp_path):
    _assert_ok(run_cli(["augmentations"], cwd=tmp_path))
    assert sorted(os.listdir(tmp_path / "runs" / "augmentations")) == [
        "attributions.npz", "figure.png", "settings.json"]


def _photos(folder, names=("astronaut", "coffee", "chelsea", "rocket")):
    """Real photographs a package ships (scikit-image), saved as files a user would have."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    paths = []
    for name in names:
        path = os.path.join(folder, f"{name}.png")
        Image.fromarray(getattr(skdata, name)()).save(path)
        paths.append(path)
    return paths


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_augmentations_on_a_converted_model_and_photos(tmp_path, converted_model_dir):
    """A converted checkpoint (random weights, real SimSiam format) on image files."""
    arch, model_dir = converted_model_dir
    images = _photos(str(tmp_path))
    # --foil given twice: both lists count (a repeated flag adds to the list).
    proc = run_cli(["augmentations", "--model", arch, "--weights", model_dir, "--images", *images[:1], "--foil",
                    images[1], "--foil", *images[2:], "--augmentations", "original,flip,erase", "--n-steps", "4", "--n-samples", "4",
                    "--n-masks", "64", "--out", "aug", "--quiet"], cwd=tmp_path)
    _assert_ok(proc)
    _assert_quiet(proc)
    with np.load(tmp_path / "aug" / "attributions.npz") as data:
        floats = [k for k in data.files if data[k].dtype.kind == "f"]
        assert floats and all(np.all(np.isfinite(data[k])) for k in floats)
    _png_ok(tmp_path / "aug" / "figure.png")
    assert json.loads((tmp_path / "aug" / "settings.json").read_text())["foil_size"] == len(images) - 1
    assert json.loads((tmp_path / "aug" / "settings.json").read_text())["devices"] == min(3, os.cpu_count() or 1)


@pytest.mark.slow  # two whole runs (~30 s); the quick subset runs the command on a converted model above
def test_augmentations_on_every_core_equals_one_device(tmp_path):
    """The views run one per device (a forced host device per core); the same run on ONE device
    gives the same maps (IG / GradientSHAP bit for bit; RISE to float32 rounding)."""
    args = ["augmentations", "--explicands", "2", "--augmentations", "original,erase", "--n-steps", "4",
            "--n-samples", "4", "--n-masks", "64", "--foil-size", "64", "--quiet"]
    _assert_ok(run_cli(args + ["--out", "every"], cwd=tmp_path))
    one_device = cli_env(devices=1)
    _assert_ok(run_cli(args + ["--out", "one"], cwd=tmp_path, env=one_device))
    devices = [json.loads((tmp_path / d / "settings.json").read_text())["devices"] for d in ("every", "one")]
    assert devices == [min(4, os.cpu_count() or 1), 1]
    with np.load(tmp_path / "every" / "attributions.npz") as every, np.load(tmp_path / "one" / "attributions.npz") as one:
        floats = [k for k in every.files if every[k].dtype.kind == "f"]
        assert {"integrated_gradients", "gradient_shap", "rise"} <= set(floats)
        for k in floats:
            scale = np.abs(one[k]).max()
            assert scale > 0 and np.all(np.isfinite(every[k])), k
            np.testing.assert_allclose(every[k], one[k], rtol=1e-5, atol=1e-6 * scale, err_msg=k)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_sweep_report_resume(tmp_path):
    """docs/sweep.md's commands on a tiny config: sweep --report, re-run (resumes), report."""
    tiny = ["--set", "seeds=[0]", "--set", "classes=[1,7]", "--set", "explicands_per_class=2",
            "--set", "corpus_size=8", "--set", "foil_size=8", "--set", "eval_steps=4",
            "--set", "probe_train_size=200", "--set", "probe_test_size=100",
            "--set", "methods.integrated_gradients.n_steps=4", "--set", "methods.gradient_shap.n_samples=4",
            "--set", "methods.rise.n_masks=64", "--no-progress"]
    run_dir = tmp_path / "runs" / "digits"
    first = run_cli(["sweep", run_dir, *tiny, "--report"], cwd=tmp_path, env=cli_env())
    _assert_ok(first)
    assert "computed 8 unit(s), 0 already finished" in first.stdout, first.stdout
    report = run_dir / "report"
    for name in ("report.md", "report.csv", "curves.png"):
        assert (report / name).is_file(), sorted(os.listdir(report))
    table = (report / "report.md").read_text()
    second = run_cli(["sweep", run_dir, *tiny], cwd=tmp_path)
    _assert_ok(second)
    assert "computed 0 unit(s), 8 already finished" in second.stdout, second.stdout
    _assert_ok(run_cli(["report", run_dir], cwd=tmp_path))
    assert (report / "report.md").read_text() == table  # regenerated from the same run: identical
    changed = run_cli(["sweep", run_dir, *tiny[:-1], "--set", "eval_steps=5"], cwd=tmp_path)
    _assert_usage_error(changed, "sweep", "eval_steps: 4 -> 5")


def test_convert_refuses_to_replace(tmp_path, converted_model_dir):
    arch, model_dir = converted_model_dir
    with open(os.path.join(model_dir, "model.json")) as fh:
        assert json.load(fh)["arch"] == arch
    proc = run_cli(["convert", arch, os.path.join(tmp_path, "missing.pth"), model_dir], cwd=tmp_path)
    _assert_usage_error(proc, "convert")


def test_version_and_python_m(tmp_path):
    import subprocess

    installed = run_cli(["--version"], cwd=tmp_path)
    _assert_ok(installed)
    module = subprocess.run([sys.executable, "-m", "cocoa_jax", "--version"], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert module.returncode == 0 and module.stdout == installed.stdout
    assert installed.stdout.startswith("cocoa-jax ")


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_explain_own_model_and_images(tmp_path, converted_model_dir):
    """docs/cli.md's 'explain your encoder': a converted checkpoint, folders and globs of photos."""
    arch, model_dir = converted_model_dir
    photos = tmp_path / "photos"
    photos.mkdir()
    paths = _photos(str(photos), names=("astronaut", "coffee", "chelsea", "rocket", "camera", "horse"))
    (tmp_path / "corpus").mkdir()
    for p in paths[1:3]:
        os.replace(p, tmp_path / "corpus" / os.path.basename(p))
    proc = run_cli(["explain", "--model", arch, "--weights", model_dir, "--images", paths[0],
                    "--corpus", "corpus", "--foil", str(photos / "[rch]*.png"), "--foil-size", "2",
                    "--methods", "integrated_gradients,rise", "--n-steps", "4", "--n-masks", "32",
                    "--out", "mine", "--quiet"], cwd=tmp_path)
    _assert_ok(proc)
    settings = _check_explain_outputs(tmp_path / "mine", 1, ("integrated_gradients", "rise"))
    assert settings["model"] == arch and len(settings["foil"]) == 2
    assert settings["devices"] == 1  # one explicand: no padded device lane
    assert [os.path.basename(p) for p in settings["corpus"]] == ["chelsea.png", "coffee.png"]
    with np.load(tmp_path / "mine" / "attributions.npz") as data:
        assert data["explicands"].shape == (1, 32, 32, 3)
        assert 0.0 <= data["explicands"].min() and data["explicands"].max() <= 1.0  # pixels, not normalised
    # Mistakes in the user's data are one line, before any work, nothing written.
    empty = tmp_path / "empty"
    empty.mkdir()
    for flags, needle in ((["--corpus", "empty"], "holds no image files"),
                          (["--corpus", "nothing_*.png"], "matches no files"),
                          (["--corpus-text", "a dog"], "image-text encoder"),
                          ([], "need a corpus")):
        bad = run_cli(["explain", "--model", arch, "--weights", model_dir, "--images", paths[0],
                       "--foil", str(photos), *flags, "--out", "bad"], cwd=tmp_path)
        _assert_usage_error(bad, "explain", needle)
        assert not (tmp_path / "bad").exists()
