"""cocoa_jax.pipeline: the one explain pipeline every front end uses, against per-explicand calls."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import baselines, methods, pipeline, targets

from tests.support.paths import REPO
from tests.support.xla import child_flags
from tests.support.toy_pipeline import CORPUS, FOIL, PROJ, RNG, SHAPE, SMALL, XS, Toy, encode_fn  # noqa: F401


def test_encode_in_chunks_equals_one_call_for_any_chunk():
    x = np.asarray(RNG.uniform(size=(37, *SHAPE)), np.float32)
    want = np.asarray(encode_fn(Toy.params, jnp.asarray(x)))
    for chunk in (1, 5, 16, 256):
        np.testing.assert_allclose(pipeline.encode_in_chunks(encode_fn, Toy.params, x, chunk_size=chunk), want,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        pipeline.encode_in_chunks(encode_fn, Toy.params, x, chunk_size=0)
    with pytest.raises(ValueError, match="images"):
        pipeline.encode_in_chunks(encode_fn, Toy.params, x[0])


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("method", [m if m in ("integrated_gradients", "rise") else pytest.param(m, marks=pytest.mark.slow)
                                    for m in sorted(SMALL)])
def test_attribute_equals_per_explicand_calls_for_any_chunk(method):
    """N explicands x K targets == the method called on each explicand with its own target/key."""
    reps = encode_fn(Toy.params, XS)
    stacked = targets.stack([targets.cocoa(encode_fn(Toy.params, CORPUS), encode_fn(Toy.params, FOIL)),
                             targets.label_free(reps)])
    target = pipeline.per_explicand(stacked, len(XS))
    blurred = baselines.gaussian_blur(XS, 5, 1.0)
    keys = pipeline.method_keys(jax.random.key(3), method, len(XS))
    want = []
    for i in range(len(XS)):
        t = targets.Target(target.direction[i], target.normalize)
        f = targets.explain_fn(lambda xb: encode_fn(Toy.params, xb), t)
        want.append(np.asarray(methods.attribute(method, f, XS[i], blurred[i], keys[i], **SMALL[method])))
    want = np.stack(want)
    for chunk in (None, 2, 5):
        got = pipeline.attribute(encode_fn, Toy.params, XS, blurred, stacked, method, keys,
                                 options=SMALL[method], chunk_size=chunk)
        assert got.shape == want.shape and got.dtype == np.float32
        # float32 rounding differs between vmapped and single calls (KernelSHAP's regression
        # amplifies it to ~1e-4 of the map's scale); wrong keys or targets give O(1) differences.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).max())


def test_explain_images_scores_gaps_and_streams():
    result = pipeline.explain_images(Toy, XS, corpus=CORPUS, foil=FOIL, targets=("cocoa", "label_free"),
                                     methods=("integrated_gradients", "rise"),
                                     options={m: SMALL[m] for m in ("integrated_gradients", "rise")},
                                     key=jax.random.key(1))
    # Scores are the targets evaluated on the representations (eq. 3 via Prop. 3.3), in float64.
    reps = np.asarray(encode_fn(Toy.params, XS), np.float64)
    corpus = np.asarray(encode_fn(Toy.params, CORPUS), np.float64)
    foil = np.asarray(encode_fn(Toy.params, FOIL), np.float64)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    cocoa = (unit(reps) @ unit(corpus).T).mean(1) - (unit(reps) @ unit(foil).T).mean(1)
    np.testing.assert_allclose(result.scores[:, 0], cocoa, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.scores[:, 1], 1.0, rtol=1e-5)  # cosine with itself
    # IG is complete: its gap is small and reported; RISE is not (no gap reported).
    assert set(result.completeness_gaps) == {"integrated_gradients"}
    assert np.max(np.abs(result.completeness_gaps["integrated_gradients"])) < 1e-2 * np.max(np.abs(
        result.scores - result.baseline_scores))
    # A method's draws do not depend on which other methods run.
    alone = pipeline.explain_images(Toy, XS, corpus=CORPUS, foil=FOIL, targets=("cocoa", "label_free"),
                                    methods=("rise",), options={"rise": SMALL["rise"]}, key=jax.random.key(1))
    np.testing.assert_array_equal(alone.maps["rise"], result.maps["rise"])


def test_explain_images_refusals():
    with pytest.raises(ValueError, match="corpus"):
        pipeline.explain_images(Toy, XS, foil=FOIL, targets=("cocoa",), methods=("rise",))
    with pytest.raises(ValueError, match="unknown attribution method"):
        pipeline.explain_images(Toy, XS, corpus=CORPUS, foil=FOIL, methods=("nope",))
    with pytest.raises(ValueError, match="options"):
        pipeline.explain_images(Toy, XS, corpus=CORPUS, foil=FOIL, methods=("rise",),
                                options={"integrated_gradients": {}})


_DEVICES_CHILD = r"""
import sys, numpy as np, jax, jax.numpy as jnp
sys.path.insert(0, sys.argv[1])
from tests.support import toy_pipeline as T
from cocoa_jax import baselines, meshes, pipeline, targets
assert len(jax.devices()) == 8
stacked = targets.stack([targets.cocoa(T.encode_fn(T.Toy.params, T.CORPUS), T.encode_fn(T.Toy.params, T.FOIL))])
blurred = baselines.gaussian_blur(T.XS, 5, 1.0)
for method in ("integrated_gradients", "rise"):
    keys = pipeline.method_keys(jax.random.key(3), method, len(T.XS))
    one = pipeline.attribute(T.encode_fn, T.Toy.params, T.XS, blurred, stacked, method, keys, options=T.SMALL[method])
    mesh = meshes.make_mesh()
    many = pipeline.attribute(T.encode_fn, T.Toy.params, T.XS, blurred, stacked, method, keys,
                              options=T.SMALL[method], mesh=mesh, chunk_size=3)
    np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-6)
print("ok")
"""


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_attribute_on_8_devices_equals_1():
    env = dict(os.environ, XLA_FLAGS=child_flags(8))
    here = str(REPO)
    proc = subprocess.run([sys.executable, "-c", _DEVICES_CHILD, here], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
