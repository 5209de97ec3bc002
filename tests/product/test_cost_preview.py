"""The installed `cocoa-jax explain` prints the cost preview before the work: passes per method
equal to what the run's recorded options count (`cost.method_passes`, itself checked against the
passes the programs run in tests/test_cost.py), an estimate and the expected peak memory."""
import json
import re

import pytest

from cocoa_jax import cost
from tests.product.conftest import run_cli


@pytest.mark.slow
def test_explain_prints_the_cost_before_the_work(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["explain", "--explicands", "2", "--corpus-size", "10", "--foil-size", "20",
                    "--methods", "integrated_gradients,rise,kernel_shap", "--n-steps", "3", "--n-masks", "20",
                    "--option", "kernel_shap.n_samples=10", "--option", "kernel_shap.superpixel=8",
                    "--budget", "30", "--out", out], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.replace("\r", "\n")
    lines = [line for line in err.splitlines() if line.startswith("cost: ")]
    first_progress = min((i for i, line in enumerate(err.splitlines()) if "pass/s" in line or "pass]" in line),
                         default=len(err.splitlines()))
    assert err.splitlines().index(lines[-1]) < first_progress, "the preview comes before the work"
    settings = json.loads((out / "settings.json").read_text())
    shape = (32, 32, 1)
    titles = {"integrated_gradients": "IG", "rise": "RISE", "kernel_shap": "KernelSHAP"}
    for name, title in titles.items():
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in settings["method_options"][name].items()}
        options.pop("feature_mask", None)
        expected = cost.method_passes(name, options, shape)
        kinds = ([f"{expected.forward} forward"] if expected.forward else []) + (
            [f"{expected.gradient} gradient"] if expected.gradient else [])
        line = next(line for line in lines if line.startswith(f"cost: {title}: "))
        assert line.startswith(f"cost: {title}: {' + '.join(kinds)} passes per explicand x 2, ~"), line
    assert (expected.forward, expected.gradient) == (10, 0)  # KernelSHAP: 10 coalitions, anchors included
    summary = next(line for line in lines if " in all " in line)
    assert re.search(r"expected peak memory ~[0-9.]+ (MB|GB)$", summary), summary
    assert lines[-2] == "cost: batch all perturbed inputs per encoder call"
    # 30 s is far more than these counts take: nothing scaled, and the record keeps the flags' counts.
    assert lines[-1].startswith("cost: budget 30 s: fits, no count changed (the encoder passes as estimated")
    assert settings["budget_s"] == 30 and settings["method_options"]["rise"]["n_masks"] == 20
