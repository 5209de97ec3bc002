"""Spreading attribution work over devices and hosts.

Two levels of parallelism, which compose:

* Perturbations of ONE explicand (RISE masks, IG path points, SmoothGrad / GradientSHAP
  samples): pass `mesh=make_mesh()` to any method of `cocoa_jax.attribution`; each batch of
  perturbed inputs is split along its leading axis over the mesh. Sample i always draws from
  `jax.random.split(key, n)[i]`, so results do not depend on the device count.
* Explicands of a batch: `map_explicands` (or `ExplicandMap` to keep the compiled program)
  vmaps a per-explicand function and shards the explicand axis over the mesh, padding the
  batch to a multiple of the device count and dropping the padding afterwards.

On a CPU machine, forced host devices (`XLA_FLAGS=--xla_force_host_platform_device_count=N`,
set before JAX starts) are how one process uses every core: measured on a 2-core machine,
a ResNet-18 batch sharded over 2 host devices ran ~1.3x faster than on one device.

Multi-host: call `initialize_distributed(...)` first in every process; `make_mesh()` then
spans the devices of all processes, `map_explicands` builds global arrays from the
(identical) host-local inputs and returns the full result on every process, and
`units_for_process` splits a sweep's units so that each host writes only its own.

    mesh = make_mesh()

    def explain_one(x, key, params, target):
        f = targets.explain_fn(lambda xb: model.apply(params, xb), target)
        return attribution.rise(f, x, gaussian_blur(x), key, n_masks=5000)

    keys = jax.random.split(jax.random.key(0), len(images))
    maps = map_explicands(explain_one, images, keys, params, target,
                          in_axes=(0, 0, None, None), mesh=mesh)
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "make_mesh",
    "explicand_sharding",
    "replicated_sharding",
    "pad_to_multiple",
    "pad_rows",
    "padding_for",
    "chunk_ranges",
    "shard_batch",
    "map_in_batches",
    "ExplicandMap",
    "map_explicands",
    "global_array",
    "initialize_distributed",
    "DistributedInitError",
    "exchange_strings",
    "broadcast_string",
    "units_for_process",
]


# ----------------------------------------------------------------------------- meshes


def make_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = "batch") -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process).

    The axis is of type Auto (`jax.make_mesh` in this JAX version defaults to Explicit axes),
    so the partitioner places everything not pinned by a sharding: no `jax.sharding.use_mesh`
    context is needed around the attribution methods or `ExplicandMap`.
    """
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"`axis_name` must be a non-empty string, got {axis_name!r}")
    if devices is None:
        devices = jax.devices()
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` must hold at least one device, got an empty sequence")
    if not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"`devices` must be jax.Device objects, got {[type(d).__name__ for d in devices]}")
    if len(set(devices)) != len(devices):
        raise ValueError("`devices` must not repeat a device")
    auto = (jax.sharding.AxisType.Auto,)
    return Mesh(np.array(devices, dtype=object), (axis_name,), axis_types=auto)


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh (see make_mesh), got {type(mesh).__name__}")
    return mesh


def explicand_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over every axis of `mesh`, other axes replicated."""
    mesh = _check_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The whole array on every device of `mesh`."""
    return NamedSharding(_check_mesh(mesh), PartitionSpec())


# ----------------------------------------------------------------------------- padding


def pad_to_multiple(array, multiple: int, axis: int = 0):
    """Pad `array` along `axis` to a multiple of `multiple` by repeating its last entry.

    Repeating a real entry (rather than zeros) keeps padded explicands valid inputs: no
    zero image whose representation has no direction, no NaN in a padded lane.
    Returns (padded, original_length).
    """
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple <= 0:
        raise ValueError(f"`multiple` must be a positive integer, got {multiple!r}")
    shape = tuple(array.shape) if hasattr(array, "shape") else np.shape(array)
    if not shape:
        raise ValueError("`array` must have at least one axis to pad, got a scalar")
    axis = axis % len(shape)
    n = shape[axis]
    if n == 0:
        raise ValueError(f"`array` must not be empty along axis {axis}, got shape {shape}")
    extra = (-n) % multiple
    if not extra:
        return array, n
    index = np.concatenate([np.arange(n), np.full(extra, n - 1)])
    if isinstance(array, jax.Array):
        return jnp.take(array, jnp.asarray(index), axis=axis), n
    return np.take(np.asarray(array), index, axis=axis), n


# ----------------------------------------------------------------------------- batches inside a program
# The one home of chunking, padding and sharding of perturbation batches (used by
# `cocoa_jax.attribution`, `cocoa_jax.metrics` and the sweep).


def pad_rows(array: jax.Array, count: int, value: float | None = None) -> jax.Array:
    """Append `count` rows along axis 0: copies of the last row, or `value`."""
    if count == 0:
        return array
    extra = jnp.repeat(array[-1:], count, axis=0)
    return jnp.concatenate([array, extra if value is None else jnp.full_like(extra, value)])


def padding_for(mesh: Mesh | None, batch: int) -> int:
    """Rows to add so `batch` splits evenly over the mesh (padded rows get zero weight)."""
    return 0 if mesh is None else -batch % mesh.size


def chunk_ranges(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    """Static (start, stop) index ranges covering range(n) in chunks of batch_size."""
    size = n if batch_size is None else min(batch_size, n)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def shard_batch(batch: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Split a batch of perturbed inputs along its leading axis over every device of `mesh`.

    The constraint is a hint to the partitioner (an Auto-axes view of `mesh`, whatever axis
    types it was made with): the encoder's batch axis is split, and sums over samples
    become all-reduces. None: unchanged.
    """
    if mesh is None:
        return batch
    auto = Mesh(mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))
    return jax.lax.with_sharding_constraint(batch, NamedSharding(auto, PartitionSpec(tuple(mesh.axis_names))))


def map_in_batches(fn, inputs: jax.Array, batch_size: int | None, multiple: int = 1) -> jax.Array:
    """fn over the leading axis of inputs in equal chunks of at most batch_size.

    The chunk size is ceil(n / n_chunks) rounded up to `multiple` (the device count when
    sharded), so padding (repeats of the last input, dropped from the output) stays small.
    Chunks run in a rolled `lax.map` (cheap for forward-only work).
    """
    n = inputs.shape[0]
    n_chunks = 1 if batch_size is None or batch_size >= n else -(-n // batch_size)
    size = -(-n // n_chunks)
    size = -(-size // multiple) * multiple
    padded = pad_rows(inputs, n_chunks * size - n)
    if n_chunks == 1:
        return fn(padded)[:n]
    out = jax.lax.map(fn, padded.reshape((n_chunks, size) + inputs.shape[1:]))
    return out.reshape((n_chunks * size,) + out.shape[2:])[:n]


# ----------------------------------------------------------------------------- global arrays


def _is_key_array(data) -> bool:
    return isinstance(data, jax.Array) and jax.dtypes.issubdtype(data.dtype, jax.dtypes.prng_key)


def global_array(data, sharding: NamedSharding) -> jax.Array:
    """A global jax.Array with `sharding` from host data that every process holds in full.

    Single process: a plain `device_put`. Multiple processes: each process supplies only the
    shards its own devices hold (`jax.make_array_from_callback`).
    """
    if isinstance(data, jax.Array) and data.is_fully_addressable is False:
        return data  # already global
    if jax.process_count() == 1 or sharding.is_fully_addressable:
        return jax.device_put(data, sharding)  # every device is this process's: a plain (no-op if placed) put
    if _is_key_array(data):  # typed PRNG keys: place their raw data, then re-wrap
        impl = jax.random.key_impl(data)
        raw = global_array(jax.random.key_data(data), sharding)
        return jax.jit(lambda r: jax.random.wrap_key_data(r, impl=impl), out_shardings=sharding)(raw)
    host = np.asarray(data)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


# ----------------------------------------------------------------------------- explicand batches


def _normalise_in_axes(in_axes, n_args: int) -> tuple:
    if in_axes == 0 or in_axes is None:
        axes = (in_axes,) * n_args
    else:
        if not isinstance(in_axes, (tuple, list)) or len(in_axes) != n_args:
            raise ValueError(
                f"`in_axes` must be 0, None, or a tuple of 0/None with one entry per argument "
                f"({n_args}), got {in_axes!r}"
            )
        axes = tuple(in_axes)
    if any(a not in (0, None) for a in axes):
        raise ValueError(f"`in_axes` entries must be 0 (batched) or None (shared), got {in_axes!r}")
    if all(a is None for a in axes):
        raise ValueError("`in_axes` must mark at least one argument as batched (0)")
    return axes


def _batch_length(args, axes) -> int:
    lengths = set()
    for i, (arg, axis) in enumerate(zip(args, axes)):
        if axis is None:
            continue
        leaves = jax.tree_util.tree_leaves(arg)
        if not leaves:
            raise ValueError(f"batched argument {i} holds no arrays")
        for leaf in leaves:
            shape = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
            if not shape:
                raise ValueError(f"batched argument {i} has a scalar leaf; batched leaves need a leading axis")
            lengths.add(shape[0])
    if len(lengths) != 1:
        raise ValueError(f"batched arguments must share their leading (explicand) length, got {sorted(lengths)}")
    n = lengths.pop()
    if n == 0:
        raise ValueError("the explicand batch is empty")
    return n


class ExplicandMap:
    """`fn` vmapped over explicands, the explicand axis sharded over `mesh`; compiled once per shape.

    Args:
      fn: per-explicand function (e.g. a closure calling `attribution.rise`).
      mesh: the mesh (default `make_mesh()`); None devices = all devices of all processes.
      in_axes: 0 (batched along the leading axis) or None (shared, replicated) per
        positional argument, or one value for all. Batched arguments may be pytrees and
        typed PRNG key arrays.
      gather: return the result replicated on every device (readable with np.asarray in
        every process); False keeps it sharded along the explicand axis.
      donate: donate the batched input buffers to the computation.
      vectorized: `fn` already takes the whole explicand batch (batched arguments with their
        leading axis) and is not vmapped; e.g. `metrics.insertion_deletion_batch`.
      lanes_per_device: explicands each device takes per program call; a longer batch runs as
        several calls of the same compiled program, joined on the devices. Default
        (`default_lanes_per_device()`): 1 on CPU, all of them on accelerators.

    Calling it with a batch whose length does not divide the device count (times
    `lanes_per_device`) pads the batch (repeating the last explicand) and drops the padded results.
    """

    def __init__(self, fn: Callable, mesh: Mesh | None = None, in_axes: Any = 0, *,
                 gather: bool = True, donate: bool = False, vectorized: bool = False,
                 lanes_per_device: int | None | str = "default"):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.mesh = make_mesh() if mesh is None else _check_mesh(mesh)
        self.in_axes = in_axes
        self.gather = bool(gather)
        self.donate = bool(donate)
        self.vectorized = bool(vectorized)
        if lanes_per_device == "default":
            lanes_per_device = default_lanes_per_device()
        if lanes_per_device is not None and (isinstance(lanes_per_device, bool) or not isinstance(
                lanes_per_device, int) or lanes_per_device <= 0):
            raise ValueError(f"`lanes_per_device` must be a positive integer or None, got {lanes_per_device!r}")
        self.lanes_per_device = None if self.vectorized else lanes_per_device
        self._compiled: dict[tuple, Callable] = {}
        self._joined = None

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def _jitted(self, axes: tuple) -> Callable:
        if axes not in self._compiled:
            batched, shared = explicand_sharding(self.mesh), replicated_sharding(self.mesh)
            in_shardings = tuple(batched if a == 0 else shared for a in axes)
            out_shardings = shared if self.gather else batched
            donate = tuple(i for i, a in enumerate(axes) if a == 0) if self.donate else ()
            fn = self.fn if self.vectorized else jax.vmap(self.fn, in_axes=axes)
            self._compiled[axes] = jax.jit(fn, in_shardings=in_shardings,
                                           out_shardings=out_shardings, donate_argnums=donate)
        return self._compiled[axes]

    def __call__(self, *args):
        if not args:
            raise ValueError("ExplicandMap needs at least one argument")
        axes = _normalise_in_axes(self.in_axes, len(args))
        n = _batch_length(args, axes)
        devices = self.num_devices
        step = -(-n // devices) * devices
        if self.lanes_per_device is not None:
            step = min(step, self.lanes_per_device * devices)
        batched, shared = explicand_sharding(self.mesh), replicated_sharding(self.mesh)
        args = [jax.tree_util.tree_map(lambda leaf: pad_to_multiple(leaf, step)[0], arg) if axis == 0 else
                jax.tree_util.tree_map(lambda leaf: global_array(leaf, shared), arg)
                for arg, axis in zip(args, axes)]
        program = self._jitted(axes)
        outs = []
        for start in range(0, -(-n // step) * step, step):
            placed = [jax.tree_util.tree_map(lambda leaf: global_array(leaf[start:start + step], batched), arg)
                      if axis == 0 else arg for arg, axis in zip(args, axes)]
            outs.append(program(*placed))
        out = outs[0] if len(outs) == 1 else self._join(*outs)
        if len(outs) * step == n:
            return out
        return jax.tree_util.tree_map(lambda leaf: leaf[:n], out)

    def _join(self, *outs):
        """The calls' outputs concatenated along the explicand axis, on the devices (one program)."""
        if self._joined is None:
            where = replicated_sharding(self.mesh) if self.gather else explicand_sharding(self.mesh)
            self._joined = jax.jit(lambda *parts: jax.tree_util.tree_map(lambda *leaves: jnp.concatenate(leaves),
                                                                         *parts), out_shardings=where)
        return self._joined(*outs)


def default_lanes_per_device() -> int | None:
    """Explicands per device per program call: 1 on CPU, None (all) on accelerators.

    Measured on the 2-core CPU (docs/performance.md): vmapping explicands over an encoder that
    already batches each explicand's perturbed inputs made XLA's CPU programs slower (digits
    encoder: RISE 1.6x, IG / GradientSHAP 1.3x; ResNet-18 unchanged); accelerators want the
    larger batches."""
    return 1 if jax.default_backend() == "cpu" else None


def local_explicand_mesh(n: int) -> Mesh | None:
    """A mesh over at most `n` of this process's devices (one explicand per device), or None
    where that is one device: how a single-process command spreads n explicands.

    More devices than explicands would pad lanes that repeat work (measured on the 2-core CPU:
    1 explicand on 2 host devices 1.51 s vs 1.07 s on one)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"`n` must be a positive integer (explicands), got {n!r}")
    devices = jax.local_devices()[:int(n)]
    return make_mesh(devices) if len(devices) > 1 else None


def map_explicands(fn: Callable, *args, in_axes: Any = 0, mesh: Mesh | None = None,
                   gather: bool = True):
    """One-off `ExplicandMap(fn, mesh, in_axes, gather=gather)(*args)` (compiles each call;
    keep an `ExplicandMap` to reuse the compiled program)."""
    return ExplicandMap(fn, mesh, in_axes, gather=gather)(*args)


# ----------------------------------------------------------------------------- multi-host


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


def use_every_core(count: int | None = None) -> bool:
    """On CPU, one forced host device per core (or `count`): how one process uses every core.

    Sets XLA_FLAGS, so it acts only before JAX starts its backends; without `count`, a device
    count the user put in XLA_FLAGS is kept. Harmless on GPU/TPU machines (the flag only shapes
    the CPU platform). Returns whether the flag was set."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    if count is None and "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False
    os.environ["XLA_FLAGS"] = host_device_count_flags(count or os.cpu_count() or 1)
    return True


def host_device_count_flags(count: int, flags: str | None = None) -> str:
    """XLA_FLAGS value that forces `count` CPU host devices (replacing any earlier count);
    set it in the environment before JAX starts (e.g. for a subprocess)."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ValueError(f"`count` must be a positive integer, got {count!r}")
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + [f"--xla_force_host_platform_device_count={count}"])
