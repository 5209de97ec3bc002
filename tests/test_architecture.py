"""docs/architecture.md's layers, checked from the imports: no module imports one of a higher layer,
and the package has no import circle. Read from the source with `ast` (nothing is imported)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "cocoa_jax"

# The table of docs/architecture.md, by module-name prefix (longest prefix wins).
LAYERS = {
    "_checks": 0, "batching": 0, "files": 0, "interrupt": 0, "phases": 0, "records": 0,
    "compile_cache": 0, "data.pixels": 0,
    "targets": 1, "baselines": 1, "attribution_methods": 1, "attribution": 1, "sparsity": 1,
    "correlation": 1,
    "methods": 2, "metrics": 2, "models": 2,
    "meshes": 3, "distributed": 3, "explicand_program": 3, "pipeline": 3, "cost": 3, "text": 3, "text.html": 4, "text.study": 4, "evaluation": 3,
    "sweep": 4, "usecases": 4, "data": 4, "training": 4, "probe": 4, "viz": 4,
    "commands": 5, "cli": 5, "__main__": 5,
}


def _modules():
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        out[name] = path
    return out


def _imports(name, path, names):
    """cocoa_jax modules imported by `name` (the package face `cocoa_jax` itself left out: it is lazy
    and read only for `__version__`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            bases = [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:max(0, len(package.split(".")) - node.level + 1)] if package else []
                base = ".".join(["cocoa_jax", *up, *([base] if base else [])])
            bases = [(base, tuple(a.name for a in node.names))]
        else:
            continue
        for base, members in bases:
            if not base.startswith("cocoa_jax."):
                continue
            module = base[len("cocoa_jax."):]
            for member in members or ("",):
                candidate = f"{module}.{member}" if member else module
                found.add(candidate if candidate in names else module)
    return {m for m in found if m in names and m != name}


def _layer(name):
    keys = [k for k in LAYERS if name == k or name.startswith(k + ".")]
    assert keys, f"cocoa_jax.{name} is in no layer of docs/architecture.md"
    return LAYERS[max(keys, key=len)]


MODULES = _modules()
EDGES = {name: _imports(name, path, MODULES) for name, path in MODULES.items() if name}


def test_every_module_has_a_layer():
    for name in EDGES:
        _layer(name)


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{a} (layer {_layer(a)}) -> {b} (layer {_layer(b)})"
                    for a, targets in EDGES.items() for b in targets if _layer(b) > _layer(a))
    assert not upward, "imports against docs/architecture.md's layers:\n" + "\n".join(upward)


def test_no_import_circle():
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(EDGES.get(node, ())):
            if state.get(nxt) == "open":
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(EDGES):
        if name not in state:
            visit(name, [name])


def test_the_import_reader_sees_known_imports():
    """The reader finds imports of each form (so the checks above have edges to check)."""
    assert "batching" in EDGES["meshes"]                          # from cocoa_jax import batching
    assert "attribution_methods._common" in EDGES["attribution_methods.rise"]  # relative or absolute
    assert "commands.errors" in EDGES["cli"]                      # from cocoa_jax.commands.errors import ...
    assert sum(len(t) for t in EDGES.values()) > 100


def test_test_files_have_unique_basenames():
    """pytest's default import mode cannot collect two test files of one basename (tests/ and
    tests/product/ have no __init__.py): the whole suite stops at collection, although each file
    passes alone."""
    tests = pathlib.Path(__file__).resolve().parent
    seen = {}
    for path in sorted(tests.rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename"
        seen[path.name] = path
