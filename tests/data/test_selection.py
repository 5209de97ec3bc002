"""cocoa_jax.data.selection: seeded explicand/corpus/foil choices; errors name the library
argument, and `explain` maps them to its flags (cocoa_jax.commands.errors.flag_errors)."""
from __future__ import annotations

import numpy as np
import pytest

from cocoa_jax.data import selection

TRAIN = np.repeat(np.arange(10), 30)   # 30 training images per class
TEST = np.repeat(np.arange(10), 5)     # 5 test images per class


def test_choose_digits_draws_the_right_classes_disjoint_and_seeded():
    e, c, f, capped = selection.choose_digits(TRAIN, TEST, corpus_class=3, explicand_class=7, n_explicands=4,
                                              corpus_size=20, foil_size=50, seed=1)
    assert not capped and (len(e), len(c), len(f)) == (4, 20, 50)
    assert np.all(TEST[e] == 7) and np.all(TRAIN[c] == 3)
    assert not set(c) & set(f) and len(set(f)) == 50 and len(set(e)) == 4
    assert all(np.all(np.diff(a) > 0) for a in (e, c, f))  # sorted, no repeats
    again = selection.choose_digits(TRAIN, TEST, corpus_class=3, explicand_class=7, n_explicands=4,
                                    corpus_size=20, foil_size=50, seed=1)
    other = selection.choose_digits(TRAIN, TEST, corpus_class=3, explicand_class=7, n_explicands=4,
                                    corpus_size=20, foil_size=50, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(again[:3], (e, c, f)))
    assert not np.array_equal(other[2], f)


def test_choose_digits_default_foil_is_capped_by_what_remains():
    assert selection.default_foil_size() > len(TRAIN)
    _, c, f, capped = selection.choose_digits(TRAIN, TEST, corpus_class=0, explicand_class=0, n_explicands=1,
                                              corpus_size=10, foil_size=None, seed=0)
    assert capped and np.array_equal(f, np.setdiff1d(np.arange(len(TRAIN)), c))


@pytest.mark.parametrize("changes, message", [
    ({"n_explicands": 6}, r"^n_explicands=6 exceeds the 5 test images of class 7$"),
    ({"corpus_size": 31}, r"^corpus_size=31 exceeds the 30 training images of class 3$"),
    ({"foil_size": 281}, r"^foil_size=281 exceeds the 280 training images outside the corpus$"),
])
def test_choose_digits_errors_name_the_argument(changes, message):
    kwargs = dict(corpus_class=3, explicand_class=7, n_explicands=4, corpus_size=20, foil_size=50, seed=0)
    with pytest.raises(ValueError, match=message):
        selection.choose_digits(TRAIN, TEST, **{**kwargs, **changes})


def test_draw_foil_sizes_and_errors():
    assert selection.draw_foil(5, None, 0) == [0, 1, 2, 3, 4]  # default size capped by the pool
    drawn = selection.draw_foil(100, 7, 3)
    assert drawn == sorted(set(drawn)) and len(drawn) == 7 and max(drawn) < 100
    assert drawn == sorted(np.random.default_rng(3).choice(100, 7, replace=False))
    with pytest.raises(ValueError, match=r"^foil_size=8 exceeds the 5 foil images given$"):
        selection.draw_foil(5, 8, 0)


def test_explain_maps_the_argument_names_to_its_flags():
    from cocoa_jax.commands import explain
    from cocoa_jax.commands.errors import UsageError, flag_errors

    with pytest.raises(UsageError, match=r"^--foil-size=8 exceeds the 5 foil images given$"):
        with flag_errors(None, names=explain.SELECTION_FLAGS):
            selection.draw_foil(5, 8, 0)
    with pytest.raises(UsageError, match=r"^--explicands=6 exceeds the 5 test images of class 7$"):
        with flag_errors(None, names=explain.SELECTION_FLAGS):
            selection.choose_digits(TRAIN, TEST, corpus_class=3, explicand_class=7, n_explicands=6,
                                    corpus_size=20, foil_size=None, seed=0)
    with pytest.raises(UsageError, match=r"^--images: no such file or folder 'x'$"):  # a flag prefix
        with flag_errors("--images"):
            raise ValueError("no such file or folder 'x'")
    with pytest.raises(KeyError):  # other errors pass through
        with flag_errors("--images"):
            raise KeyError("k")
