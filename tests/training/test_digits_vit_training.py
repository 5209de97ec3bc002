"""`cocoa_jax.training.digits_vit`: its SimCLR network's encoder is exactly the `digits_vit` architecture's
variables (what `models.save` / `load` take), and its command refuses bad flags before any work."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from cocoa_jax import models
from cocoa_jax.models import digits_vit
from cocoa_jax.training import digits_vit as training


def test_the_trained_encoder_is_the_architecture_s_variables():
    shapes = jax.eval_shape(lambda: training.network().init(jax.random.key(0), jnp.zeros((2, *digits_vit.INPUT_SHAPE))))
    _, abstract = models.init_abstract("digits_vit", digits_vit.CONFIG)
    encoder = {"params": shapes["params"]["encoder"]}
    assert jax.tree_util.tree_structure(encoder) == jax.tree_util.tree_structure(abstract)
    assert [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(encoder)] == [
        (a.shape, a.dtype) for a in jax.tree_util.tree_leaves(abstract)]
    assert set(shapes["params"]) == {"encoder", "Dense_0", "Dense_1"}  # the projection head, dropped after training


@pytest.mark.parametrize("argv, message", [
    ([], "--out DIR is required"),
    (["--out", "x", "--steps", "0"], "--steps must be a positive integer"),
    (["--out", "x", "--seed", "-1"], "--seed must be >= 0"),
    (["--out", digits_vit.WEIGHTS_DIR], "is the shipped model; pass --replace-shipped"),
])
def test_bad_flags_exit_2_before_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        training.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
