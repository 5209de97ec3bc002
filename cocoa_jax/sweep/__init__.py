"""The paper's Section 4.1 evaluation protocol as a resumable, sharded, multi-host sweep.

    from cocoa_jax.sweep import SweepConfig, run_sweep
    result = run_sweep(SweepConfig(), "runs/digits")       # resumes if interrupted
    from cocoa_jax.sweep import report; report.write_report("runs/digits")

Modules: `config` (what to run, hashed, validated), `inputs` (encoder, datasets, fingerprints,
each seed's samples), `programs` (the compiled, sharded encode / attribute / evaluate
programs), `runner` (units = seed x corpus class x method, grouped over devices, split over
hosts, progress), `store` (run directory, atomic writes, integrity), `tables` (a run read once, the
table rows and cells, CIs), `report` (report.md/csv, curves), `studies` (size sensitivity tables,
model randomisation sections, Gini sparsity); every figure is drawn by `cocoa_jax.viz`.
"""
# Loaded on first use (PEP 562): importing one module of the package (`sweep.report`, `sweep.config`)
# does not load the runner, its programs and the devices.
_EXPORTS = {"SweepConfig": "config", "Unit": "config", "digits_reduced": "config", "plan_units": "config",
            "SweepResult": "runner", "run_sweep": "runner"}
__all__ = ["SweepConfig", "SweepResult", "Unit", "digits_reduced", "plan_units", "run_sweep"]


def __getattr__(name: str):
    import importlib

    if name not in _EXPORTS:
        raise AttributeError(f"module 'cocoa_jax.sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cocoa_jax.sweep.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
