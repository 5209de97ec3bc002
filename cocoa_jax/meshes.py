"""Meshes and the explicand map: N explicands of one program spread over this process's devices.

Two levels of parallelism, which compose:

* Perturbations of ONE explicand (RISE masks, IG path points, SmoothGrad / GradientSHAP
  samples): pass `mesh=make_mesh()` to any method of `cocoa_jax.attribution`; each batch of
  perturbed inputs is split along its leading axis over the mesh (`batching.shard_batch`).
  Sample i always draws from `jax.random.split(key, n)[i]`, so results do not depend on the
  device count.
* Explicands of a batch: `ExplicandMap` vmaps a per-explicand function, shards the explicand
  axis over the mesh, pads the batch to a multiple of the device count and drops the padding
  afterwards; it keeps the compiled program for the next call. `pipeline.attribute` is the
  product's use of it (a method of the table on N explicands).

On a CPU machine, forced host devices (`use_every_core`, or
`XLA_FLAGS=--xla_force_host_platform_device_count=N` set before JAX starts) are how one
process uses every core: measured on a 2-core machine, a ResNet-18 batch sharded over 2 host
devices ran ~1.3x faster than on one device.

Multi-host: after `distributed.initialize_distributed(...)` in every process, `make_mesh()`
spans the devices of all processes and `ExplicandMap` builds global arrays from the
(identical) host-local inputs (`global_array`) and returns the full result on every process.

    mesh = make_mesh()

    def explain_one(x, key, params, target):
        f = targets.explain_fn(lambda xb: model.apply(params, xb), target)
        return attribution.rise(f, x, gaussian_blur(x), key, n_masks=5000)

    keys = jax.random.split(jax.random.key(0), len(images))
    maps = ExplicandMap(explain_one, mesh, in_axes=(0, 0, None, None))(images, keys, params, target)
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cocoa_jax.batching import pad_to_multiple

__all__ = [
    "make_mesh",
    "explicand_sharding",
    "replicated_sharding",
    "global_array",
    "ExplicandMap",
    "default_lanes_per_device",
    "local_explicand_mesh",
    "use_every_core",
    "host_device_count_flags",
]


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


# ----------------------------------------------------------------------------- the explicand map


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


# ----------------------------------------------------------------------------- host devices


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
