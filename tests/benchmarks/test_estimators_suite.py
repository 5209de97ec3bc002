"""benchmarks/suites/estimators.py: passes-to-quality interpolation and a quick run of the suite."""
import pytest


def test_passes_to_reach_interpolates_in_log_passes():
    from benchmarks.suites.estimators import passes_to_reach
    assert passes_to_reach([(100, 0.5), (400, 0.9)], 0.7) == pytest.approx(200.0)
    assert passes_to_reach([(100, 0.8), (400, 0.9)], 0.7) == 100.0
    assert passes_to_reach([(100, 0.5), (400, 0.6)], 0.7) is None


@pytest.mark.slow
def test_benchmark_quick_smoke(tmp_path):
    from benchmarks.suites import estimators
    out_md = tmp_path / "est.md"
    out = estimators.main(["--smoke", "--out", str(out_md)])  # --quick, one pass count per estimator
    text = out_md.read_text()
    assert "| rise |" in text and "| gradient_shap |" in text and "| ig |" in text
    assert (tmp_path / "est.json").exists() and (tmp_path / "est.png").stat().st_size > 1000
    summary = out["benches"][0]["methods"]["rise"]["summary"]
    assert summary[0]["estimator"] == "default" and summary[0]["rate"] > 0
    with pytest.raises(SystemExit):  # refuses to overwrite
        estimators.main(["--smoke", "--out", str(out_md)])

