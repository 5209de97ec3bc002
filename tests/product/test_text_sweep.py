"""`cocoa-jax text-sweep` as users run it (one subprocess, a small config): the Markdown and CSV tables,
the per-caption AUCs and the settings written; the table's means and 95% intervals recomputed here from
the per-caption AUCs (scipy's t quantile, not the sweep's table); IG's COCOA maps beat the random
reference on insertion. Usage errors in-process: exit-2 messages naming the flag, nothing written."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import run_cli


@pytest.mark.slow
def test_text_sweep_writes_the_table_with_intervals_over_seeds(tmp_path):
    from scipy import stats

    out = tmp_path / "out"
    done = run_cli(["text-sweep", "--seeds", "0,1", "--classes", "3,7", "--template", "a handwritten {digit}",
                    "--template", "this is a photo of a {digit}", "--methods", "integrated_gradients,occlusion",
                    "--n-steps", "8", "--targets", "cocoa,label_free", "--measures", "ccs,rep_shift",
                    "--corpus-size", "20", "--foil-size", "40", "--out", out, "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table.count("\n| IG | ") == 2 and table.count("| Occlusion | ") == 2 and "| Random |  |" in table
    assert "t over 2 seeds" in table and "**" in table
    settings = json.loads((out / "settings.json").read_text())
    assert settings["captions"][0][0] in ("a handwritten three", "a handwritten 3") and len(settings["captions"][1]) == 4
    aucs = np.load(out / "aucs.npz")
    assert aucs["integrated_gradients__cocoa"].shape == (2, 4, 2, 2)      # seeds, captions, kinds, measures
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == (2 * 2 + 1) * 2 * 2
    for row in rows:
        key = f"{row['method']}__{row['target'] or 'none'}"
        per_seed = aucs[key][:, :, ("insertion", "deletion").index(row["kind"]), ("ccs", "rep_shift").index(row["measure"])]
        per_seed = per_seed.mean(axis=1)
        half = stats.t.ppf(0.975, df=1) * per_seed.std(ddof=1) / np.sqrt(2)
        assert float(row["mean"]) == pytest.approx(per_seed.mean(), abs=2e-6), row
        assert float(row["ci95"]) == pytest.approx(half, rel=1e-3, abs=2e-6), row
    ig = aucs["integrated_gradients__cocoa"][:, :, 0, 0].mean()
    assert ig > aucs["random__none"][:, :, 0, 0].mean() + 0.05                  # ccs insertion: IG above random


def test_text_sweep_usage_errors(tmp_path, capsys):
    from cocoa_jax import cli

    for argv, message in ((["--seeds", "a"], "--seeds must be comma-separated integers"),
                          (["--classes", "3,12"], "--classes` must be digits 0..9"),
                          (["--template", "a {digit} dog"], "'dog'"),
                          (["--template", "a handwritten seven"], "one {digit} slot"),
                          (["--measures", "corpus_majority_prob"], "--measures"),
                          (["--methods", "rise", "--n-steps", "4"], "--n-steps"),
                          (["--corpus-size", "0"], "--corpus-size` must be a positive integer")):
        status = cli.main(["text-sweep", *argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("cocoa-jax text-sweep: error: ") and message in err, (argv, err)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("mine")                                 # --out checked before any work
    assert cli.main(["text-sweep", "--out", str(tmp_path / "file" / "out")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
