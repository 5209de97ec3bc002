"""The evaluation-steps suite: its Simpson rule against closed forms and SciPy, and its --quick run."""
import json
import math

import numpy as np
import pytest
import scipy.integrate

from benchmarks.suites import eval_steps


def _grid(n_intervals: int, uniform: bool) -> np.ndarray:
    if uniform:
        return np.linspace(0.0, 1.0, n_intervals + 1)
    steps = np.random.default_rng(n_intervals).uniform(0.5, 1.5, n_intervals)
    return np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])


def _curves(x: np.ndarray, *polys) -> np.ndarray:
    """(S + 1, M) values of M polynomials (coefficients, highest first) at x."""
    return np.stack([np.polyval(p, x) for p in polys], axis=-1)


def _exact(p) -> float:  # integral over [0, 1] of the polynomial p
    return float(np.polyval(np.polyint(p), 1.0) - np.polyval(np.polyint(p), 0.0))


def test_simpson_exact_on_cubics_on_a_uniform_even_grid():
    cubic, other = [4.0, -3.0, 2.0, 0.5], [-1.0, 0.0, 3.0, -2.0]
    for n in (2, 8, 50):
        got = eval_steps.simpson_auc(_curves(_grid(n, True), cubic, other), _grid(n, True))
        np.testing.assert_allclose(got, [_exact(cubic), _exact(other)], rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [3, 8, 11, 50])
def test_simpson_exact_on_quadratics_on_any_grid(n):
    quad = [3.0, -2.0, 0.25]
    x = _grid(n, False)
    got = eval_steps.simpson_auc(_curves(x, quad)[None], x)  # a leading batch axis
    assert got.shape == (1, 1)
    assert math.isclose(got[0, 0], _exact(quad), abs_tol=1e-12)
    # the trapezoid rule is not exact there (the comparison has something to measure)
    y = np.polyval(quad, x)
    assert abs(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) - _exact(quad)) > 1e-5


@pytest.mark.parametrize("n", [4, 7, 12, 25])
def test_simpson_matches_scipy_on_irregular_grids(n):
    x = _grid(n, False)
    y = np.random.default_rng(7).normal(size=(3, n + 1, 2))
    want = scipy.integrate.simpson(y, x=x, axis=-2)
    np.testing.assert_allclose(eval_steps.simpson_auc(y, x), want, rtol=1e-10, atol=1e-12)


def test_simpson_rejects_bad_input():
    with pytest.raises(ValueError, match="fractions"):
        eval_steps.simpson_auc(np.zeros((2, 1)), [0.0, 1.0])
    with pytest.raises(ValueError, match="curves"):
        eval_steps.simpson_auc(np.zeros((4, 1)), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        eval_steps.simpson_auc(np.zeros((3, 1)), [0.0, 0.5, 0.5])


def test_t_interval_against_scipy():
    values = np.random.default_rng(3).normal(size=(9, 2))
    low, high = eval_steps.t_interval(values)
    for j in range(2):
        want = scipy.stats.t.interval(0.95, 8, loc=values[:, j].mean(), scale=scipy.stats.sem(values[:, j]))
        np.testing.assert_allclose([low[j], high[j]], want, rtol=1e-12)


def _row(steps, rule, inside=True, same=True):
    return dict(steps=steps, rule=rule, inside_ci=inside, ranking_same=same)


def test_decide_needs_every_larger_count_to_pass():
    steps = [8, 12, 16, 50]
    rows = [_row(s, r) for s in steps for r in eval_steps.RULES]
    rows += [_row(12, "simpson", same=False), _row(8, "trapezoid", inside=False)]  # one failing measure each
    d = eval_steps.decide(rows, steps)
    assert d["passing"] == {"trapezoid": [12, 16, 50], "simpson": [8, 16, 50]}
    assert d["smallest_qualifying"] == {"trapezoid": 12, "simpson": 16}  # simpson's 8 passes below a failure
    assert d["chosen"] == {"steps": 12, "rule": "trapezoid"}
    tie = eval_steps.decide([_row(s, r) for s in steps for r in eval_steps.RULES], steps)
    assert tie["chosen"] == {"steps": 8, "rule": "trapezoid"}  # a tie goes to the sweep's own rule
    none = eval_steps.decide([_row(s, r, same=s == 50) for s in steps for r in eval_steps.RULES], steps)
    assert none["chosen"] is None and none["smallest_qualifying"] == {"trapezoid": 50, "simpson": 50}


@pytest.mark.slow
def test_quick_run_writes_finite_numbers(tmp_path):
    out_path = tmp_path / "RESULTS_quick.md"
    out = eval_steps.main(["--quick", "--out", str(out_path)])
    saved = json.loads((tmp_path / "RESULTS_quick.json").read_text())
    assert saved["rows"] == out["rows"]
    # every measure x kind x compared step count x rule, each with finite errors
    assert len(out["rows"]) == len(eval_steps.metrics.MEASURE_NAMES) * 2 * len(out["steps"]) * 2
    for row in out["rows"]:
        assert all(math.isfinite(row[k]) and row[k] >= 0 for k in
                   ("mean_abs_err", "max_abs_err", "cell_mean_abs_err", "cell_max_abs_err"))
        assert row["cells"] == len(out["methods"]) * 4
    # the CI setting against itself: every cell inside its own CI
    assert all(r["inside_ci"] for r in out["rows"] if r["steps"] == out["ci_steps"] and r["rule"] == "trapezoid")
    assert "| ccs | insertion | 4 | simpson |" in out_path.read_text()
    assert all(math.isfinite(r["ci_half_min"]) for r in out["rows"])
    # --render re-decides a saved run and writes the same table
    table = out_path.read_text()
    eval_steps.main(["--render", str(tmp_path / "RESULTS_quick.json")])
    assert out_path.read_text() == table
