"""Pointing game, relevance mass and rank accuracy against Quantus 0.6 and float64 statements."""
import jax
import numpy as np
import pytest

from cocoa_jax.evaluation import localisation, table

Q = pytest.importorskip("tests.reference.quantus_metrics_side")
quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def setup():
    x, y = Q.data(6)
    params = Q.jax_params(Q.tiny_net())
    maps = Q.gradient_maps(params, x, y)[:, None]  # (N, 1, H, W), signed
    rng = np.random.default_rng(3)
    masks = rng.uniform(size=(6, Q.HEIGHT, Q.WIDTH)) < 0.3
    masks[0] = False
    masks[0, 2:5, 1:4] = True
    peak = np.unravel_index(np.argmax(maps[1, 0]), maps.shape[2:])
    masks[1, peak] = True  # one sure hit
    return x, y, params, maps, masks


@pytest.mark.parametrize("name, cls, kwargs", [
    ("pointing_game", "PointingGame", {}),
    ("relevance_mass_accuracy", "RelevanceMassAccuracy", {}),
    ("relevance_rank_accuracy", "RelevanceRankAccuracy", {}),
])
@pytest.mark.parametrize("absolute", [False, True])
def test_equals_quantus(setup, name, cls, kwargs, absolute):
    x, y, params, maps, masks = setup
    a = np.abs(maps) if absolute else maps
    ctx = Q.contexts(params, y, x, mask=jax.numpy.asarray(localisation.check_masks(masks, x.shape[1:])))
    ours = Q.run_metric(table.get(name), ctx, x, a, jax.random.key(0), **kwargs)[:, 0]
    theirs = getattr(quantus, cls)(disable_warnings=True, abs=absolute, **kwargs)(
        model=None, x_batch=Q.to_nchw(x), y_batch=y, a_batch=maps.copy(), s_batch=masks[:, None].astype(float))
    np.testing.assert_allclose(ours, np.asarray(theirs, np.float64), rtol=0, atol=1e-5)


def test_float64_statements():
    # (weighted=True also here only: Quantus 0.6's PointingGame(weighted=True) raises a NumPy
    # indexing TypeError on any batch with a hit, so it cannot be compared)
    maps = np.zeros((2, 3, 3))
    maps[0] = np.arange(9).reshape(3, 3)  # the max at (2, 2)
    maps[1] = -np.arange(9).reshape(3, 3)  # the max at (0, 0)
    mask = np.zeros((3, 3), bool)
    mask[2, 1:] = True  # pixels 7, 8
    np.testing.assert_array_equal(np.asarray(localisation.pointing_game(maps, mask)), [1.0, 0.0])
    np.testing.assert_allclose(np.asarray(localisation.pointing_game(maps, mask, weighted=True)), [1 - 2 / 9, 0.0])
    np.testing.assert_allclose(np.asarray(localisation.relevance_mass_accuracy(maps, mask)), [15 / 36, 15 / 36])
    np.testing.assert_allclose(np.asarray(localisation.relevance_rank_accuracy(maps, mask)), [1.0, 0.0])
    per_channel = np.repeat(maps[..., None], 3, axis=-1)  # channel means: the same scores
    np.testing.assert_allclose(np.asarray(localisation.relevance_rank_accuracy(per_channel, mask)), [1.0, 0.0])


@pytest.mark.parametrize("masks, match", [
    (np.ones((2, 4, 5)), r"`masks` must have shape \(N, 4, 4\)"),
    (np.full((2, 4, 4), 0.5), r"`masks` must hold only 0/1"),
    (np.stack([np.ones((4, 4)), np.zeros((4, 4))]), r"`masks` has 1 empty mask\(s\) \(first at explicand 1\)"),
])
def test_bad_masks_one_line_errors(masks, match):
    with pytest.raises(ValueError, match=match) as info:
        localisation.check_masks(masks, (4, 4, 3))
    assert "\n" not in str(info.value)


def test_rank_accuracy_equals_a_stable_sort_on_tied_values():
    """The sort-free selection (`relevance_rank_accuracy`) = the |s| first pixels of a stable float64
    NumPy argsort by decreasing value, on maps full of ties, signed zeros, infinities and tiny values."""
    rng = np.random.default_rng(7)
    batch, k, side = 64, 3, 5
    # (tiny values normal: XLA on CPU flushes float32 subnormals to zero, NumPy does not)
    values = np.array([0.0, -0.0, 1e-30, -1e-30, 2.5, -2.5, 3e38, -3e38, np.inf, -np.inf], np.float32)
    maps = np.where(rng.uniform(size=(batch, k, side, side)) < 0.5, rng.choice(values, size=(batch, k, side, side)),
                    rng.integers(-2, 3, size=(batch, k, side, side))).astype(np.float32)
    maps[:8] = rng.normal(size=(8, k, side, side))  # no ties
    masks = rng.uniform(size=(batch, side, side)) < rng.uniform(0.05, 0.95, size=(batch, 1, 1))
    masks[:, 0, 0] = True
    got = np.asarray(jax.jit(jax.vmap(localisation.relevance_rank_accuracy))(maps, masks))
    for b in range(batch):
        s = masks[b].reshape(-1)
        for j in range(k):
            order = np.argsort(-maps[b, j].reshape(-1).astype(np.float64), kind="stable")
            assert round(float(got[b, j]) * s.sum()) == s[order[:s.sum()]].sum(), (b, j)  # the same count in the top |s|
