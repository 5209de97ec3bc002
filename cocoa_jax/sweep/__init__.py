"""The paper's Section 4.1 evaluation protocol as a resumable, sharded, multi-host sweep.

    from cocoa_jax.sweep import SweepConfig, run_sweep
    result = run_sweep(SweepConfig(), "runs/digits")       # resumes if interrupted
    from cocoa_jax.sweep import report; report.write_report("runs/digits")

Modules: `config` (what to run, hashed, validated), `inputs` (encoder, datasets, fingerprints,
each seed's samples), `programs` (the compiled, sharded encode / attribute / evaluate
programs), `runner` (units = seed x corpus class x method, grouped over devices, split over
hosts, progress), `store` (run directory, atomic writes, integrity), `report` (tables, CIs, plots),
`studies` (size sensitivity figures/tables, model randomisation section, Gini sparsity).
"""
from cocoa_jax.sweep.config import SweepConfig, digits_reduced
from cocoa_jax.sweep.runner import SweepResult, Unit, run_sweep

__all__ = ["SweepConfig", "SweepResult", "Unit", "digits_reduced", "run_sweep"]
