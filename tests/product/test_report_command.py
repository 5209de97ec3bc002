"""The installed `cocoa-jax sweep` + `cocoa-jax report` on the shipped digits encoder: report.md's
header names what ran, and every measure's columns carry its own direction."""
from __future__ import annotations

import json
import re

import jax
import pytest

import cocoa_jax

from conftest import cli_env, run_cli, tiny_sweep_flags


@pytest.mark.slow  # ~40-70 s on 2 shared cores (probe training, compiles in two subprocesses)
def test_report_header_and_directions_on_a_real_run(tmp_path):
    tiny = tiny_sweep_flags(seeds=[0, 1], corpus_size=5)
    run_dir = tmp_path / "runs" / "digits"
    sweep = run_cli(["sweep", run_dir, *tiny], cwd=tmp_path, env=cli_env())
    assert sweep.returncode == 0, f"stdout:\n{sweep.stdout}\nstderr:\n{sweep.stderr}"
    proc = run_cli(["report", run_dir, "--measures", "rep_shift,ccs"], cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert ("| representation shift ins. (↓) | representation shift del. (↑) | "
            "contrastive corpus similarity ins. (↑) | contrastive corpus similarity del. (↓) |") in proc.stdout
    assert proc.stdout.count("**") >= 2 * 4  # one best mean (at least) per column, in bold

    text = (run_dir / "report" / "report.md").read_text()
    fields = dict(re.findall(r"^- \*\*(.+?)\*\*: (.*)$", text, flags=re.M))
    stored = json.loads((run_dir / "config.json").read_text())
    assert fields["Encoder"] == "`digits`, weights shipped with cocoa-jax"
    assert fields["Architecture"] == "`digits`, input 32x32x1"
    assert fields["Weights hash"].startswith(f"`{stored['identity']['encoder']}`")
    assert fields["Dataset"].startswith("`digits`; corpus split `train`, explicand split `test`")
    assert fields["Methods"].startswith("IG (`integrated_gradients`: method=gausslegendre, n_steps=3)")
    assert fields["Seeds"] == "0, 1 (2)" and fields["Classes"] == "3 (1)"
    assert fields["Sizes"] == "corpus 5, foil 8, 2 explicands per class, images 32x32 px"
    assert fields["Run hash"] == f"`{stored['config_hash']}`; 4 of 4 units finished"
    assert fields["Date"] == f"run started {stored['environment']['created_utc']} UTC"
    assert f"cocoa-jax {cocoa_jax.__version__}, jax {jax.__version__}" in fields["Versions"]
    assert re.match(r"\d+ cpu device\(s\) \(cpu\), 1 process\(es\) at the start; units written by process\(es\) 0",
                    fields["Devices and processes"])
    assert "| Method | Target | Gini of \\|a\\| (higher: sparser) |" in text
