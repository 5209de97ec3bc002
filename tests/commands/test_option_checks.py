"""Method option VALUES are checked before any work, from one place (`methods.check_values`),
and sweep `--set` overrides merge (`sweep.config.apply_overrides`)."""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import pytest

from cocoa_jax import cli, methods
from cocoa_jax.sweep import config as sweep_config

SHAPE = (32, 32, 1)

# option -> invalid values (each alone, on top of the defaults); extra combinations below.
BAD_VALUES = {
    "n_steps": [0, -3, 2.5, True],
    "method": ["simpson", 3],
    "n_samples": [0, -1, 1.5],
    "stdev": [-0.1, math.nan, math.inf, "x", False],
    "antithetic": ["yes", 1, None],
    "stratified_alpha": ["yes", 0],
    "n_masks": [0, -5, 10.0],
    "grid_size": [[0, 4], [40, 40], [4], [4, 4, 4], "4x4", [True, 4]],
    "keep_prob": [0.0, -0.5, 2.0, 1.0001, math.nan, True],
    "centered": ["no", 1],
    "sampler": ["sobol", 1],
    "superpixel": [0, -2, 33, 2.5],
    "feature_mask": [[[0, 1], [1, 0]], "mask"],
    "efficient": ["yes", 1],
    "alpha": [-0.1, math.nan, "x"],
    "kernel_width": [0.0, -1.0, math.inf],
    "window": [[0, 4], [40, 40], [4], "4x4"],
    "stride": [[0, 4], [4]],
    "tolerance": [-0.1, math.nan, math.inf, "x", True],
    "round_size": [0, -1, 2.5, True],
    "removal": ["tokens", 3],
    "head_fusion": ["median", 1],
}
COMBINATIONS = [
    ("integrated_gradients", {"method": "riemann_left", "n_steps": 1}, "n_steps"),
    ("integrated_gradients", {"method": "riemann_trapezoid", "n_steps": 1}, "n_steps"),
    ("gradient_shap", {"antithetic": True, "n_samples": 5}, "n_samples"),
    ("smoothgrad", {"antithetic": True, "n_samples": 3}, "n_samples"),
    ("rise", {"antithetic": True, "n_masks": 7}, "n_masks"),
    ("rise", {"centered": True, "n_masks": 1}, "n_masks"),
    ("rise", {"tolerance": 0.1, "sampler": "stratified"}, "tolerance"),
    ("gradient_shap", {"tolerance": 0.1, "stratified_alpha": True}, "tolerance"),
    ("smoothgrad", {"tolerance": 0.1, "antithetic": True, "n_samples": 4}, "tolerance"),
]
CASES = [(name, {option: value}, option) for name in methods.METHODS for option in methods.defaults(name)
         for value in BAD_VALUES[option]] + COMBINATIONS


def test_every_option_of_every_method_has_bad_values():
    options = {o for name in methods.METHODS for o in methods.defaults(name)}
    assert options <= set(BAD_VALUES), f"add bad values for {sorted(options - set(BAD_VALUES))}"


@pytest.mark.parametrize("name, options, option", CASES, ids=[f"{n}-{o}-{v!r}" for n, v, o in CASES])
def test_bad_value_is_refused_naming_the_option(name, options, option):
    with pytest.raises((ValueError, TypeError)) as info:
        methods.check_values(name, options, SHAPE, names=f"methods.{name}")
    assert f"methods.{name}.{option}" in str(info.value), str(info.value)


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_bad_batch_size_is_refused(name):
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="--batch-size"):
            methods.check_values(name, {}, SHAPE, batch_size=bad, names={"batch_size": "--batch-size"})


