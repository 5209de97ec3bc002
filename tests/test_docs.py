"""The documentation stays true: every command line README and docs show parses with the
command's own parser, and every method of the table is documented."""
import pathlib
import re
import shlex

import pytest

from cocoa_jax import cli, methods

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_lines(text: str):
    """Lines of fenced code blocks and of 4-space indented code, continuation lines joined."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or line.startswith("    "):
            lines.append(line.strip())
    joined, buffer = [], ""
    for line in lines:
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        joined.append(buffer + line)
        buffer = ""
    return joined


def _commands():
    out = []
    for path in DOCS:
        for line in _code_lines(path.read_text()):
            for part in re.split(r"&&|;", line):
                part = part.split(" #", 1)[0].strip()
                if part.startswith("cocoa-jax "):
                    out.append((path.relative_to(ROOT).as_posix(), part))
    return out


COMMANDS = _commands()


def test_the_docs_show_commands():
    shown = {shlex.split(line)[1] for _, line in COMMANDS}
    assert {"explain", "sweep", "report", "localize", "augmentations", "convert"} <= shown, shown


@pytest.mark.parametrize("where, line", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_every_documented_command_line_parses(where, line):
    words = shlex.split(line.replace("[", "").replace("]", ""))[1:]
    words = [w for w in words if w != "..."]
    if any(re.fullmatch(r"[A-Z][A-Z_]*", w) for w in words):
        pytest.skip("a syntax template with placeholders (ARCH, RUN_DIR, ...)")
    try:
        args = cli.parse(words)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `{line}` does not parse (exit {exit_.code})")
    assert args.command == words[0]


def test_every_method_of_the_table_is_documented():
    text = (ROOT / "docs" / "methods.md").read_text()
    for name, method in methods.METHODS.items():
        assert f"`{name}`" in text, f"docs/methods.md does not list {name}"
        assert method.summary, f"method {name} has no one-line summary"
