"""Multi-host coordination helpers that run in one process (`cocoa_jax.distributed`).

The multi-process paths (forming the job, exchanging strings) are tested in
tests/test_multihost.py and tests/sweep/test_sweep_scale.py.
"""
from __future__ import annotations

import pytest

from cocoa_jax import distributed


@pytest.mark.parametrize("n_units", [0, 1, 5, 7, 8, 23])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_units_for_process_partitions_in_order(n_units, count):
    units = [f"u{i}" for i in range(n_units)]
    blocks = [distributed.units_for_process(units, i, count) for i in range(count)]
    assert [u for block in blocks for u in block] == units  # each unit once, in order
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_units_for_process_defaults_to_this_process():
    assert distributed.units_for_process(range(5)) == list(range(5))  # one process here


@pytest.mark.parametrize("index, count, match", [(2, 2, "process_index"), (-1, 2, "process_index"),
                                                 (0, 0, "process_count"), (True, 2, "process_index")])
def test_units_for_process_rejects_bad_indices(index, count, match):
    with pytest.raises(ValueError, match=match):
        distributed.units_for_process([1, 2, 3], index, count)
