"""`cocoa-jax report` reads and verifies a run once, and its tables equal a fresh read's."""
import os
import shutil

import pytest

from cocoa_jax.sweep import report, store


@pytest.mark.slow  # a whole tiny sweep + report
def test_write_report_reads_and_hashes_each_unit_once(tmp_path, monkeypatch, tiny_sweep_run):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_sweep_run[0], run_dir)  # a whole tiny sweep, run once per session (conftest)
    # A separate read, for comparison (report.md states the arrows' meaning once, in its header).
    fresh = report.markdown_table(run_dir, ("corpus_majority_prob",), directions_note=False)
    calls = {"read_rows": 0, "sha256": 0, "load": 0}
    original_rows, original_sha, original_load = store.RunStore.read_rows, store.sha256_file, store.RunStore.load_unit

    def read_rows(self, *args, **kwargs):
        calls["read_rows"] += 1
        return original_rows(self, *args, **kwargs)

    def sha256_file(path):
        calls["sha256"] += 1
        return original_sha(path)

    def load_unit(self, row):
        calls["load"] += 1
        return original_load(self, row)

    monkeypatch.setattr(store.RunStore, "read_rows", read_rows)
    monkeypatch.setattr(store, "sha256_file", sha256_file)
    monkeypatch.setattr(store.RunStore, "load_unit", load_unit)
    paths = report.write_report(run_dir)
    units = len(report.Run(run_dir).rows)
    calls_after_one_read = dict(calls)
    assert calls_after_one_read["read_rows"] == 2  # write_report's one read + the Run just above
    assert calls_after_one_read["sha256"] == 2 * units
    assert calls_after_one_read["load"] <= units    # each unit's arrays loaded at most once
    with open(paths["markdown"]) as fh:
        assert fresh in fh.read()
    assert os.path.isfile(paths["plot"])


def test_rows_follow_the_one_row_definition(tmp_path, tiny_sweep_run):
    """Rows written by the runner carry exactly UnitRow's fields; a row lacking one is not trusted."""
    import json

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_sweep_run[0], run_dir)  # a private copy: this test damages a row
    run = report.Run(run_dir)
    for row in run.rows.values():
        assert set(row) <= set(store.ROW_FIELDS)
        assert set(store._REQUIRED_ROW_FIELDS) <= set(row)
    results = [p for p in os.listdir(run_dir) if p.startswith("results.")][0]
    path = os.path.join(run_dir, results)
    lines = open(path).read().splitlines()
    damaged = json.loads(lines[0])
    del damaged["auc"]
    with open(path, "w") as fh:
        fh.write("\n".join([json.dumps(damaged)] + lines[1:]) + "\n")

    with pytest.warns(UserWarning, match="lacks auc"):
        assert damaged["unit"] not in report.Run(run_dir).rows
