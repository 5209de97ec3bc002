"""Where the PyTorch references and the benchmarks live, checked statically (no imports run).

* Every PyTorch reference is in tests/reference/ and stands alone: it imports nothing from
  benchmarks/ (the benchmarks import it, `tests.reference...`, from the repository root).
* A test imports from benchmarks/ only to test benchmark code: such tests live in tests/benchmarks/
  (the one other file is listed below); any other import of benchmarks from tests/ fails here.
* Every module path named in an import under benchmarks/ and tests/ exists (a moved file leaves no
  stale import, lazy ones inside functions included), and `python -m benchmarks` lists the suites.
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Test files outside tests/benchmarks/ that may import benchmark code, with the modules they test
# (tests/benchmarks/ tests the benchmark code and may import any of it).
BENCHMARK_TESTS = {
    "test_reference_layout.py": {"benchmarks.__main__"},
}


def imported_modules(source: str) -> set:
    """Dotted module names a source imports, anywhere in it (`from a import b` counts `a` and
    `a.b`: b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _of(names, package):
    return {n for n in names if n == package or n.startswith(package + ".")}


def _module_file(name: str) -> bool:
    return ROOT.joinpath(*name.split(".")).with_suffix(".py").is_file()


def _module_exists(name: str) -> bool:
    return _module_file(name) or ROOT.joinpath(*name.split(".")).is_dir()


def test_imported_modules_finds_every_form():
    source = ("import benchmarks.harness.sizes\nfrom benchmarks import report\n"
              "def f():\n    from tests.reference.torch_side import blur\n    import torch_reference\n")
    found = imported_modules(source)
    assert {"benchmarks.harness.sizes", "benchmarks", "benchmarks.report", "tests.reference.torch_side",
            "tests.reference.torch_side.blur", "torch_reference"} <= found
    assert _of(found, "benchmarks") == {"benchmarks.harness.sizes", "benchmarks", "benchmarks.report"}


def test_references_stand_alone():
    files = sorted((ROOT / "tests" / "reference").glob("*.py"))
    assert {"torch_models.py", "torch_side.py", "official_pipeline.py", "resnet.py", "clip.py"} <= {
        f.name for f in files}
    for f in files:
        assert not _of(imported_modules(f.read_text()), "benchmarks"), f"{f.name} imports benchmarks"


def test_tests_import_benchmarks_only_to_test_them():
    for f in sorted((ROOT / "tests").rglob("*.py")):
        rel = f.relative_to(ROOT / "tests").as_posix()
        names = imported_modules(f.read_text())
        assert not _of(names, "torch_reference") and not _of(names, "tests.torch_reference"), rel
        used = {n for n in _of(names, "benchmarks") if _module_file(n)}
        if not rel.startswith("benchmarks/"):
            assert used <= BENCHMARK_TESTS.get(rel, set()), f"{rel} imports {sorted(used)} from benchmarks"


def test_every_imported_project_module_exists():
    files = [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    for f in files:
        for name in imported_modules(f.read_text()):
            for package in ("benchmarks", "tests.reference"):
                if name.startswith(package + "."):
                    parent = name.rsplit(".", 1)[0]  # `from a import b`: b may be a name in a
                    assert _module_exists(name) or _module_exists(parent), f"{f.relative_to(ROOT)}: {name}"


def test_driver_lists_and_refuses(capsys):
    from benchmarks import __main__ as driver

    suites = driver.suites()
    on_disk = {f.stem for f in (ROOT / "benchmarks" / "suites").glob("*.py") if not f.stem.startswith(("rates_", "_"))}
    assert set(suites) == on_disk and "rates" in suites and "protocol" in suites
    assert driver.main([]) == 0 and "protocol" in capsys.readouterr().out
    assert driver.main(["no_such_suite"]) == 2
    assert "unknown suite 'no_such_suite'" in capsys.readouterr().err
