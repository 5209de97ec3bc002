"""The sweep's `eval_removal`: insertion/deletion by dropping a ViT's patch tokens instead of blending;
and the ViT-native methods in the sweep (it explains the network's input: AttnLRP's mode and token
access come with it).

Checked on a tiny random ViT (the digits_vit architecture at 16 px, 4 px patches): the config field's
checks (a one-line error before any work for an encoder without token access), the run hash, and a
run of AttnLRP whose maps equal `pipeline.attribute` on the model's own encode_fn and whose curves have
the token-drop signature: with no patch token left (insertion's first step, deletion's last) the
representation is the class token's alone, the same for every explicand."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from cocoa_jax import metrics, models, pipeline, targets
from cocoa_jax.sweep import SweepConfig, inputs, run_sweep
from cocoa_jax.sweep.store import open_existing

from tests.support.tiny_sweep import tiny_config, tiny_datasets

TINY_VIT = {**models.ARCHITECTURES["digits_vit"].default_config, "embed_dim": 16, "depth": 1, "num_heads": 2,
            "patch_size": 4, "pos_grid": 4, "image_size": 16, "ffn_hidden": 32}


def test_eval_removal_is_checked_and_hashed_only_when_set():
    with pytest.raises(ValueError, match="`eval_removal` must be one of"):
        SweepConfig(eval_removal="blur")
    with pytest.raises(ValueError, match="`eval_superpixel` must be 1 with eval_removal 'token_drop'"):
        SweepConfig(eval_removal="token_drop", eval_superpixel=2)
    assert "eval_removal" not in SweepConfig().result_fields()  # earlier runs keep their hash
    assert SweepConfig(eval_removal="token_drop").config_hash() != SweepConfig().config_hash()
    with pytest.raises(ValueError, match="`eval_removal` 'token_drop' needs a ViT encoder .*'digits' has none"):
        inputs.check_encoder_source(SweepConfig(eval_removal="token_drop"))  # what the command checks first
    inputs.check_encoder_source(SweepConfig(encoder="digits_vit", eval_removal="token_drop"))


@pytest.mark.slow  # > 2 s: a sweep's compiles
def test_token_drop_curves_of_a_tiny_vit(tmp_path):
    _, abstract = models.init_abstract("digits_vit", TINY_VIT)
    leaves, tree = jax.tree_util.tree_flatten(abstract)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    params = tree.unflatten([0.3 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
    model = models.make_loaded("digits_vit", TINY_VIT, params)
    config = tiny_config(seeds=(0,), classes=(0,), methods={"attn_lrp": {}}, include_random=False,
                         targets=("corpus",), eval_steps=4, eval_removal="token_drop")
    datasets = tiny_datasets()
    run_sweep(config, str(tmp_path / "run"), encoder=model, datasets=datasets, progress=False, compile_cache=None)
    _, store = open_existing(str(tmp_path / "run"))
    (unit,) = [store.load_unit(row) for row in store.read_rows(warn=False).values()]
    xs = datasets["test"].images([int(i) for i in unit["explicand_index"]])
    # The corpus target, not label-free: the cosine to one's own representation is at its maximum, so
    # its gradient there (hence AttnLRP's relevance) is zero up to rounding (~1e-11 here) and a
    # comparison would compare rounding noise.
    encode = jax.jit(model.encode_fn)
    data = inputs.sample_seed(config, 0, (0,), datasets[config.corpus_split], datasets[config.explicand_split],
                              lambda images: np.asarray(encode(model.params, images)))
    target = targets.corpus(data.corpus_reps[0][0])
    expected = pipeline.attribute(model.encode_fn, model.params, xs, xs, target, "attn_lrp",
                                  jax.random.split(jax.random.key(0), len(xs)))
    expected = np.asarray(expected)[:, 0, ..., 0][:, None]
    assert np.abs(expected).max() > 1e-6  # a map (4e-5 here), not rounding (label-free: 1e-11)
    np.testing.assert_allclose(unit["attributions"], expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    curves = unit["curves"]  # (N, K=1, 2, steps + 1, M); measure 0 is ccs
    assert curves.shape[:4] == (3, 1, 2, 5) and np.isfinite(unit["aucs"]).all()
    np.testing.assert_allclose(unit["fractions"], metrics.feature_fractions(16, 4))  # 16 patches, not 256 pixels
    tight = dict(rtol=1e-4, atol=1e-10)  # the ccs values of a random ViT are ~1e-4
    empty = curves[:, 0, 0, 0, 0]  # insertion, nothing kept
    np.testing.assert_allclose(empty, empty[0], **tight)
    np.testing.assert_allclose(curves[:, 0, 1, -1, 0], empty, **tight)  # deletion, all dropped
    full = curves[:, 0, 0, -1, 0]  # insertion, all kept
    np.testing.assert_allclose(full, curves[:, 0, 1, 0, 0], **tight)
    assert np.ptp(full) > 0.1 * np.abs(full).max() and np.abs(full - empty[0]).min() > 1e-3 * np.abs(full).max()
