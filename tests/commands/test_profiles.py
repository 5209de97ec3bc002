"""Estimator profiles (`cocoa_jax.methods.PROFILES`): `paper` is the signature defaults bit for
bit, `fast` the measured cheaper estimators; explicit options win; the sweep's run hash."""
from __future__ import annotations

import pytest

from cocoa_jax import methods
from cocoa_jax.sweep.config import SweepConfig, digits_reduced


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_paper_is_the_signature_defaults(name):
    assert methods.profile_options("paper", name) == {}
    assert methods.resolved_options(name, methods.with_profile("paper", name)) == methods.defaults(name)


def test_fast_options():
    assert methods.profile_options("fast", "rise") == {"centered": True, "n_masks": 416}
    assert methods.profile_options("fast", "integrated_gradients") == {"n_steps": 16}
    assert methods.profile_options("fast", "gradient_shap") == {}  # no cheaper option measured as good
    resolved = methods.resolved_options("rise", methods.with_profile("fast", "rise"))
    assert resolved == {**methods.defaults("rise"), "centered": True, "n_masks": 416}
    for name, options in methods.PROFILES["fast"].items():  # every option a real, valid option
        methods.check_options(name, options)
        methods.check_values(name, options, (8, 8, 1))


def test_explicit_options_override_the_profile():
    assert methods.with_profile("fast", "rise", {"n_masks": 2000}) == {"centered": True, "n_masks": 2000}
    assert methods.with_profile("fast", "rise", {"centered": False}) == {"centered": False, "n_masks": 416}
    assert methods.with_profile("paper", "rise", {"n_masks": 7}) == {"n_masks": 7}
    out = methods.profile_options("fast", "rise")
    out["n_masks"] = 1  # a copy: the table is not changed through it
    assert methods.PROFILES["fast"]["rise"]["n_masks"] == 416


def test_unknown_profile_or_method():
    with pytest.raises(ValueError, match="unknown estimator profile 'quick'"):
        methods.profile_options("quick", "rise")
    with pytest.raises(ValueError, match="unknown attribution method"):
        methods.profile_options("fast", "no_such_method")


def _without(config: SweepConfig, field: str) -> dict:
    data = config.to_dict()
    data.pop(field)
    return data


@pytest.mark.parametrize("make", [SweepConfig, digits_reduced])
def test_sweep_hash_unchanged_without_the_field(make):
    config = make()
    assert config.estimators == "paper"
    old_style = SweepConfig.from_dict(_without(config, "estimators"))  # a config.json from before the field
    assert old_style.config_hash() == config.config_hash()
    assert "estimators" not in config.result_fields()
    # The methods run (and hashed) are still the signature defaults updated with the config's own options.
    for name in config.methods:
        assert config.method_options(name) == methods.resolved_options(name, config.methods[name])


def test_sweep_fast_changes_the_hash_and_the_options():
    paper = SweepConfig(methods={"integrated_gradients": {}, "gradient_shap": {}, "rise": {"n_masks": 1000}})
    fast = SweepConfig.from_dict({**paper.to_dict(), "estimators": "fast"})
    assert fast.config_hash() != paper.config_hash()
    assert fast.result_fields()["estimators"] == "fast"
    assert fast.method_options("integrated_gradients")["n_steps"] == 16
    assert fast.method_options("gradient_shap") == paper.method_options("gradient_shap")
    rise = fast.method_options("rise")
    assert rise["centered"] is True and rise["n_masks"] == 1000  # the config's explicit count wins
    fast.check_method_values((8, 8, 1))


def test_sweep_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="config field `estimators`"):
        SweepConfig(estimators="quick")
    with pytest.raises(TypeError, match="config field `estimators`"):
        SweepConfig(estimators=1)


@pytest.mark.parametrize("command", ["explain", "localize", "augmentations"])
def test_image_commands_default_to_the_fast_profile_under_the_flags_given(command):
    """No --estimators: the image commands resolve to methods.COMMAND_PROFILE (`fast`); a method
    flag wins over the profile; `--estimators paper` sets nothing (the signature defaults)."""
    from cocoa_jax.cli import parse
    from cocoa_jax.commands import method_flags

    assert methods.COMMAND_PROFILE == "fast" and methods.DEFAULT_PROFILE == "paper"
    names = ("integrated_gradients", "gradient_shap", "rise")

    def resolved(*flags):
        args = parse([command, *flags])
        options = method_flags.options(args, names, (32, 32, 3), estimators=method_flags.profile(args))
        return method_flags.profile(args), options

    profile, options = resolved()
    assert profile == "fast"
    assert options == {"integrated_gradients": {"n_steps": 16}, "gradient_shap": {},
                       "rise": {"centered": True, "n_masks": 416}}
    assert resolved("--n-masks", "64")[1]["rise"] == {"centered": True, "n_masks": 64}
    assert resolved("--estimators", "paper") == ("paper", {name: {} for name in names})


def test_profile_values_are_checked_and_a_refusal_names_the_profile():
    """A profile's option that the image cannot take is refused naming `--estimators`."""
    from cocoa_jax.cli import parse
    from cocoa_jax.commands import method_flags
    from cocoa_jax.commands.errors import UsageError

    args = parse(["explain", "--methods", "rise", "--n-masks", "1"])
    # One mask cannot be centred (the profile's centered=True needs >= 2): refused, and the message
    # says where centered=True came from (no flag set it); with the paper profile it is accepted.
    with pytest.raises(UsageError, match=r"--n-masks.*>= 2.*--estimators fast sets centered=True\)$"):
        method_flags.options(args, ("rise",), (32, 32, 3), estimators="fast")
    assert method_flags.options(args, ("rise",), (32, 32, 3), estimators="paper") == {"rise": {"n_masks": 1}}


def test_text_mode_refuses_an_explicit_profile(tmp_path, capsys):
    from cocoa_jax.cli import main

    status = main(["explain", "--text", "a seven", "--targets", "label_free", "--estimators", "fast",
                   "--out", str(tmp_path / "o")])
    assert status == 2 and not (tmp_path / "o").exists()
    assert "error: --estimators fast is for images" in capsys.readouterr().err
