"""Command-line mistakes are answered by the command's own parser: one line
`cocoa-jax CMD: error: ...` on stderr, exit status 2, a close match suggested, nothing run."""
from __future__ import annotations

import pytest

from cocoa_jax import cli


def _parse_error(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no usage block, no traceback
    assert out == ""
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["explain", "--n-stpes", "10"], "cocoa-jax explain: error: unrecognized argument --n-stpes (did you mean --n-steps?)"),
    (["explain", "--n-stpes=10"], "cocoa-jax explain: error: unrecognized argument --n-stpes (did you mean --n-steps?)"),
    (["explain", "--ovewrite"], "cocoa-jax explain: error: unrecognized argument --ovewrite (did you mean --overwrite?)"),
    (["localize", "--n-mask", "5", "--qurey", "7"],
     "cocoa-jax localize: error: unrecognized argument --qurey (did you mean --query?)"),
    (["sweep", "run", "--max-unts", "3"], "cocoa-jax sweep: error: unrecognized argument --max-unts (did you mean --max-units?)"),
    (["report", "run", "--measure", "ccs", "--outt", "x"],
     "cocoa-jax report: error: unrecognized argument --outt (did you mean --out?)"),
    (["train-digits", "--step", "3", "--bach-size", "8"],
     "cocoa-jax train-digits: error: unrecognized argument --bach-size (did you mean --batch-size?)"),
])
def test_unrecognized_flag_names_the_command_and_the_closest_option(capsys, argv, expected):
    assert _parse_error(capsys, argv) == expected


def test_unrecognized_without_a_close_match_points_to_help(capsys):
    line = _parse_error(capsys, ["explain", "--zzzzzz"])
    assert line == "cocoa-jax explain: error: unrecognized argument --zzzzzz (see cocoa-jax explain --help)"
    line = _parse_error(capsys, ["explain", "stray"])
    assert line == "cocoa-jax explain: error: unrecognized argument stray (see cocoa-jax explain --help)"


@pytest.mark.parametrize("argv, expected", [
    (["explain", "--n-steps", "abc"], "cocoa-jax explain: error: argument --n-steps: invalid int value: 'abc'"),
    (["explain", "--stdev", "x"], "cocoa-jax explain: error: argument --stdev: invalid float value: 'x'"),
    (["train-digits", "--lr", "fast"], "cocoa-jax train-digits: error: argument --lr: invalid float value: 'fast'"),
    (["sweep", "run", "--devices", "two"], "cocoa-jax sweep: error: argument --devices: invalid int value: 'two'"),
    (["explain", "--n-steps"], "cocoa-jax explain: error: argument --n-steps: expected one argument"),
])
def test_wrong_type_or_missing_value(capsys, argv, expected):
    assert _parse_error(capsys, argv) == expected


@pytest.mark.parametrize("argv, command, missing", [
    (["sweep"], "sweep", "run_dir"),
    (["report"], "report", "run_dir"),
    (["convert", "simsiam_cifar_resnet18"], "convert", "checkpoint, out_dir"),
])
def test_missing_positionals(capsys, argv, command, missing):
    line = _parse_error(capsys, argv)
    assert line == f"cocoa-jax {command}: error: the following arguments are required: {missing}"


def test_bad_choice_is_the_commands_error(capsys):
    line = _parse_error(capsys, ["convert", "resnet51", "ckpt.pth", "out"])
    assert line.startswith("cocoa-jax convert: error: argument arch: invalid choice: 'resnet51'")


@pytest.mark.parametrize("argv, hint", [
    (["explian"], " (did you mean explain?)"),
    (["localise"], " (did you mean localize?)"),
    (["train-digit", "--steps", "3"], " (did you mean train-digits?)"),
    (["frobnicate"], ""),
])
def test_unknown_command(capsys, argv, hint):
    line = _parse_error(capsys, argv)
    assert line.startswith(f"cocoa-jax: error: unknown command {argv[0]!r}{hint}; commands: explain, "), line
    if not hint:
        assert "did you mean" not in line


def test_missing_command(capsys):
    line = _parse_error(capsys, [])
    assert line.startswith("cocoa-jax: error: missing COMMAND, one of explain, ") and "cocoa-jax --help" in line


def test_top_level_help_is_for_users(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "dispatcher" not in out and "cocoa_jax.commands" not in out
    assert "COCOA" in out and "cocoa-jax COMMAND --help" in out
    for name in cli.COMMANDS:
        assert f"    {name}" in out, name


def test_command_help_still_works(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["report", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "usage: cocoa-jax report" in out
    assert "regenerated from" in out and "Ctrl-C" in out  # the overwrite policy is stated


def test_ctrl_c_in_process_is_one_line_and_130(capsys, monkeypatch):
    from cocoa_jax.commands import report

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run", interrupted)
    assert cli.main(["report", "somewhere"]) == 130
    err = capsys.readouterr().err
    assert err == "cocoa-jax report: interrupted (Ctrl-C)\n"


def test_command_modules_keep_the_contract():
    import importlib

    for name, (module_name, _) in cli.COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name
