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