GOOD = [
    ("integrated_gradients", {}), ("integrated_gradients", {"n_steps": 2, "method": "riemann_trapezoid"}),
    ("integrated_gradients", {"n_steps": 1}),  # Gauss-Legendre with one point is a valid rule
    ("gradient_shap", {"n_samples": 4, "stdev": 0.0, "antithetic": True, "stratified_alpha": True}),
    ("rise", {}), ("rise", {"n_masks": 2, "grid_size": [32, 32], "keep_prob": 1.0, "centered": True,
                            "antithetic": True, "sampler": "stratified"}),
    ("rise", {"grid_size": (1, 1), "keep_prob": 0.001}),
    ("smoothgrad", {"n_samples": 1, "stdev": 2}), ("vanilla_gradients", {}),
    ("kernel_shap", {"n_samples": 20, "superpixel": 8, "efficient": True}),
    ("lime", {"n_samples": 20, "superpixel": 4, "alpha": 0.0, "kernel_width": 0.5}),
    ("occlusion", {"window": (8, 8), "stride": (4, 4)}), ("occlusion", {}),
    ("smooth_integrated_gradients", {"n_samples": 2, "n_steps": 4, "stdev": 0.1}),
]


@pytest.mark.parametrize("name, options", GOOD)
def test_valid_values_pass(name, options):
    assert methods.check_values(name, options, SHAPE, batch_size=3) == options


def test_the_random_reference_is_not_a_method_to_check():
    """The evaluation's random reference (`metrics.RANDOM_REFERENCE`) has no options: it is not in
    the method table, and its name is refused like any unknown method's."""
    with pytest.raises(ValueError, match=r"unknown attribution method 'random'; expected one of \["):
        methods.check_values("random", {}, SHAPE, batch_size=3)


def test_grid_size_is_checked_against_the_real_image_size():
    methods.check_values("rise", {"grid_size": [40, 40]}, (224, 224, 3))
    with pytest.raises(ValueError, match=r"`--grid-size` \(40, 40\) must not exceed the image size \(32, 32\)"):
        methods.check_values("rise", {"grid_size": [40, 40]}, SHAPE, names={"grid_size": "--grid-size"})


def test_cost_of_the_value_check_is_small():
    for name in methods.METHODS:  # warm: the first trace imports and builds jax internals
        methods.check_values(name, {}, SHAPE)
    t0 = time.perf_counter()
    for name in methods.METHODS:
        methods.check_values(name, {}, (224, 224, 3))
    seconds = time.perf_counter() - t0
    print(f"check_values, all {len(methods.METHODS)} methods with their defaults at 224 px: {seconds * 1e3:.0f} ms")


# ----------------------------------------------------------------------------- --set overrides

def test_dotted_override_changes_one_option_and_keeps_the_other_methods():
    base = sweep_config.digits_reduced().to_dict()
    out = sweep_config.apply_overrides(base, ["methods.rise.n_masks=2000", "seeds=[0]"])
    assert out["methods"] == {**base["methods"], "rise": {"n_masks": 2000}}
    assert out["seeds"] == [0] and base["methods"]["rise"] == {"n_masks": 1000}  # base untouched
    out = sweep_config.apply_overrides(base, ["methods.smoothgrad.n_samples=8", 'methods.rise={"keep_prob":0.3}'])
    assert out["methods"]["smoothgrad"] == {"n_samples": 8} and out["methods"]["rise"] == {"keep_prob": 0.3}
    assert out["methods"]["integrated_gradients"] == {"n_steps": 20}
    # A --config file without the field starts from the field's default.
    out = sweep_config.apply_overrides({"seeds": [0]}, ["methods.rise.n_masks=8"])
    assert set(out["methods"]) == {"integrated_gradients", "gradient_shap", "rise"}


@pytest.mark.parametrize("item, expected", [
    ("methods.rise.n_mask=3", "unknown key 'n_mask' in `methods.rise`; valid: n_masks"),
    ("methods.foo.n=1", "unknown key 'foo' in `methods`; valid: integrated_gradients"),
    ("seeds.0=1", "`seeds` is not an object"),
    ("nope=1", "unknown field 'nope'; valid: encoder"),
    ("methods..x=1", "expects FIELD=JSON"),
    ("no_equals_sign", "expects FIELD=JSON"),
])
def test_bad_override_paths_are_refused(item, expected):
    with pytest.raises(ValueError) as info:
        sweep_config.apply_overrides(sweep_config.digits_reduced().to_dict(), [item])
    assert expected in str(info.value) and item.partition("=")[0] in str(info.value)


