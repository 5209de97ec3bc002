"""The README's API example runs as written (keeps the documentation true)."""
import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_readme_api_example_runs(tmp_path):
    text = README.read_text()
    section = text[text.index("## API example"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # Same code path, fewer masks and steps (the example's numbers are checked to be there).
    assert "n_masks=2000" in code and "n_steps=50" in code
    code = code.replace("n_masks=2000", "n_masks=200").replace("n_steps=50", "n_steps=8")
    assert '"cocoa_digits.png"' in code
    figure = tmp_path / "cocoa_digits.png"
    code = code.replace('"cocoa_digits.png"', repr(str(figure)))
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    ig, rise = namespace["ig"], namespace["rise"]
    assert ig.shape == (4, 2, 32, 32, 1) and rise.shape == (4, 2, 32, 32)
    assert np.all(np.isfinite(ig)) and np.all(np.isfinite(rise))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # two compiled evaluations on the digits encoder (the API call, then the command in process)
def test_readme_scoring_maps_from_other_libraries_runs_as_written(tmp_path, monkeypatch):
    """The section's Python block and its first command (the digits one), exactly as written, in a
    fresh folder: the command reads the maps.npz the Python block saved."""
    import shlex

    from cocoa_jax import cli

    text = README.read_text()
    section = text[text.index("## Scoring maps from other libraries"):text.index("## What is tested, and how")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)\n", section, re.S).group(1)
    from cocoa_jax import models

    loaded = {}
    load = models.load  # one digits model object for both: the command reuses the API's compiled program
    monkeypatch.setattr(models, "load", lambda *a, **k: loaded.setdefault((a, tuple(k.items())), load(*a, **k)))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    scores = namespace["scores"]
    assert scores["deletion"].shape == (8, 1) and np.all(np.isfinite(scores["faithfulness_correlation"]))
    args = shlex.split(command)
    assert args[0] == "cocoa-jax"
    assert cli.main(args[1:] + ["--quiet"]) == 0
    out = tmp_path / "runs" / "evaluate"
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv", "scores.md", "scores.npz", "scores.png"]
    with np.load(out / "scores.npz") as written:  # the command scores what the API scored
        np.testing.assert_allclose(written["maps/deletion"], scores["deletion"], rtol=1e-5, atol=1e-6)
