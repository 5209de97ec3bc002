"""Multi-host coordination: forming the `jax.distributed` job, exchanging strings, splitting units.

Used by the sweep only (`cocoa-jax sweep --coordinator ...`); it opens sockets, which is why
nothing below the sweep imports it (attribution methods, `metrics`, `meshes`, `batching`).
Call `initialize_distributed(...)` first in every process; `meshes.make_mesh()` then spans the
devices of all processes, and `units_for_process` splits a sweep's units so that each host
writes only its own.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Sequence

import jax
import numpy as np

__all__ = [
    "DEFAULT_INIT_TIMEOUT",
    "DistributedInitError",
    "initialize_distributed",
    "exchange_strings",
    "broadcast_string",
    "units_for_process",
]


DEFAULT_INIT_TIMEOUT = 90.0


class DistributedInitError(RuntimeError):
    """The `jax.distributed` job could not form (coordinator unreachable, a peer never joined)."""


def _wait_for_coordinator(address: str, deadline: float, what: str) -> None:
    """Poll a TCP connection to the coordinator until it accepts or `deadline` passes.

    Why: JAX's client aborts the whole process (SIGABRT, a fatal log) when it cannot reach
    the coordinator; checking first turns that into an exception naming the address.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    error = None
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError as err:
            error = err
        if time.monotonic() >= deadline:
            raise DistributedInitError(f"{what} cannot reach the coordinator {address} "
                                       f"({type(error).__name__}: {error.strerror or error}); is process 0 "
                                       f"running with --coordinator {address}?")
        time.sleep(0.25)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, cpu_collectives: str | None = "gloo",
                           initialization_timeout: float = DEFAULT_INIT_TIMEOUT,
                           on_timeout: Callable[[str], None] | None = None, **kwargs) -> None:
    """`jax.distributed.initialize` with argument checks and a bounded wait; on CPU it selects
    gloo collectives (CPU devices of several processes need them to exchange data).

    Call before any other JAX call in the process. With no arguments, JAX detects the cluster
    (TPU pods, SLURM, ...).

    initialization_timeout: seconds to wait for the coordinator and every peer. A process
      other than 0 first checks that the coordinator accepts connections and raises
      `DistributedInitError` naming it if it does not within the timeout.
    on_timeout: called (from a watchdog thread) with a one-line message if the job has not
      formed within the timeout; it should end the process (the CLI prints the line and
      `os._exit(2)`s). Why: JAX's runtime cannot be interrupted and ABORTS the process a
      little later (SIGABRT and a fatal log) when a peer never joins. None: JAX's behaviour.
    """
    if coordinator_address is not None:
        if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
            raise ValueError(f"`coordinator_address` must be 'host:port', got {coordinator_address!r}")
    if num_processes is not None:
        if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes <= 0:
            raise ValueError(f"`num_processes` must be a positive integer, got {num_processes!r}")
    if process_id is not None:
        if isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0 \
                or (num_processes is not None and process_id >= num_processes):
            raise ValueError(f"`process_id` must be an integer in [0, num_processes={num_processes}), "
                             f"got {process_id!r}")
    if isinstance(initialization_timeout, bool) or not isinstance(initialization_timeout, (int, float)) \
            or not initialization_timeout > 0:
        raise ValueError(f"`initialization_timeout` must be a positive number of seconds, "
                         f"got {initialization_timeout!r}")
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    deadline = time.monotonic() + initialization_timeout
    what = f"process {process_id} of {num_processes}"
    if coordinator_address is not None and process_id not in (None, 0):
        _wait_for_coordinator(coordinator_address, deadline, what)
    formed = threading.Event()
    if on_timeout is not None:
        def watchdog():
            if not formed.wait(max(0.0, deadline - time.monotonic())):
                on_timeout(f"the jax.distributed job did not form within {initialization_timeout:g} s: "
                           f"{what} waited at the coordinator {coordinator_address} for the other processes "
                           f"(are all {num_processes} started, with the same coordinator and process count, "
                           f"each with its own process id?)")
        threading.Thread(target=watchdog, name="cocoa-jax-init-watchdog", daemon=True).start()
    # JAX's own limit comes after the watchdog's, so the watchdog speaks first.
    jax_timeout = int(initialization_timeout) + (30 if on_timeout is not None else 1)
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=jax_timeout, **kwargs)
    finally:
        formed.set()


def _client():
    """The `jax.distributed` key-value client (None in a single-process program)."""
    from jax._src import distributed

    return distributed.global_state.client if jax.process_count() > 1 else None


_EXCHANGES = [0]


def exchange_strings(name: str, value: str, *, timeout: float = 3600.0) -> list[str]:
    """Every process's `value`, in process order (one process: `[value]`).

    Through the coordinator's key-value store: no device computation, nothing compiled.
    Every process must call it with the same `name`, the same number of times; `timeout`
    bounds the wait for the slowest process. Why: to check that every process agrees (run
    hashes) or to hand every process one process's view (the finished units) before work.
    """
    client = _client()
    if client is None:
        return [value]
    _EXCHANGES[0] += 1
    prefix = f"cocoa-jax/{name}/{_EXCHANGES[0]}"
    client.key_value_set(f"{prefix}/{jax.process_index()}", value)
    return [client.blocking_key_value_get(f"{prefix}/{i}", int(timeout * 1000))
            for i in range(jax.process_count())]


def broadcast_string(name: str, value: str | None, *, timeout: float = 3600.0) -> str:
    """Process 0's `value` in every process (the others pass None); waits up to `timeout` s."""
    client = _client()
    if client is None:
        return value
    _EXCHANGES[0] += 1
    key = f"cocoa-jax/{name}/{_EXCHANGES[0]}"
    if jax.process_index() == 0:
        client.key_value_set(key, value)
        return value
    return client.blocking_key_value_get(key, int(timeout * 1000))


def units_for_process(units: Sequence, process_index: int | None = None,
                      process_count: int | None = None) -> list:
    """The units of a sweep this process owns: a contiguous, balanced block.

    Pure (defaults read `jax.process_index()` / `jax.process_count()`): over process_index in
    range(process_count) the blocks partition `units` in order, each unit exactly once, block
    sizes differ by at most one. Give every process the same `units` in the same order.
    """
    if process_index is None:
        process_index = jax.process_index()
    if process_count is None:
        process_count = jax.process_count()
    if isinstance(process_count, bool) or not isinstance(process_count, (int, np.integer)) or process_count <= 0:
        raise ValueError(f"`process_count` must be a positive integer, got {process_count!r}")
    if isinstance(process_index, bool) or not isinstance(process_index, (int, np.integer)) \
            or not 0 <= process_index < process_count:
        raise ValueError(f"`process_index` must be an integer in [0, process_count={process_count}), "
                         f"got {process_index!r}")
    units = list(units)
    base, extra = divmod(len(units), int(process_count))
    start = process_index * base + min(process_index, extra)
    stop = start + base + (1 if process_index < extra else 0)
    return units[start:stop]
