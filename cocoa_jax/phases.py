"""Phase markers, for tests that act at a moment a command reports rather than after guessed seconds.

With `COCOA_JAX_TEST_PHASES=1` in its environment, a command prints `cocoa-jax phase: NAME` on
stderr as it reaches each phase (`start`, `run`, then its own: `load`, `compute`, `method M`,
`write`, `train`, `evaluate`, ...). Without it, `reached` does nothing. Standard library only:
`start` is reported before JAX loads.
"""
from __future__ import annotations

import os
import sys

PHASES_ENV = "COCOA_JAX_TEST_PHASES"
# Tests only: the phase at which the command stops and waits until it is killed, so a kill is
# sure to land there on any machine (e.g. "unit 1": a sweep process after its first unit).
HOLD_ENV = "COCOA_JAX_TEST_HOLD"
PREFIX = "cocoa-jax phase: "


def reached(name: str) -> None:
    """Report phase `name` on stderr (flushed at once), when the tests asked for it; hold there
    when it is the phase `COCOA_JAX_TEST_HOLD` names."""
    if os.environ.get(PHASES_ENV):
        sys.stderr.write(f"{PREFIX}{name}\n")
        sys.stderr.flush()
    if os.environ.get(HOLD_ENV) == name:
        import threading

        threading.Event().wait()  # until a signal ends the process
