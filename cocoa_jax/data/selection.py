"""Seeded choices of explicands, corpus and foil: which images an explanation uses.

`choose_digits`: the digits demo's explicands (test images of a class), corpus (training images
of a class) and foil (random training images outside the corpus). `draw_foil`: a foil drawn from
a pool of the user's images. The foil size defaults to the paper's bound (eq. C.3,
`cocoa_jax.targets.foil_size(0.01, 0.05, nonnegative=True)`: ReLU representations are >= 0),
capped by what is available. Errors are ValueErrors naming the argument.
"""
from __future__ import annotations

import numpy as np


def default_foil_size() -> int:
    """The paper's foil size: enough images for a 0.01-accurate foil mean with probability 0.95."""
    from cocoa_jax.targets import foil_size

    return foil_size(0.01, 0.05, nonnegative=True)


def choose_digits(labels_train: np.ndarray, labels_test: np.ndarray, *, corpus_class: int, explicand_class: int,
                  n_explicands: int, corpus_size: int, foil_size: int | None, seed: int):
    """Seeded choice of explicand (test), corpus and foil (train) indices.

    The corpus is `corpus_size` training images of `corpus_class`; the foil is drawn uniformly
    from the remaining training images (any class), without replacement; `foil_size` None is the
    default size, capped by what remains. Returns sorted int arrays (explicands, corpus, foil)
    and whether the foil size was capped.
    """
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(labels_test == explicand_class)
    if n_explicands > len(pool):
        raise ValueError(f"n_explicands={n_explicands} exceeds the {len(pool)} test images of class "
                         f"{explicand_class}")
    explicands = np.sort(rng.choice(pool, n_explicands, replace=False))
    pool = np.flatnonzero(labels_train == corpus_class)
    if corpus_size > len(pool):
        raise ValueError(f"corpus_size={corpus_size} exceeds the {len(pool)} training images of class {corpus_class}")
    corpus = np.sort(rng.choice(pool, corpus_size, replace=False))
    rest = np.setdiff1d(np.arange(len(labels_train)), corpus)
    capped = False
    if foil_size is None:
        foil_size = default_foil_size()
        if foil_size > len(rest):
            foil_size, capped = len(rest), True
    elif foil_size > len(rest):
        raise ValueError(f"foil_size={foil_size} exceeds the {len(rest)} training images outside the corpus")
    foil = np.sort(rng.choice(rest, foil_size, replace=False))
    return explicands, corpus, foil, capped


def draw_foil(pool_size: int, foil_size: int | None, seed: int) -> list[int]:
    """Sorted indices of `foil_size` images (None: the default size, capped by the pool) drawn
    at random, without replacement, from a pool of `pool_size` images."""
    if foil_size is None:
        foil_size = min(default_foil_size(), pool_size)
    elif foil_size > pool_size:
        raise ValueError(f"foil_size={foil_size} exceeds the {pool_size} foil images given")
    return sorted(np.random.default_rng(seed).choice(pool_size, foil_size, replace=False))
