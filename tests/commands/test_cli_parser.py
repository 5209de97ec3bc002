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


def _imported_modules(path):
    """Every module a Python file imports (absolute names; `from . import x` resolved in commands)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the commands package (level 1) or cocoa_jax (level 2)
                base = ".".join(["cocoa_jax", "commands"][:3 - node.level] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def test_commands_never_import_the_dispatcher():
    """cli.py dispatches the commands: it imports them (and their UsageError), never the reverse."""
    import pathlib

    import cocoa_jax.commands

    folder = pathlib.Path(cocoa_jax.commands.__file__).parent
    sources = sorted(folder.glob("*.py"))
    assert len(sources) >= len(cli.COMMANDS)
    upward = {p.name: sorted(n for n in _imported_modules(p) if n == "cocoa_jax.cli" or n.startswith("cocoa_jax.cli."))
              for p in sources}
    assert not any(upward.values()), upward
    assert cli.UsageError is cocoa_jax.commands.errors.UsageError  # the dispatcher catches the commands' error
    # the check itself sees an upward import, in every spelling
    for line in ("from cocoa_jax.cli import UsageError", "import cocoa_jax.cli", "from cocoa_jax import cli",
                 "from .. import cli", "def f():\n    from cocoa_jax.cli import fail"):
        assert "cocoa_jax.cli" in _imported_modules_of_text(line), line


def _imported_modules_of_text(text):
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "m.py"
        path.write_text(text)
        return _imported_modules(path)


# ------------------------------------------------------------------ flags with one meaning each

def _command_parsers():
    """{command: its parser with every argument}, as `cocoa-jax COMMAND ...` builds it."""
    return {name: cli.build_parser([name])._command_parsers[name] for name in cli.COMMANDS}


def _options(parser):
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_every_flag_and_argument_of_every_command_has_help():
    import argparse

    for name, parser in _command_parsers().items():
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help and action.help is not argparse.SUPPRESS and action.help.strip(), \
                f"cocoa-jax {name} {'/'.join(action.option_strings) or action.dest} has no help"


def test_every_quiet_flag_has_the_one_meaning():
    from cocoa_jax.commands import quiet

    having = {name for name, parser in _command_parsers().items()
              if any("--quiet" in a.option_strings for a in _options(parser))}
    assert {"explain", "localize", "augmentations", "train-digits", "train-digits-clip"} <= having
    for name in having:
        action = next(a for a in _options(_command_parsers()[name]) if "--quiet" in a.option_strings)
        assert action.help == quiet.HELP, name


def test_repeated_list_flags_add_up_in_every_command():
    """`--corpus A --corpus B` keeps both, for every option that takes a list, in every command."""
    checked = 0
    for name, parser in _command_parsers().items():
        positionals = {"sweep": ["run"], "report": ["run"], "convert": ["resnet18", "ckpt.pth", "out"]}.get(name, [])
        for action in _options(parser):
            if action.nargs not in ("+", "*"):
                continue
            flag = action.option_strings[-1]
            args = cli.parse([name, *positionals, flag, "a", "b", flag, "c"])
            assert getattr(args, action.dest) == ["a", "b", "c"], (name, flag, getattr(args, action.dest))
            checked += 1
    assert checked >= 9  # explain 5, augmentations 2, localize 2


def test_explain_corpus_twice_is_both():
    args = cli.parse(["explain", "--images", "x.png", "--corpus", "A/", "--corpus", "B/"])
    assert args.corpus == ["A/", "B/"] and args.images == ["x.png"]


def test_images_is_paths_wherever_it_appears():
    for name, parser in _command_parsers().items():
        for action in _options(parser):
            if "--images" in action.option_strings:
                assert action.nargs == "+" and action.type is None, name  # paths, never a count


def test_localize_count_of_grids_is_explicands(capsys):
    assert cli.parse(["localize", "--explicands", "3"]).explicands == 3
    assert cli.main(["localize", "--images", "4", "--out", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cocoa-jax localize: error: --images") and "--explicands 4" in err and "\n" not in err


def test_both_trainers_replace_the_shipped_weights_with_one_flag(capsys):
    for name in ("train-digits", "train-digits-clip"):
        assert cli.parse([name, "--replace-shipped"]).replace_shipped is True
    # The old name of train-digits-clip still works, with one warning line (then the same checks).
    assert cli.main(["train-digits-clip", "--overwrite-shipped", "--out", "elsewhere"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == ("cocoa-jax train-digits-clip: warning: --overwrite-shipped is deprecated; "
                        "use --replace-shipped"), lines
    assert lines[1].startswith("cocoa-jax train-digits-clip: error: --replace-shipped") and len(lines) == 2


@pytest.mark.parametrize("argv, expected", [
    (["explain", "--model", "resnet-18"], "got 'resnet-18' (did you mean resnet18?)"),
    (["explain", "--model", "dinov2"], "got 'dinov2' (did you mean dinov2_vit or dino_vit?)"),
    (["explain", "--model", "ResNet50"], "(did you mean resnet50?)"),
])
def test_unknown_architecture_suggests_the_close_ones(capsys, argv, expected):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cocoa-jax explain: error: --model must be one of ") and "\n" not in err
    assert err.endswith(expected), err


def test_unknown_architecture_far_from_every_name_suggests_nothing(capsys):
    assert cli.main(["explain", "--model", "zzzz"]) == 2
    assert "did you mean" not in capsys.readouterr().err


def test_convert_bad_architecture_choice_suggests(capsys):
    line = _parse_error(capsys, ["convert", "resnet-18", "ckpt.pth", "out"])
    assert line.startswith("cocoa-jax convert: error: argument arch: invalid choice: 'resnet-18'")
    assert line.endswith(" (did you mean resnet18?)"), line


def test_models_load_suggests_too():
    from cocoa_jax.models import architectures

    with pytest.raises(ValueError, match=r"got 'resnet-50' \(did you mean resnet50\?\)"):
        architectures.spec_of("resnet-50")


def test_sweep_help_lists_every_config_field_with_its_defaults(capsys):
    import dataclasses
    import json

    from cocoa_jax.sweep.config import FIELD_TYPES, SweepConfig, digits_reduced

    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    table = out.split("config fields (--set FIELD=JSON", 1)[1]
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line.startswith("  ")}
    reduced, paper = digits_reduced().to_dict(), SweepConfig().to_dict()
    fields = [f.name for f in dataclasses.fields(SweepConfig)]
    assert list(rows) == fields  # every field, in the table's order, nothing else
    for name in fields:
        shown = json.dumps(reduced[name], separators=(",", ":"))
        assert rows[name].split(None, 1)[1].startswith(shown), rows[name]
        paper_shown = json.dumps(paper[name], separators=(",", ":"))
        assert (f"--paper: {paper_shown}" in rows[name]) == (paper_shown != shown), rows[name]
        assert rows[name].endswith(f"({FIELD_TYPES[name][1]})"), rows[name]


def test_sweep_unknown_encoder_suggests(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "run"), "--set", 'encoder="resnet-18"']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cocoa-jax sweep: error: config field `encoder` 'resnet-18'") and "\n" not in err
    assert "(did you mean resnet18?)" in err and not (tmp_path / "run").exists()
