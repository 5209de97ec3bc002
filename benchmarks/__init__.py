"""cocoa-jax benchmarks: `python -m benchmarks` lists them, `python -m benchmarks NAME [ARGS]` runs one.

Laid out by role: `suites/` (the timed benchmarks, each also `python -m benchmarks.suites.NAME`),
`harness/` (what the suites share: models, timing, roofline, sizes), `official/` (runners of the
official COCOA code), `report.py` (the rates suite's results file), `results/` (RESULTS_* files).
The PyTorch references they compare against live in `tests/reference/` (the tests check them).
"""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")  # where every suite writes by default