def _sweep_args(run_dir, *sets):
    return argparse.Namespace(run_dir=str(run_dir), config=None, paper=False, set=list(sets))


def test_build_config_merges_and_reports_a_replaced_methods_table(tmp_path, capsys):
    from cocoa_jax.commands.sweep import build_config

    config = build_config(_sweep_args(tmp_path / "run", "methods.rise.n_masks=2000"))
    assert config.methods["rise"] == {"n_masks": 2000} and "integrated_gradients" in config.methods
    assert capsys.readouterr().err == ""
    config = build_config(_sweep_args(tmp_path / "run", 'methods={"rise":{"n_masks":2000}}'))
    assert list(config.methods) == ["rise"]
    err = capsys.readouterr().err
    assert "methods: rise (n_masks 2000); not run: integrated_gradients, gradient_shap" in err, err


def test_sweep_help_example_uses_the_dotted_form(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    assert "--set methods.rise.n_masks=2000" in " ".join(capsys.readouterr().out.split())


TINY = ["seeds=[0]", "classes=[0]", "explicands_per_class=1", "corpus_size=4", "foil_size=4", "eval_steps=4",
        "probe_train_size=40", "probe_test_size=20", 'methods={"rise":{"n_masks":8}}', "include_random=false"]


def _run_sweep(run_dir, *sets):
    args = ["sweep", str(run_dir), "--compile-cache", "none", "--no-progress"]
    for item in (*TINY, *sets):
        args += ["--set", item]
    return cli.main(args)


@pytest.mark.parametrize("bad", ["methods.rise.n_masks=-5", "methods.rise.keep_prob=2.0",
                                 "methods.rise.grid_size=[40,40]", "methods.integrated_gradients.method=\"simpson\""])
def test_refused_sweep_writes_nothing(tmp_path, capsys, monkeypatch, bad):
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored after the test
    run_dir = tmp_path / "run"
    assert _run_sweep(run_dir, bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[-1].startswith("cocoa-jax sweep: error: ")
    assert f"methods.{bad.split('.')[1]}.{bad.split('.')[2].split('=')[0]}" in err[-1]
    assert not run_dir.exists()


@pytest.mark.slow  # runs the corrected sweep
def test_refused_sweep_leaves_the_run_dir_as_it_was_and_the_corrected_command_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    assert _run_sweep(run_dir, "methods.rise.n_masks=-5") == 2
    assert "`methods.rise.n_masks` must be a positive integer, got -5" in capsys.readouterr().err
    assert sorted(os.listdir(run_dir)) == ["notes.txt"]
    t0 = time.perf_counter()
    assert _run_sweep(run_dir, "methods.rise.n_masks=8") == 0, capsys.readouterr().err
    print(f"tiny corrected sweep: {time.perf_counter() - t0:.1f} s")
    with open(run_dir / "config.json") as fh:
        stored = json.load(fh)["identity"]["config"]
    assert stored["methods"]["rise"]["n_masks"] == 8


def test_run_sweep_from_python_refuses_bad_values_before_writing(tmp_path):
    """The library entry point checks option values too, before config.json exists."""
    from cocoa_jax.sweep import run_sweep

    config = sweep_config.digits_reduced().replace(methods={"rise": {"n_masks": -5}})
    with pytest.raises(ValueError, match=r"methods\.rise\.n_masks"):
        run_sweep(config, str(tmp_path / "run"), progress=False, compile_cache=None)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- sweep encoder fields
# What a researcher sets after `cocoa-jax convert`, checked from model.json before any work
# (`sweep.config.check_encoder_fields`); one case goes through the installed command in
# tests/product/test_machine_faults.py.

def _model_dir(root, arch, **config):
    """A model directory as `cocoa-jax convert` writes it, as far as the checks read it: model.json."""
    from cocoa_jax import models

    directory = root / arch
    directory.mkdir()
    meta = {"format": models.FORMAT_VERSION, "arch": arch,
            "config": {**models.ARCHITECTURES[arch].default_config, **config}, "notes": []}
    (directory / models.METADATA_FILE).write_text(json.dumps(meta))
    return str(directory)


def _encoder_config(**fields):
    return sweep_config.digits_reduced().replace(**fields)


def test_encoder_fields_refused_with_the_field_to_set(tmp_path):
    resnet18 = _model_dir(tmp_path, "resnet18")
    (tmp_path / "empty").mkdir()
    cases = [
        (dict(encoder="resnet18"), ["`encoder_dir` is required with encoder 'resnet18'", "--set encoder_dir=DIR",
                                    "cocoa-jax convert resnet18"]),
        (dict(encoder="resnet18", encoder_dir=resnet18),
         ["`dataset` 'digits' holds 32x32 grey images", "takes 224x224x3", "--set dataset=folder:<root>",
          "--set dataset=tfds:<name> --set data_dir=DIR"]),
        (dict(encoder="resnet34", encoder_dir=resnet18),
         [f"`encoder_dir` {resnet18!r} holds a converted 'resnet18' model", "not 'resnet34'",
          "--set encoder=resnet18"]),
        (dict(encoder="digits", encoder_dir=resnet18), ["holds a converted 'resnet18' model", "drop `encoder_dir`"]),
        (dict(encoder="resnet18", encoder_dir=str(tmp_path / "empty")), ["holds no model.json", "cocoa-jax convert"]),
        (dict(encoder="resnet18", encoder_dir=resnet18, dataset="folder:/data", preprocess="CIFAR"),
         ["`preprocess` 'CIFAR' crops images to 32x32", "takes 224x224x3", "--set preprocess=model"]),
        (dict(encoder="resnet18", encoder_dir=resnet18, dataset="folder:/data", preprocess="imagenet"),
         ["`preprocess` 'imagenet' is not 'model', 'none' or one of", "IMAGENET"]),
    ]
    for fields, fragments in cases:
        with pytest.raises(ValueError) as info:
            sweep_config.check_encoder_fields(_encoder_config(**fields))
        for fragment in fragments:
            assert fragment in str(info.value), (fields, str(info.value))


def test_encoder_fields_that_fit_pass(tmp_path):
    cifar = _model_dir(tmp_path, "simsiam_cifar_resnet18")   # 32x32x3: the digits in 3 channels
    vit = _model_dir(tmp_path, "dino_vit", image_size=32, patch_size=8, pos_grid=4)  # size from model.json
    resnet18 = _model_dir(tmp_path, "resnet18")
    for fields in (dict(), dict(encoder="simsiam_cifar_resnet18", encoder_dir=cifar),
                   dict(encoder="dino_vit", encoder_dir=vit),
                   dict(encoder="resnet18", encoder_dir=resnet18, dataset="folder:/data"),
                   dict(encoder="resnet18", encoder_dir=resnet18, dataset="folder:/data", preprocess="IMAGENET"),
                   dict(encoder="resnet18", encoder_dir=resnet18, dataset="tfds:imagenette", data_dir="/d",
                        preprocess="none")):
        sweep_config.check_encoder_fields(_encoder_config(**fields))


def test_sweep_command_refuses_an_encoder_mistake_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    resnet18 = _model_dir(tmp_path, "resnet18")
    run_dir = tmp_path / "run"
    assert cli.main(["sweep", str(run_dir), "--set", "encoder=resnet18", "--set", f"encoder_dir={resnet18}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cocoa-jax sweep: error: config field `dataset` 'digits'"), err
    assert not run_dir.exists()
