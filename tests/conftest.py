"""Test-session settings: compiled programs go to a fresh cache of this session, not the
user's ~/.cache/cocoa-jax (the commands' default), so tests neither read nor leave entries there.

A command run in-process (`cocoa_jax.cli.main([...])`) turns JAX's persistent cache on for the
whole process, as it does for a command. Left on, every later test of that process wrote each
program it compiled (hundreds of tiny eager-op programs per module) into the session cache, and
JAX scans the whole cache directory on every write (the size limit's LRU check), so the suite's
cost grew with the square of the entry count. After each test the cache settings are put back
as they were when collection finished (off, unless the user's JAX_* variables say otherwise);
commands, in-process or subprocesses, still share the session cache.
"""
import os
import sys
import tempfile

import pytest

os.environ.setdefault("COCOA_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="cocoa-jax-test-cache-"))

# XLA's backend optimisations (LLVM -O2 and its costly passes) are set to their cheapest for the
# suite, in this process and every command it starts: tests compile hundreds of small programs and
# run each a few times, so optimising costs more than it saves (measured 2026-12-07:
# tests/test_pipeline.py 51 -> 29 CPU seconds). Only codegen changes, not the operations, so results
# differ from an optimised build by float rounding at most, which every comparison's tolerance
# covers; tests/product/test_commands.py::test_explain_exactly_as_readme runs README's main job with
# the optimisations on, as users run it. JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the whole suite
# optimised.
FAST_COMPILE = {"JAX_DISABLE_MOST_OPTIMIZATIONS": os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")}
os.environ.update(FAST_COMPILE)
if "jax" in sys.modules:  # a plugin imported JAX before this file: its flag was read already
    sys.modules["jax"].config.update("jax_disable_most_optimizations", FAST_COMPILE["JAX_DISABLE_MOST_OPTIMIZATIONS"] != "0")

_CACHE_OPTIONS = {"jax_enable_compilation_cache": "JAX_ENABLE_COMPILATION_CACHE",
                  "jax_compilation_cache_dir": "JAX_COMPILATION_CACHE_DIR",
                  "jax_persistent_cache_min_compile_time_secs": "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                  "jax_persistent_cache_min_entry_size_bytes": "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
                  "jax_compilation_cache_max_size": "JAX_COMPILATION_CACHE_MAX_SIZE"}
_START_ENV = {var: os.environ.get(var) for var in _CACHE_OPTIONS.values()}
_START_CONFIG = {}


def pytest_collection_finish(session):
    """The settings before any test ran (test modules import JAX while being collected)."""
    jax = sys.modules.get("jax")
    if jax is not None:
        _START_CONFIG.update({name: getattr(jax.config, name) for name in _CACHE_OPTIONS})


@pytest.fixture(autouse=True)
def _jax_persistent_cache_back_to_the_start_after_each_test():
    yield
    for var, value in _START_ENV.items():
        if os.environ.get(var) != value:
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    jax = sys.modules.get("jax")
    if jax is None:
        return
    start = _START_CONFIG or {"jax_compilation_cache_dir": None}
    changed = {name: value for name, value in start.items() if getattr(jax.config, name) != value}
    if changed:
        for name, value in changed.items():
            jax.config.update(name, value)
        from jax._src import compilation_cache

        if compilation_cache.is_initialized():
            compilation_cache.reset_cache()


@pytest.fixture
def optimized_xla():
    """XLA's optimisations on for one test (the suite turns them off, see the top of this file), for
    tests whose run time is large convolutions (at -O0 their gradients ran 5x slower), and for
    gradients of a max over values XLA recomputes: JAX's rule sends the gradient where the input
    equals the max, and at -O0 two fusions of the same expression may round differently, so the
    equality fails (measured: BERT's max pooling, gradient 98% off)."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="session")
def shared_sweep(tmp_path_factory):
    """run(config) -> (run_dir, result): a sweep of `config` on test_sweep's tiny encoder and data, run ONCE
    per session for every test that reads that run (a whole tiny sweep costs ~10-30 s on 2 cores).
    Tests may add a report to it; a test that changes units or rows works on a copy
    (shutil.copytree)."""
    import json

    from tests.support import tiny_sweep as test_sweep
    from cocoa_jax.sweep import run_sweep

    runs = {}

    def run(config):
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in runs:
            run_dir = tmp_path_factory.mktemp("shared_sweep") / "run"
            result = run_sweep(config, str(run_dir), encoder=test_sweep.tiny_encoder(),
                               datasets=test_sweep.tiny_datasets(), progress=False, compile_cache=None)
            runs[key] = (run_dir, result)
        return runs[key]

    return run


@pytest.fixture(scope="session")
def tiny_sweep_run(shared_sweep):
    """(run_dir, result) of ONE uninterrupted sweep of test_sweep.tiny_config()."""
    from tests.support import tiny_sweep as test_sweep

    return shared_sweep(test_sweep.tiny_config())
