"""One public face per package: `__all__` lists everything public, every method of the table is
reachable from `cocoa_jax` and `cocoa_jax.attribution`, and no compatibility aliases are left."""
import ast
import importlib
import importlib.util
import pathlib
import subprocess
import sys

import cocoa_jax
from cocoa_jax import attribution, attribution_methods, methods, metrics, models

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_method_of_the_table_is_reachable_from_both_faces():
    assert len(methods.METHODS) >= 9
    for name, method in methods.METHODS.items():
        assert method.source is not None, name
        function = method.source.__name__
        assert getattr(attribution, function) is method.source, f"cocoa_jax.attribution.{function}"
        assert getattr(cocoa_jax, function) is method.source, f"cocoa_jax.{function}"
        assert function in attribution.__all__ and function in cocoa_jax.__all__, function


def test_the_attribution_faces_export_one_set():
    names = set(attribution_methods.__all__)
    assert set(attribution.__all__) == names
    # cocoa_jax writes the names out (it must not import JAX to list them): the same set.
    assert set(cocoa_jax._ATTRIBUTION) == names
    assert len(attribution_methods.__all__) == len(names)  # no name listed twice
    for name in names:
        assert getattr(attribution, name) is getattr(attribution_methods, name), name


def test_every_listed_name_resolves():
    from cocoa_jax import sweep
    from cocoa_jax.sweep import report, studies, tables

    for module in (cocoa_jax, attribution, attribution_methods, models, metrics, sweep, report, tables):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert hasattr(studies, "extra_sections")


def test_no_compatibility_aliases():
    # attribution re-exports the package face only: no private helpers under former names.
    private = [n for n in vars(attribution) if n.startswith("_") and not n.startswith("__")]
    assert private == []
    # models has one face: registry.py (a second "public face") and files.py (a re-export) are gone.
    for gone in ("cocoa_jax.models.registry", "cocoa_jax.models.files"):
        assert importlib.util.find_spec(gone) is None, gone
    assert not hasattr(models, "_spec")
    source = (ROOT / "cocoa_jax" / "models" / "__init__.py").read_text()
    assert "former" not in source


def test_package_face_lists_methods_without_loading_jax():
    code = ("import sys, cocoa_jax; assert 'jax' not in sys.modules; "
            "assert {'lime', 'rise', 'kernel_shap', 'occlusion', 'smooth_integrated_gradients'} <= set(cocoa_jax.__all__); "
            "print(cocoa_jax.lime.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "cocoa_jax.attribution_methods.lime"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_random_reference_is_not_a_method():
    """The random baseline is a reference map generator of the evaluation, not a table entry:
    the method table (and so `methods.py`) does not need the evaluation's `metrics`."""
    assert "random" not in methods.METHODS and "random" not in methods.ATTRIBUTION_METHODS
    assert metrics.RANDOM_REFERENCE.name == "random"
    assert not any(name.startswith("cocoa_jax.metrics") or name == "cocoa_jax.metrics"
                   for name in _imports(ROOT / "cocoa_jax" / "methods.py"))
    try:
        methods.get("random")
    except ValueError as err:
        assert "unknown attribution method 'random'" in str(err)
    else:
        raise AssertionError("methods.get('random') must refuse")
