"""Targets against literal float64 NumPy definitions (paper eq. 1-3, Prop. 3.3, Prop. C.2)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import targets


def _np_cos(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a @ b.T) / (np.linalg.norm(a, axis=-1)[:, None] * np.linalg.norm(b, axis=-1)[None, :])


@pytest.fixture
def reps():
    rng = np.random.default_rng(0)
    return dict(
        x=rng.normal(size=(6, 16)).astype(np.float32),
        corpus=rng.normal(size=(9, 16)).astype(np.float32),
        foil=rng.normal(size=(13, 16)).astype(np.float32),
    )


def test_cocoa_cosine_equals_literal_eq3(reps):
    expected = _np_cos(reps["x"], reps["corpus"]).mean(1) - _np_cos(reps["x"], reps["foil"]).mean(1)
    fast = targets.cocoa(reps["corpus"], reps["foil"])(reps["x"])
    literal = targets.contrastive_corpus_similarity(reps["x"], reps["corpus"], reps["foil"])
    np.testing.assert_allclose(fast, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(literal, expected, rtol=1e-5, atol=1e-6)


def test_prop_3_3_contrastive_direction(reps):
    """gamma(x) = <f(x)/|f(x)|, mean_c unit(f(x_c)) - mean_i unit(f(x_i))>."""
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    x, c, fo = (np.asarray(reps[k], np.float64) for k in ("x", "corpus", "foil"))
    direction = unit(c).mean(0) - unit(fo).mean(0)
    target = targets.cocoa(reps["corpus"], reps["foil"])
    np.testing.assert_allclose(target.direction, direction, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target(reps["x"]), unit(x) @ direction, rtol=1e-5, atol=1e-6)


def test_cocoa_dot_equals_literal(reps):
    x, c, fo = (np.asarray(reps[k], np.float64) for k in ("x", "corpus", "foil"))
    expected = (x @ c.T).mean(1) - (x @ fo.T).mean(1)
    np.testing.assert_allclose(targets.cocoa(reps["corpus"], reps["foil"], "dot")(reps["x"]), expected, rtol=1e-5)
    np.testing.assert_allclose(
        targets.contrastive_corpus_similarity(reps["x"], reps["corpus"], reps["foil"], "dot"), expected, rtol=1e-5)


def test_baseline_targets_match_definitions(reps):
    x, c, fo = (np.asarray(reps[k], np.float64) for k in ("x", "corpus", "foil"))
    explicand = x[0]
    np.testing.assert_allclose(targets.corpus(reps["corpus"])(reps["x"]), _np_cos(x, c).mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets.corpus(reps["corpus"], "dot")(reps["x"]), (x @ c.T).mean(1), rtol=1e-5)
    # RELAX: cosine to the explicand; label-free feature importance: dot product.
    np.testing.assert_allclose(targets.label_free(reps["x"][0])(reps["x"]), _np_cos(x, explicand[None])[:, 0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets.label_free(reps["x"][0], "dot")(reps["x"]), x @ explicand, rtol=1e-5)
    expected = _np_cos(x, explicand[None])[:, 0] - _np_cos(x, fo).mean(1)
    np.testing.assert_allclose(targets.contrastive_label_free(reps["x"][0], reps["foil"])(reps["x"]), expected,
                               rtol=1e-5, atol=1e-6)
    # contrastive label-free == COCOA with the explicand as a corpus of one
    np.testing.assert_allclose(targets.contrastive_label_free(reps["x"][0], reps["foil"]).direction,
                               targets.cocoa(reps["x"][:1], reps["foil"]).direction, rtol=1e-6)


def test_stack_equals_separate_targets_and_mixes_similarities(reps):
    parts = [targets.cocoa(reps["corpus"], reps["foil"]), targets.corpus(reps["corpus"], "dot"),
             targets.label_free(reps["x"][1]), targets.contrastive_label_free(reps["x"][1], reps["foil"], "dot")]
    stacked = targets.stack(parts)
    assert stacked.num_targets == 4 and stacked.normalize == (True, False, True, False)
    scores = stacked(reps["x"])
    assert scores.shape == (6, 4)
    for k, part in enumerate(parts):
        np.testing.assert_allclose(scores[:, k], part(reps["x"]), rtol=1e-5, atol=1e-6)
    # stacking a stacked target flattens
    again = targets.stack([stacked, parts[0]])
    np.testing.assert_allclose(again(reps["x"])[:, :4], scores, rtol=1e-6)


def test_stack_broadcasts_per_explicand_targets_and_vmaps(reps):
    shared = targets.cocoa(reps["corpus"], reps["foil"])
    per_explicand = targets.label_free(reps["x"])  # direction (6, 16): one target per explicand
    stacked = targets.stack([shared, per_explicand])
    assert stacked.direction.shape == (6, 2, 16)
    scores = jax.vmap(lambda t, r: t(r))(stacked, reps["x"])  # each explicand with its own target
    np.testing.assert_allclose(scores[:, 0], shared(reps["x"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[:, 1], np.ones(6), rtol=1e-5)  # cosine of x with itself


def test_target_is_a_pytree_through_jit(reps):
    target = targets.cocoa(reps["corpus"], reps["foil"])
    leaves, treedef = jax.tree_util.tree_flatten(target)
    assert len(leaves) == 1
    out = jax.jit(lambda t, r: t(r))(target, reps["x"])
    np.testing.assert_allclose(out, target(reps["x"]), rtol=1e-6)


@pytest.mark.slow  # ~14 s
def test_zero_representation_is_guarded():
    target = targets.cocoa(np.eye(4, dtype=np.float32)[:2], np.eye(4, dtype=np.float32)[2:])
    zero = jnp.zeros(4)
    assert float(target(zero)) == 0.0
    grad = jax.grad(target)(zero)
    assert np.all(np.isfinite(grad))
    stacked = targets.stack([target, targets.corpus(np.ones((1, 4), np.float32))])
    assert np.all(np.isfinite(jax.jacrev(stacked)(zero)))


def test_explain_fn_composes_encoder_and_target(reps):
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(12, 16)), jnp.float32)
    encode = lambda xb: jnp.tanh(xb.reshape(xb.shape[0], -1) @ weights)
    target = targets.cocoa(reps["corpus"], reps["foil"])
    f = targets.explain_fn(encode, target)
    x = jnp.linspace(-1, 1, 12).reshape(3, 4)
    np.testing.assert_allclose(f(x), target(encode(x[None]))[0], rtol=1e-6)
    assert f(x).shape == ()
    bad = targets.explain_fn(lambda xb: xb, target)
    with pytest.raises(ValueError, match="encode"):
        bad(jnp.zeros((3, 4)))


def test_explain_fn_states_what_f_returns_and_methods_do_not_trace_it(reps):
    """`f.output_shape` equals what tracing f gives (single, stacked); a per-explicand (batched)
    target states nothing; `num_targets` reads the stated shape without calling f."""
    from cocoa_jax.attribution_methods._common import num_targets

    weights = jnp.asarray(np.random.default_rng(1).normal(size=(12, 16)), jnp.float32)
    calls = []

    def encode(xb):
        calls.append(xb.shape)
        return jnp.tanh(xb.reshape(xb.shape[0], -1) @ weights)

    x = jnp.linspace(-1, 1, 12).reshape(3, 4)
    single = targets.cocoa(reps["corpus"], reps["foil"])
    stacked = targets.stack([single, targets.label_free(reps["x"][0], "dot"), single])
    for target, k in ((single, None), (stacked, 3)):
        f = targets.explain_fn(encode, target)
        assert f.output_shape == jax.eval_shape(f, x).shape
        calls.clear()
        assert num_targets(f, x) == k and not calls
    per_explicand = targets.Target(jnp.ones((2, 16)), True)  # a batch axis: f returns (2,), not a K axis
    g = targets.explain_fn(encode, per_explicand)
    assert not hasattr(g, "output_shape")
    with pytest.raises(ValueError, match="scalar or a"):
        num_targets(lambda v: jnp.ones((2, 3)), x)


def test_foil_size_matches_prop_c2():
    assert targets.foil_size(0.01, 0.05, nonnegative=True) == math.ceil(math.log(200) / (2 * 0.05**2)) == 1060
    assert targets.foil_size(0.01, 0.05) == math.ceil(2 * math.log(200) / 0.05**2) == 4239
    m = targets.foil_size(0.1, 0.2)
    assert 2 * math.log(2 / 0.1) / 0.2**2 <= m < 2 * math.log(2 / 0.1) / 0.2**2 + 1


@pytest.mark.parametrize("call, match", [
    (lambda r: targets.cocoa(r["corpus"][:0], r["foil"]), "corpus_reps.*empty"),
    (lambda r: targets.cocoa(r["corpus"], r["foil"][:0]), "foil_reps.*empty"),
    (lambda r: targets.cocoa(r["corpus"], r["foil"][:, :8]), "foil_reps.*dimension"),
    (lambda r: targets.cocoa(r["corpus"][0], r["foil"]), "corpus_reps.*rank 2"),
    (lambda r: targets.cocoa(np.where(np.arange(9)[:, None] == 3, np.nan, r["corpus"]), r["foil"]), "corpus_reps.*NaN"),
    (lambda r: targets.cocoa(np.zeros_like(r["corpus"]), r["foil"]), "corpus_reps.*zero-norm"),
    (lambda r: targets.label_free(np.zeros(16, np.float32)), "explicand_rep.*zero-norm"),
    (lambda r: targets.cocoa(r["corpus"], r["foil"], similarity="euclid"), "similarity"),
    (lambda r: targets.contrastive_label_free(r["x"][0], r["foil"][:, :3]), "foil_reps.*dimension"),
    (lambda r: targets.cocoa(r["corpus"], r["foil"])(r["x"][:, :5]), "reps.*last dimension"),
    (lambda r: targets.stack([]), "targets.*empty"),
    (lambda r: targets.stack([targets.corpus(r["corpus"]), targets.corpus(r["corpus"][:, :4])]), "dimensions"),
    (lambda r: targets.foil_size(1.5, 0.1), "delta"),
    (lambda r: targets.foil_size(0.1, 0.0), "epsilon"),
])
def test_bad_inputs_raise_clear_errors(reps, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(reps)


def test_dot_similarity_allows_zero_rows(reps):
    # Zero vectors are fine for dot-product targets (no normalisation).
    target = targets.cocoa(np.zeros((2, 16), np.float32), reps["foil"], "dot")
    assert np.all(np.isfinite(target(reps["x"])))


def test_zero_map_pairs_are_exactly_the_pairs_whose_gradient_at_the_explicand_vanishes(capsys):
    """`methods.zero_map_pairs` against a computation: the gradient at x of every target, with cosine
    and dot similarity, on a small nonlinear encoder; a pair is flagged iff its map is ~0 (relative to
    the same target's gradient at another point), and the note names it."""
    from cocoa_jax import methods
    from cocoa_jax.commands.checks import note_zero_maps

    rng = np.random.default_rng(3)
    w1, w2 = jnp.asarray(rng.normal(size=(12, 16))), jnp.asarray(rng.normal(size=(16, 6)))
    encode = lambda x: jnp.tanh(x @ w1) @ w2 + 0.3  # (N, 12) -> (N, 6)
    x, other = jnp.asarray(rng.normal(size=12)), jnp.asarray(rng.normal(size=12))
    reps = {"explicand_reps": encode(x[None])[0], "corpus_reps": encode(jnp.asarray(rng.normal(size=(5, 12)))),
            "foil_reps": encode(jnp.asarray(rng.normal(size=(7, 12))))}
    local = [m for m in methods.METHODS if methods.get(m).local]
    assert set(local) == {"vanilla_gradients", "attn_lrp", "lrp"}
    for similarity in ("cosine", "dot"):
        flagged = {t for _, t in methods.zero_map_pairs(["vanilla_gradients"], list(targets.TARGETS), similarity)}
        for name in targets.TARGETS:
            f = targets.explain_fn(lambda z: encode(z), targets.build(name, similarity=similarity, **reps))
            at_x, elsewhere = (np.abs(np.asarray(jax.grad(f)(p))).max() for p in (x, other))
            assert elsewhere > 1e-3, (name, similarity)
            assert (at_x < 1e-6 * elsewhere) == (name in flagged), (name, similarity, at_x, elsewhere)
    assert methods.zero_map_pairs(["integrated_gradients", "rise", "attn_lrp"], ["label_free", "cocoa"]) == [
        ("attn_lrp", "label_free")]
    assert methods.zero_map_note(["integrated_gradients"], list(targets.TARGETS)) is None
    note_zero_maps("explain", ["vanilla_gradients", "attn_lrp"], ["label_free"], "cosine", quiet=False)
    err = capsys.readouterr().err
    assert err.startswith("cocoa-jax explain: note: all-zero maps for AttnLRP, Gradients on the label_free target")
    assert err.count("\n") == 1
    note_zero_maps("explain", ["vanilla_gradients"], ["label_free"], "cosine", quiet=True)
    note_zero_maps("explain", ["vanilla_gradients"], ["label_free"], "dot", quiet=False)
    assert capsys.readouterr().err == ""
