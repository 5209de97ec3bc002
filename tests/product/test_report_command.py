"""The installed `cocoa-jax sweep` + `cocoa-jax report` on the shipped digits encoder, one run for
both checks (each sweep subprocess costs a probe training and its compiles): report.md's header
names what ran, every measure's columns carry its own direction, and a size study runs in one pass
with its sensitivity figure."""
from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest

import cocoa_jax

from conftest import cli_env, run_cli, tiny_sweep_flags


@pytest.mark.slow  # ~40-70 s on 2 shared cores (probe training, compiles in three subprocesses)
def test_report_header_directions_and_a_corpus_size_study_on_a_real_run(tmp_path):
    """`cocoa-jax sweep RUN --set corpus_size=[1,5] ... --report`, then `cocoa-jax report RUN --measures ...`."""
    tiny = tiny_sweep_flags(seeds=[0, 1], corpus_size=[1, 5])
    run_dir = tmp_path / "runs" / "digits"
    sweep = run_cli(["sweep", run_dir, *tiny, "--report"], cwd=tmp_path, env=cli_env())
    assert sweep.returncode == 0, f"stdout:\n{sweep.stdout}\nstderr:\n{sweep.stderr}"
    assert "Traceback" not in sweep.stderr
    assert "computed 4 unit(s)" in sweep.stdout, sweep.stdout

    # The size study: one pass, its figure and table, the unit arrays by size.
    figure = run_dir / "report" / "sensitivity_corpus.png"
    assert str(figure) in sweep.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    text = (run_dir / "report" / "report.md").read_text()
    assert "### Corpus size sensitivity" in text and "| corpus 1 | corpus 5 |" in text
    with np.load(run_dir / "units" / "s0_c3_integrated_gradients.npz") as unit:
        assert unit["size_aucs"].shape[:3] == (2, 2, 4) and list(unit["sizes"]) == [1, 5]

    # The report command: each measure's own direction in its column heads, best means in bold.
    proc = run_cli(["report", run_dir, "--measures", "rep_shift,ccs"], cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert ("| representation shift ins. (↓) | representation shift del. (↑) | "
            "contrastive corpus similarity ins. (↑) | contrastive corpus similarity del. (↓) |") in proc.stdout
    assert proc.stdout.count("**") >= 2 * 4  # one best mean (at least) per column, in bold

    # The header names what ran.
    text = (run_dir / "report" / "report.md").read_text()
    fields = dict(re.findall(r"^- \*\*(.+?)\*\*: (.*)$", text, flags=re.M))
    stored = json.loads((run_dir / "config.json").read_text())
    assert fields["Encoder"] == "`digits`, weights shipped with cocoa-jax"
    assert fields["Architecture"] == "`digits`, input 32x32x1"
    assert fields["Weights hash"].startswith(f"`{stored['identity']['encoder']}`")
    assert fields["Dataset"].startswith("`digits`; corpus split `train`, explicand split `test`")
    assert fields["Methods"].startswith("IG (`integrated_gradients`: method=gausslegendre, n_steps=3)")
    assert fields["Seeds"] == "0, 1 (2)" and fields["Classes"] == "3 (1)"
    assert fields["Sizes"] == ("corpus (1, 5), foil 8, 2 explicands per class, images 32x32 px "
                               "(size study over `corpus_size`)")
    assert fields["Run hash"] == f"`{stored['config_hash']}`; 4 of 4 units finished"
    assert fields["Date"] == f"run started {stored['environment']['created_utc']} UTC"
    assert f"cocoa-jax {cocoa_jax.__version__}, jax {jax.__version__}" in fields["Versions"]
    assert re.match(r"\d+ cpu device\(s\) \(cpu\), 1 process\(es\) at the start; units written by process\(es\) 0",
                    fields["Devices and processes"])
    assert "| Method | Target | Gini of \\|a\\| (higher: sparser) |" in text

    # The int form of the same run is another run (today's draws): refused in this directory.
    again = run_cli(["sweep", run_dir, *tiny_sweep_flags(seeds=[0, 1], corpus_size=5)], cwd=tmp_path, env=cli_env())
    assert again.returncode == 2 and "corpus_size" in again.stderr, again.stderr
