"""The sweep's optional `metrics: [...]` columns (cocoa_jax.evaluation in cocoa_jax.sweep): checked
before work, left out of the run hash when absent, scored per unit and reported with directions."""
import numpy as np
import pytest

from cocoa_jax import evaluation
from cocoa_jax.metrics import MEASURE_NAMES
from cocoa_jax.sweep import SweepConfig, report, tables
from tests.support.tiny_sweep import run_sweep, tiny_config, tiny_datasets, tiny_encoder


def test_metrics_are_checked_before_work_and_absent_ones_keep_the_hash():
    assert "metrics" not in tiny_config().result_fields()
    assert tiny_config(metrics=[]).config_hash() == tiny_config().config_hash()
    with_metrics = tiny_config(metrics=["deletion"])
    assert with_metrics.config_hash() != tiny_config().config_hash()
    assert with_metrics.result_fields()["metrics"] == {"deletion": dict(evaluation.get("deletion").options)}
    with pytest.raises(ValueError, match="config field `metrics` has 'nope'"):
        tiny_config(metrics=["nope"])
    with pytest.raises(ValueError, match="duplicates"):
        tiny_config(metrics=["deletion", "deletion"])
    with pytest.raises(TypeError, match="config field `metrics` must be a list of strings"):
        SweepConfig(metrics="deletion")
    needing = [name for name, r in evaluation.METRICS.items() if r.needs_explainer or r.needs_mask]
    for name in needing[:1]:
        with pytest.raises(ValueError, match="which the sweep cannot run"):
            tiny_config(metrics=[name])


@pytest.mark.slow  # a tiny sweep (one seed, one class, IG) with two metrics: ~10-30 s on 2 shared cores
def test_sweep_scores_metrics_per_unit_and_reports_them(tmp_path):
    config = tiny_config(metrics=["deletion", "faithfulness_correlation"], seeds=(0,), classes=(0,), eval_steps=50,
                         methods={"integrated_gradients": {"n_steps": 4}})
    run_sweep(config, str(tmp_path / "run"), encoder=tiny_encoder(), datasets=tiny_datasets(), progress=False,
              compile_cache=None)
    run = tables.open_run(str(tmp_path / "run"))
    (row,) = [r for r in run.rows.values() if r["method"] == "integrated_gradients"]
    arrays = run.load_unit(row)
    k = row["targets"].index("cocoa")
    # The deletion metric on the cocoa target IS the sweep's own deletion AUC of the ccs measure
    # (the same target, baseline, 50 steps and channel-mean ranking), computed by the other path.
    np.testing.assert_allclose(arrays["metric_deletion"][:, k], arrays["aucs"][:, k, 1, MEASURE_NAMES.index("ccs")],
                               rtol=1e-5, atol=1e-6)
    assert arrays["metric_faithfulness_correlation"].shape == (3, len(row["targets"]))
    assert np.all(np.abs(arrays["metric_faithfulness_correlation"]) <= 1 + 1e-6)
    text = tables.metrics_markdown_table(run)
    assert "| Method | Target | Deletion AUC (↓) | Faithfulness correlation (↑) |" in text
    assert text.count("**") >= 2 * 2  # a best mean per column, in bold
    paths = report.write_report(str(tmp_path / "run"))
    assert "### Metrics" in open(paths["markdown"]).read()
