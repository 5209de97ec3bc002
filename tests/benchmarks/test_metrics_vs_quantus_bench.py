"""Smoke test of the metrics-vs-Quantus suite: tiny model, one explicand, two metrics, results written."""
import json
import math

import pytest

pytest.importorskip("quantus")


@pytest.mark.slow
def test_quick_run_writes_rows(tmp_path):
    from benchmarks.suites import metrics_vs_quantus

    rows = metrics_vs_quantus.main(["--quick", "--n", "1", "--metrics", "sparseness,region_perturbation_morf",
                                    "--ks", "2", "--out", str(tmp_path)])
    assert [(r["metric"], r["k"]) for r in rows] == [("sparseness", 1), ("region_perturbation_morf", 2)]
    for r in rows:
        assert r["ours_per_s"] > 0 and r["quantus_per_s"] > 0
        assert math.isclose(r["ratio"], r["ours_per_s"] / r["quantus_per_s"], rel_tol=1e-9)
    assert rows[0]["roofline"] is None and 0 < rows[1]["roofline"] < 10
    record = json.loads((tmp_path / "RESULTS_metrics_vs_quantus.json").read_text())
    assert record["rows"] == rows and record["n"] == 1 and "load_avg_1min" in record
    table = (tmp_path / "RESULTS_metrics_vs_quantus.md").read_text()
    assert table.count("| region_perturbation_morf |") == 1


def test_unknown_metric_is_refused(capsys):
    from benchmarks.suites import metrics_vs_quantus

    with pytest.raises(SystemExit) as info:
        metrics_vs_quantus.main(["--quick", "--metrics", "sparseness,nope"])
    assert info.value.code == 2
    assert "unknown metric(s) ['nope']" in capsys.readouterr().err
