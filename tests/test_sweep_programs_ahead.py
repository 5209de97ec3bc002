"""The sweep's grouping over all of a seed's classes, and its programs compiled ahead on threads
(`SweepPrograms.compile_ahead`): every call runs a program compiled ahead, with the numbers of
the programs compiled on first call."""
from __future__ import annotations

import numpy as np
import pytest

import test_sweep as ts
from cocoa_jax.sweep import programs as programs_mod
from cocoa_jax.sweep import runner
from cocoa_jax.sweep.store import open_existing


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


def test_programs_compiled_ahead_serve_every_call_with_the_same_numbers(tmp_path, monkeypatch):
    made = []

    class Recording(programs_mod.SweepPrograms):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    config = ts.tiny_config(seeds=(0,))
    monkeypatch.setattr(runner, "SweepPrograms", Recording)
    ahead = runner.run_sweep(config, str(tmp_path / "ahead"), encoder=ts.tiny_encoder(),
                             datasets=ts.tiny_datasets(), progress=False, compile_cache=None)
    monkeypatch.setattr(Recording, "compile_ahead", lambda self, *a, **k: None)
    plain = runner.run_sweep(config, str(tmp_path / "plain"), encoder=ts.tiny_encoder(),
                             datasets=ts.tiny_datasets(), progress=False, compile_cache=None)
    assert sorted(ahead.computed) == sorted(plain.computed)
    compiled = made[0].ahead
    assert len(compiled) == 4  # IG, RISE, random; the evaluation
    for program in compiled:
        assert program.hits > 0
        for _, executable in program.entries:
            assert executable.exception() is None
    assert not made[1].ahead
    arrays = {}
    for name in ("ahead", "plain"):
        _, store = open_existing(str(tmp_path / name))
        arrays[name] = {uid: store.load_unit(row) for uid, row in store.read_rows(warn=False).items()}
    for uid, expected in arrays["plain"].items():
        for key in ("attributions", "curves", "aucs"):
            np.testing.assert_array_equal(arrays["ahead"][uid][key], expected[key], err_msg=f"{uid}/{key}")
