"""Start-up work of the demo commands: the digits data without scikit-learn's import, one encode
call for every image set, and `explain --estimators`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def test_digits_read_without_importing_sklearn_equal_load_digits():
    code = ("import sys; from cocoa_jax.data import digits; images, labels = digits._digits_raw(); "
            "print('sklearn' in sys.modules, images.shape, images.dtype, labels.dtype)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "(1797,", "8,", "8)", "float64", "int64"]
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from cocoa_jax.data import digits

    images, labels = digits._digits_raw()
    bunch = sklearn_datasets.load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


class _Linear:
    """A tiny encoder: mean pixel per channel block, so reps are exact and cheap."""

    params = {"w": np.linspace(0.5, 1.5, 12, dtype=np.float32).reshape(4, 3)}

    @staticmethod
    def encode_fn(params, x):
        import jax.numpy as jnp

        flat = x.reshape(x.shape[0], 4, -1).mean(-1)
        return jnp.tanh(flat @ params["w"]) + 1.0


def _images(n, seed, shape=(12, 12, 1)):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


def test_explain_images_one_encode_call_equals_separate_encodings():
    from cocoa_jax import pipeline, targets

    xs, corpus, foil = _images(3, 0), _images(5, 1), _images(7, 2)
    result = pipeline.explain_images(_Linear, xs, corpus=corpus, foil=foil, methods=["vanilla_gradients"])
    enc = lambda a: pipeline.encode_in_chunks(_Linear.encode_fn, _Linear.params, a)  # noqa: E731
    expected = targets.build_stacked(pipeline.DEFAULT_TARGETS, explicand_reps=enc(xs), corpus_reps=enc(corpus),
                                     foil_reps=enc(foil))
    import jax

    scores = np.asarray(jax.vmap(lambda r, t: t(r))(enc(xs), pipeline.per_explicand(expected, 3)))
    np.testing.assert_allclose(result.scores, scores, rtol=1e-6, atol=1e-6)


def test_explain_images_refuses_empty_or_misshapen_sets():
    from cocoa_jax import pipeline

    xs = _images(2, 0)
    with pytest.raises(ValueError, match="`corpus` is empty"):
        pipeline.explain_images(_Linear, xs, corpus=_images(0, 1), foil=_images(3, 2), methods=["vanilla_gradients"])
    with pytest.raises(ValueError, match="`foil` images must have the explicands' shape"):
        pipeline.explain_images(_Linear, xs, corpus=_images(3, 1), foil=_images(3, 2, (16, 16, 1)),
                                methods=["vanilla_gradients"])


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_explain_estimators_fast_with_an_explicit_flag_on_top(tmp_path):
    from cocoa_jax.cli import main

    out = tmp_path / "out"
    status = main(["explain", "--explicands", "1", "--methods", "rise,integrated_gradients", "--targets", "cocoa",
                   "--n-masks", "32", "--estimators", "fast", "--corpus-size", "10", "--foil-size", "20",
                   "--compile-cache", "none", "--quiet", "--out", str(out)])
    assert status == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["estimators"] == "fast"
    assert settings["method_options"]["rise"]["centered"] is True
    assert settings["method_options"]["rise"]["n_masks"] == 32  # the flag wins over the profile's 416
    assert settings["method_options"]["integrated_gradients"]["n_steps"] == 16
