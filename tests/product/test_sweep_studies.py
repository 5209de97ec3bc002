"""The installed `cocoa-jax sweep` running a size study in one pass and reporting it."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import cli_env, run_cli, tiny_sweep_flags


@pytest.mark.slow  # ~35-60 s on 2 shared cores (probe training, compiles in a subprocess)
def test_corpus_size_study_writes_the_sensitivity_figure(tmp_path):
    """`cocoa-jax sweep RUN --set corpus_size=[1,5] ... --report` on the shipped digits encoder."""
    tiny = tiny_sweep_flags(corpus_size=[1, 5])
    run_dir = tmp_path / "runs" / "corpus"
    proc = run_cli(["sweep", run_dir, *tiny, "--report"], cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert "computed 2 unit(s)" in proc.stdout, proc.stdout
    figure = run_dir / "report" / "sensitivity_corpus.png"
    assert str(figure) in proc.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    text = (run_dir / "report" / "report.md").read_text()
    assert "### Corpus size sensitivity" in text and "| corpus 1 | corpus 5 |" in text
    with np.load(run_dir / "units" / "s0_c3_integrated_gradients.npz") as unit:
        assert unit["size_aucs"].shape[:3] == (2, 2, 4) and list(unit["sizes"]) == [1, 5]
    # The int form of the same run is another run (today's draws): refused in this directory.
    again = run_cli(["sweep", run_dir, *tiny_sweep_flags(corpus_size=5)], cwd=tmp_path, env=cli_env())
    assert again.returncode == 2 and "corpus_size" in again.stderr, again.stderr
