"""sweep/ untangled: every module imports on its own (no circle), the report reads a run without
the runner (no JAX devices, programs or multi-host code), and the random reference is told apart
in one place (`SweepConfig.reference_of`), not by name tests scattered over sweep/."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEP = ROOT / "cocoa_jax" / "sweep"
MODULES = sorted(p.stem for p in SWEEP.glob("*.py") if p.stem != "__init__")
# What a report must not load: the runner and its programs, the explicand map, meshes and hosts.
RUN_TIME = ("cocoa_jax.sweep.runner", "cocoa_jax.sweep.programs", "cocoa_jax.sweep.inputs", "cocoa_jax.pipeline",
            "cocoa_jax.explicand_program", "cocoa_jax.meshes", "cocoa_jax.distributed", "cocoa_jax.sharding")


def _module_file(name: str) -> pathlib.Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: pathlib.Path) -> set[str]:
    """cocoa_jax modules `path` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cocoa_jax")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cocoa_jax"):
            for a in node.names:  # `from cocoa_jax import x`: x may be a module
                out.add(f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}") else node.module)
    return out


def _imported_any(path: pathlib.Path) -> set[str]:
    """Every module name `path` imports (any package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is not None:
            todo += sorted(_imported(path))
            parent = name.rpartition(".")[0]
            if parent:  # importing a submodule runs its package's __init__
                todo.append(parent)
    return seen


def test_report_does_not_import_the_runner_statically():
    reached = _reachable("cocoa_jax.sweep.report")
    assert {"cocoa_jax.sweep.tables", "cocoa_jax.sweep.studies", "cocoa_jax.viz"} <= reached  # the walk works
    assert not reached & set(RUN_TIME), sorted(reached & set(RUN_TIME))


def test_no_import_circle_between_sweep_modules():
    edges = {m: {n.rpartition(".")[2] for n in _imported(SWEEP / f"{m}.py")
                 if n.startswith("cocoa_jax.sweep.")} for m in MODULES}

    def visit(node, path):
        for nxt in edges.get(node, ()):
            assert nxt not in path, f"import circle: {' -> '.join(path + [nxt])}"
            visit(nxt, path + [nxt])

    for module in MODULES:
        visit(module, [module])


_IMPORT_ALONE = """
import importlib, sys
import jax, numpy  # third-party modules stay loaded: only cocoa_jax's import order can make a circle
run_time = sys.argv[2:]
for name in sys.argv[1].split(","):
    for loaded in [m for m in sys.modules if m == "cocoa_jax" or m.startswith("cocoa_jax.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        print(f"FAIL {name}: {type(err).__name__}: {err}")
        continue
    print(name, *[m for m in run_time if m in sys.modules])
"""


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_each_sweep_module_imports_alone():
    """Each module imported first, with no cocoa_jax module loaded (a circle shows only for some
    first imports; one interpreter, cocoa_jax's modules dropped between imports); the report, its
    tables, studies, store, config and the package itself load none of the run-time modules."""
    names = ["cocoa_jax.sweep"] + [f"cocoa_jax.sweep.{m}" for m in MODULES]
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALONE, ",".join(names), *RUN_TIME], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = {line.split()[0]: set(line.split()[1:]) for line in out.stdout.splitlines()}
    assert not [line for line in out.stdout.splitlines() if line.startswith("FAIL")], out.stdout
    assert set(loaded) == set(names)
    for module in ("cocoa_jax.sweep", "cocoa_jax.sweep.report", "cocoa_jax.sweep.tables", "cocoa_jax.sweep.studies",
                   "cocoa_jax.sweep.store", "cocoa_jax.sweep.config"):
        assert not loaded[module], f"{module} loads {sorted(loaded[module])}"
    assert "cocoa_jax.sweep.programs" in loaded["cocoa_jax.sweep.runner"]  # the check sees what loads


def test_studies_draw_through_viz_only():
    for module in MODULES:
        source = (SWEEP / f"{module}.py").read_text()
        imports = {n for n in _imported_any(SWEEP / f"{module}.py")}
        assert not {n for n in imports if n.split(".")[0] == "matplotlib"}, f"sweep/{module}.py draws itself"


def test_the_reference_is_named_in_one_place():
    """No `== "random"` / RANDOM name tests in sweep/: units ask `config.reference_of(method)`."""
    for module in MODULES:
        source = (SWEEP / f"{module}.py").read_text()
        for needle in ('"random"', "'random'", "RANDOM_METHOD", "methods.RANDOM"):
            assert needle not in source, f"sweep/{module}.py: {needle}"
    from cocoa_jax.metrics import RANDOM_REFERENCE
    from cocoa_jax.sweep.config import SweepConfig

    config = SweepConfig(targets=("cocoa", "corpus"))
    assert config.method_names[-1] == "random" and config.reference_of("random") is RANDOM_REFERENCE
    assert config.reference_of("rise") is None
    assert config.unit_targets("random") == ("random",) and config.unit_targets("rise") == ("cocoa", "corpus")
    assert config.unit_columns("random") == [("random", None)]
    off = SweepConfig(targets=("cocoa",), include_random=False)
    assert "random" not in off.method_names and off.reference_of("random") is None


def test_reference_program_draws_the_random_attribution_per_key():
    import jax
    import numpy as np

    from cocoa_jax.metrics import RANDOM_REFERENCE, random_attribution
    from cocoa_jax.sweep.programs import local_mesh, reference_program

    keys = jax.random.split(jax.random.key(3), 4)
    xs = np.zeros((4, 6, 5, 1), np.float32)
    program = reference_program(RANDOM_REFERENCE, local_mesh(1))
    maps = np.asarray(program(None, xs, np.zeros((4, 1, 2), np.float32), keys))
    assert maps.shape == (4, 1, 6, 5)
    for i in range(4):  # an independent draw: the same key, the same U[0, 1) map
        np.testing.assert_array_equal(maps[i, 0], np.asarray(jax.random.uniform(keys[i], (6, 5))))
        np.testing.assert_array_equal(maps[i, 0], np.asarray(random_attribution(keys[i], (6, 5, 1))))
