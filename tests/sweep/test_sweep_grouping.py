"""The sweep's grouping over all of a seed's classes: the lanes of every group count."""
from __future__ import annotations

import pytest

from cocoa_jax.sweep import runner


@pytest.mark.parametrize("args, expected", [
    ((5, 8, 2, 3), 3),    # 3 classes x 5 on 2 devices: one group of 16 lanes, not 2 + 1 units at 10 lanes each
    ((5, 8, 2, 10), 2),   # the reduced digits protocol: groups of 2 units (10 lanes, no padding), as before
    ((25, 8, 2, 10), 2),  # the paper's 25 explicands per class: as before
    ((25, 8, 1, 10), 1),
    ((3, 2, 1, 2), 1),    # explicands beyond twice explicand_batch: never one group of all classes
    ((3, 6, 8, 2), 2),
])
def test_units_per_group_counts_the_lanes_of_every_group(args, expected):
    assert runner.units_per_group(*args) == expected


def test_units_per_group_without_classes_is_unchanged():
    assert runner.units_per_group(5, 8, 2) == 2 and runner.units_per_group(25, 8, 1) == 1
