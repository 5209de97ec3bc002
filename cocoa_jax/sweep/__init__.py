"""The paper's Section 4.1 evaluation protocol as a resumable, multi-target sweep.

    from cocoa_jax.sweep import SweepConfig, run_sweep
    result = run_sweep(SweepConfig(), "runs/digits")       # resumes if interrupted
    from cocoa_jax.sweep import report; report.write_report("runs/digits")

Modules: `config` (what to run, hashed), `store` (run directory, atomic writes, integrity),
`runner` (units = seed x corpus class x method), `report` (tables, CIs, plots),
`bench` (the speedup of sharing passes across targets).
"""
from cocoa_jax.sweep.config import SweepConfig, digits_reduced
from cocoa_jax.sweep.runner import SweepResult, Unit, run_sweep

__all__ = ["SweepConfig", "SweepResult", "Unit", "digits_reduced", "run_sweep"]
