"""The cost of a run before the work: encoder passes per method, a time estimate from a timed
probe of the compiled program on this machine, the expected peak memory, and a default batch
size that bounds memory by the batch and the model (never by masks, steps or samples).

    per = method_passes("rise", {"n_masks": 5000}, (224, 224, 3))     # Passes(forward=5000, gradient=0)
    p = probe(model.encode_fn, model.params, (224, 224, 3), batch=32, k=4)
    est = estimate({"rise": per}, n_explicands=2, probe=p, resident_bytes=rss_bytes())
    for line in preview_lines(est): print(line, file=sys.stderr)

Pass counts come from the method table (`methods.Method.passes`); a forward pass is one image
through the encoder, a gradient pass one image through the encoder and back (the K targets'
backward passes are vectorised into it, as the methods run them). The probe compiles the score
of the stacked target (forward) and its per-image Jacobian (gradient) for ONE batch, runs each
once to warm up, times a second run, and reads XLA's compiled memory analysis of each program.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from cocoa_jax import _checks, methods as methods_mod, targets as targets_mod

__all__ = [
    "Passes",
    "method_passes",
    "evaluation_passes",
    "Probe",
    "probe",
    "Estimate",
    "estimate",
    "effective_batch",
    "default_batch_size",
    "available_bytes",
    "rss_bytes",
    "peak_rss_bytes",
    "preview_lines",
    "LONG_RUN_S",
    "total_work",
    "Plan",
    "plan",
    "pass_lines",
]

LONG_RUN_S = 180.0  # beyond ~3 minutes the preview says which option cuts the time
GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Passes:
    """Encoder passes: `forward` images without a gradient, `gradient` images with one."""

    forward: int = 0
    gradient: int = 0

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(self.forward + other.forward, self.gradient + other.gradient)

    def __mul__(self, n: int) -> "Passes":
        return Passes(self.forward * int(n), self.gradient * int(n))

    __rmul__ = __mul__

    @property
    def total(self) -> int:
        return self.forward + self.gradient


def method_passes(name: str, options: Mapping | None, image_shape) -> Passes:
    """Encoder passes of ONE explicand for method `name` with `options` (checked; unset options
    take the signature defaults, auto options the image's) on (H, W, C) images."""
    shape = tuple(int(v) for v in image_shape)
    resolved = methods_mod.resolved_options(name, dict(options or {}), shape)
    count = methods_mod.get(name).passes
    if count is None:
        raise ValueError(f"method {name!r} states no pass count (`Method.passes`)")
    forward, gradient = count(resolved, shape)
    return Passes(int(forward), int(gradient))


def evaluation_passes(n_steps: int = 50, *, kinds: int = 2, maps: int = 1, batch_size: int | None = None) -> Passes:
    """Forward passes of the insertion/deletion evaluation of `maps` attribution maps of one
    explicand: every kind's curve has n_steps + 1 points (`metrics.ablation_curves`), run in
    equal chunks of at most `batch_size` (the last padded: `batching.map_in_batches`)."""
    n_steps = _checks.check_positive_int("n_steps", n_steps)
    kinds = _checks.check_positive_int("kinds", kinds)
    maps = _checks.check_positive_int("maps", maps)
    batch_size = _checks.check_optional_batch_size(batch_size)
    n = maps * kinds * (n_steps + 1)
    chunks = 1 if batch_size is None or batch_size >= n else -(-n // batch_size)
    return Passes(chunks * -(-n // chunks), 0)


def effective_batch(name: str, options: Mapping | None, image_shape, batch_size: int | None) -> Passes:
    """Images per encoder call inside method `name`: (forward batch, gradient batch). Forward-only
    methods stream 100 images per call when `batch_size` is None, gradient methods take all their
    points at once."""
    from cocoa_jax.attribution_methods._common import DEFAULT_RISE_BATCH_SIZE

    per = method_passes(name, options, image_shape)
    forward = min(batch_size or DEFAULT_RISE_BATCH_SIZE, per.forward)
    gradient = min(batch_size or per.gradient, per.gradient)
    return Passes(forward, gradient)


# ---------------------------------------------------------------------------------------------
# The probe


@dataclasses.dataclass(frozen=True)
class Probe:
    """One batch of the compiled score (forward) and per-image Jacobian (gradient) programs.

    forward_s, gradient_s: seconds per image (the batch's time / batch); *_bytes: XLA's compiled
    memory of one batch (temporaries + arguments + outputs); params_bytes: the parameters (part
    of the arguments, fixed in the batch); compile_s: both compilations (or cache loads)."""

    batch: int
    k: int
    forward_s: float
    gradient_s: float
    forward_bytes: int
    gradient_bytes: int
    params_bytes: int
    compile_s: float

    def bytes_at(self, batch: int, *, gradient: bool) -> int:
        """Program memory at `batch` images per call: the parameters plus the probe's per-image
        memory times the batch (linear in the batch, so monotone)."""
        total = self.gradient_bytes if gradient else self.forward_bytes
        per_image = max(total - self.params_bytes, 0) / self.batch
        return int(self.params_bytes + per_image * max(int(batch), 0))


def _memory(compiled) -> int:
    stats = compiled.memory_analysis()
    if stats is None:
        return 0
    return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
               - stats.alias_size_in_bytes)


def _timed(compiled, *args) -> float:
    jax.block_until_ready(compiled(*args))  # warm-up: first-run allocations
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0


def probe(encode_fn: Callable, params, image_shape, *, batch: int, k: int = 1, gradient: bool = True,
          seed: int = 0) -> Probe:
    """Compile and time one batch of `encode_fn(params, x (batch, H, W, C)) -> (batch, D)` under a
    stacked target of `k` random cosine directions: the score (forward) and, with `gradient`, the
    per-image Jacobian of the k scores (as the gradient methods run it). Pixels are uniform in
    [0, 1). Costs two compilations (cached by the persistent compile cache) and four batches."""
    batch = _checks.check_positive_int("batch", batch)
    k = _checks.check_positive_int("k", k)
    shape = tuple(int(v) for v in image_shape)
    # NumPy draws: no extra small programs to compile for the probe's inputs.
    rng = np.random.default_rng(seed)
    xs = jax.device_put(rng.uniform(size=(batch,) + shape).astype(np.float32))
    dim = jax.eval_shape(encode_fn, params, xs[:1]).shape[-1]
    target = targets_mod.Target(jax.device_put(rng.normal(size=(k, dim)).astype(np.float32)), (True,) * k)

    def scores(p, xb):
        return jax.vmap(targets_mod.explain_fn(lambda images: encode_fn(p, images), target))(xb)

    def jacobians(p, xb):
        f = targets_mod.explain_fn(lambda images: encode_fn(p, images), target)
        return jax.vmap(jax.jacrev(f))(xb)

    params_bytes = int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(params)))
    t0 = time.perf_counter()
    forward = jax.jit(scores).lower(params, xs).compile()
    backward = jax.jit(jacobians).lower(params, xs).compile() if gradient else None
    compile_s = time.perf_counter() - t0
    forward_s = _timed(forward, params, xs) / batch
    gradient_s = _timed(backward, params, xs) / batch if gradient else 0.0
    return Probe(batch, k, forward_s, gradient_s, _memory(forward), _memory(backward) if gradient else 0,
                 params_bytes, compile_s)


# ---------------------------------------------------------------------------------------------
# Memory of this machine and this process


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else physical pages x page size; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """This process's resident memory now (VmRSS), None where /proc is not there."""
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (VmHWM), None where /proc is not there."""
    return _status_bytes("VmHWM")


def default_batch_size(probe_result: Probe, *, lanes: int = 1, budget_bytes: int | None = None,
                       largest: int = 32, gradient: bool = True) -> int:
    """The largest power of two <= `largest` whose programs (`lanes` of them at once, one per
    device running an explicand) fit in `budget_bytes` (default: a quarter of the available
    memory, at most 2 GiB); at least 1."""
    largest = _checks.check_positive_int("largest", largest)
    lanes = _checks.check_positive_int("lanes", lanes)
    if budget_bytes is None:
        free = available_bytes()
        budget_bytes = 2 * GIB if free is None else min(free // 4, 2 * GIB)
    batch = 1
    while batch * 2 <= largest and lanes * probe_result.bytes_at(batch * 2, gradient=gradient) <= budget_bytes:
        batch *= 2
    return batch


# ---------------------------------------------------------------------------------------------
# The estimate


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a run will cost: passes per explicand and in all, seconds and peak memory.

    passes: {method: Passes of one explicand}; seconds: {method: estimated seconds for all
    explicands}; peak_bytes: resident memory now + the largest method program x lanes + the maps
    kept; batch: {method: Passes(forward batch, gradient batch)}."""

    passes: dict
    n_explicands: int
    seconds: dict
    peak_bytes: int
    batch: dict
    lanes: int
    probe: Probe

    @property
    def total_s(self) -> float:
        return float(sum(self.seconds.values()))

    def work(self, name: str) -> float:
        """Method `name`'s passes for all explicands in forward-pass units (a gradient pass
        weighs gradient_s / forward_s): what progress bars count, so their remaining time is right
        from the first method on."""
        per = self.passes[name] * self.n_explicands
        ratio = self.probe.gradient_s / self.probe.forward_s if self.probe.forward_s > 0 else 1.0
        return per.forward + per.gradient * ratio


def estimate(passes: Mapping[str, Passes], n_explicands: int, probe_result: Probe, *,
             batch: Mapping[str, Passes] | None = None, lanes: int = 1, resident_bytes: int = 0,
             map_bytes: Mapping[str, int] | None = None) -> Estimate:
    """Seconds per method = n_explicands x (forward x forward_s + gradient x gradient_s) / lanes
    (explicands run `lanes` at a time, one per device); peak memory = `resident_bytes` (what the
    command holds: runtime, model, images) + max over methods of lanes x the program at its batch
    + the maps of every method (`map_bytes`, all explicands). A gradient method's program is one
    batch's: its chunks run in a rolled loop (`attribution_methods._common.sum_gradient_terms`)."""
    n_explicands = _checks.check_positive_int("n_explicands", n_explicands)
    lanes = _checks.check_positive_int("lanes", lanes)
    parallel = min(lanes, n_explicands)
    seconds, programs = {}, [0]
    batch = dict(batch or {})
    for name, per in passes.items():
        seconds[name] = n_explicands * (per.forward * probe_result.forward_s
                                        + per.gradient * probe_result.gradient_s) / parallel
        b = batch.setdefault(name, Passes(min(probe_result.batch, per.forward),
                                          min(probe_result.batch, per.gradient)))
        if per.gradient:
            programs.append(parallel * probe_result.bytes_at(b.gradient, gradient=True))
        if per.forward:
            programs.append(parallel * probe_result.bytes_at(b.forward, gradient=False))
    peak = int(resident_bytes) + max(programs) + int(sum((map_bytes or {}).values()))
    return Estimate(dict(passes), n_explicands, seconds, peak, batch, parallel, probe_result)


# ---------------------------------------------------------------------------------------------
# What the commands print


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GB" if n_bytes >= 0.1 * GIB else f"{n_bytes / 1024 ** 2:.0f} MB"


def _what(name: str, per: Passes) -> str:
    parts = []
    if per.forward:
        parts.append(f"{per.forward} forward")
    if per.gradient:
        parts.append(f"{per.gradient} gradient")
    return f"{methods_mod.get(name).title}: {' + '.join(parts) or 'no'} passes"


def preview_lines(est: Estimate, *, cheaper: Mapping[str, Estimate] | None = None,
                  limit_s: float = LONG_RUN_S) -> list[str]:
    """The preview a command prints before the work (stderr): passes per method and explicand,
    the estimate, the expected peak memory; past `limit_s`, one line per cheaper option
    (`cheaper`: {'--estimators fast': its Estimate}) saying how much it cuts."""
    lines = [f"cost: {_what(name, per)} per explicand x {est.n_explicands}, ~{_duration(est.seconds[name])}"
             for name, per in est.passes.items()]
    timed = f"{est.probe.forward_s * 1e3:.1f} ms per forward" + (
        f", {est.probe.gradient_s * 1e3:.1f} ms per gradient pass" if est.probe.gradient_s else "")
    lines.append(f"cost: ~{_duration(est.total_s)} in all (probe: {timed}, {est.lanes} explicand(s) at a time); "
                 f"expected peak memory ~{_size(est.peak_bytes)}")
    if est.total_s > limit_s:
        for option, other in (cheaper or {}).items():
            if other.total_s < est.total_s:
                lines.append(f"cost: {option} would take ~{_duration(other.total_s)} "
                             f"({est.total_s / max(other.total_s, 1e-9):.1f}x less)")
    return lines


def total_work(est: Estimate, names: Sequence[str]) -> float:
    """Sum of `Estimate.work` over `names` (a progress bar's total)."""
    return float(sum(est.work(name) for name in names))




class BudgetError(ValueError):
    """A time budget that the methods' smallest counts cannot meet."""


def _smallest_accepted(name: str, options: Mapping, option: str, count: int, ceiling: int, image_shape,
                       batch_size: int | None) -> int:
    """The smallest count >= `count` (at most `ceiling`) that method `name`'s checks accept with
    `options` (centred RISE needs 2 masks, antithetic draws an even count, ...)."""
    for candidate in range(max(int(count), 1), int(ceiling) + 1):
        try:
            methods_mod.check_values(name, {**options, option: candidate}, image_shape, batch_size=batch_size)
            return candidate
        except (TypeError, ValueError):
            continue
    return int(ceiling)


def fit_budget(options: Mapping[str, Mapping], image_shape, estimate_of: Callable[[dict], "Estimate"],
               budget_s: float, *, batch_size: int | None = None) -> tuple[dict, dict]:
    """Options whose estimated time (`estimate_of(options).total_s`) fits `budget_s` seconds.

    Every method with a `Method.count_option` (masks, samples, steps) gets its count scaled by one
    common factor: the budget left after the fixed-count methods, over the scalable methods'
    seconds; each count is rounded down, then up to the smallest its checks accept, and the
    factor shrinks until the estimate fits. Counts are never raised. Returns (options, {method:
    (option, count before, count after)} of the methods changed). Raises ValueError naming the
    least time the methods' smallest accepted counts take when even they do not fit (a
    `BudgetError`)."""
    shape = tuple(int(v) for v in image_shape)
    if not budget_s > 0:
        raise ValueError(f"`budget_s` must be > 0 seconds, got {budget_s}")
    options = {m: dict(o or {}) for m, o in options.items()}
    est = estimate_of(options)
    if est.total_s <= budget_s:
        return options, {}
    counted = {m: methods_mod.get(m).count_option for m in est.passes if methods_mod.get(m).count_option}
    before = {m: int(methods_mod.resolved_options(m, options.get(m), shape)[option]) for m, option in counted.items()}
    scalable = sum(est.seconds[m] for m in counted)
    fixed = est.total_s - scalable
    factor = (budget_s - fixed) / scalable if scalable > 0 else 0.0
    # Each method's smallest accepted count, found once (a check is a trace); the loop then only
    # checks counts above it.
    least = {m: _smallest_accepted(m, options.get(m, {}), option, 1, before[m], shape, batch_size)
             for m, option in counted.items()}
    for _ in range(40):
        trial = dict(options)
        for m, option in counted.items():
            wanted = max(int(before[m] * max(factor, 0.0)), least[m])
            trial[m] = {**options.get(m, {}), option: _smallest_accepted(m, options.get(m, {}), option, wanted,
                                                                          before[m], shape, batch_size)}
        total = estimate_of(trial).total_s
        if total <= budget_s:
            changed = {m: (option, before[m], trial[m][option]) for m, option in counted.items()
                       if trial[m][option] != before[m]}
            return trial, changed
        if factor <= 0 or all(trial[m][o] == least[m] for m, o in counted.items()):
            raise BudgetError(f"a budget of {budget_s:g} s cannot be met: the smallest counts take ~{total:.3g} s "
                             f"(estimated from the probe; compiling not counted)")
        factor *= min(0.9, budget_s / total)
    raise BudgetError(f"a budget of {budget_s:g} s could not be fitted")  # not reached: the factor reaches 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a command decides and says before the work: the batch (None: all at once), the
    estimate, the preview lines (empty when quiet) and the options to run (those given, with
    counts scaled down to a time budget when one was given)."""

    batch_size: int | None
    estimate: Estimate
    lines: list
    options: dict = dataclasses.field(default_factory=dict)


def plan(encode_fn: Callable, params, image_shape, options: Mapping[str, Mapping], *, n_explicands: int, k: int,
         lanes: int = 1, batch_size: int | None = None, cheaper_profile: str | None = "fast",
         budget_s: float | None = None, quiet: bool = False) -> Plan:
    """Probe the model, choose the batch, estimate, and write the preview of a run of the methods
    in `options` ({method: options}) on `n_explicands` (H, W, C) images for `k` stacked targets.

    Images over 64 px with `batch_size` None get `default_batch_size` (memory set by the batch);
    smaller ones keep None (all at once, the programs as before). The probe runs on a batch of
    4 (large images) or 8. `cheaper_profile`: the estimator profile whose saving the preview
    states past `LONG_RUN_S` (None: none). Methods with no `Method.passes` are left out."""
    shape = tuple(int(v) for v in image_shape)
    large = max(shape[:2]) > 64
    counted = [m for m in options if methods_mod.get(m).passes is not None]
    per = {m: method_passes(m, options.get(m), shape) for m in counted}
    gradient = any(p.gradient for p in per.values())
    probe_result = probe(encode_fn, params, shape, batch=min(batch_size or 8, 4 if large else 8), k=k,
                         gradient=gradient)
    if batch_size is None and large:
        batch_size = default_batch_size(probe_result, lanes=lanes, gradient=gradient)

    def estimate_of(values):
        passes = {m: method_passes(m, values.get(m), shape) for m in counted}
        batches = {m: effective_batch(m, values.get(m), shape, batch_size) for m in counted}
        maps = {m: n_explicands * k * shape[0] * shape[1] * (shape[2] if methods_mod.get(m).per_channel else 1) * 4
                for m in counted}
        return estimate(passes, n_explicands, probe_result, batch=batches, lanes=lanes,
                        resident_bytes=rss_bytes() or 0, map_bytes=maps)

    options = {m: dict(o or {}) for m, o in options.items()}
    changed = {}
    if budget_s is not None:
        fitted, changed = fit_budget({m: options.get(m, {}) for m in counted}, shape, estimate_of, budget_s,
                                     batch_size=batch_size)
        options.update(fitted)
    est = estimate_of(options)
    lines = []
    if not quiet:
        cheaper = {}
        if cheaper_profile is not None and budget_s is None:
            cheaper[f"--estimators {cheaper_profile}"] = estimate_of(
                {m: methods_mod.with_profile(cheaper_profile, m, options.get(m)) for m in counted})
        lines = preview_lines(est, cheaper=cheaper)
        lines.append(f"cost: batch {batch_size or 'all'} perturbed inputs per encoder call")
        if budget_s is not None:
            scaled = "; ".join(f"{methods_mod.get(m).title} {o} {a} -> {b}" for m, (o, a, b) in changed.items())
            lines.append(f"cost: budget {budget_s:g} s: " + (scaled if changed else "fits, no count changed")
                         + " (the encoder passes as estimated from the probe; compiling is not counted)")
    return Plan(batch_size, est, lines, options)


def pass_lines(options: Mapping[str, Mapping], image_shape, *, explicands: int, where: str, eval_steps: int | None = None,
               maps: int = 1, references: int = 0) -> list[str]:
    """Preview lines of passes only (no probe: a command whose encoder loads later, the sweep):
    per method, its passes per explicand and, with `eval_steps`, the insertion/deletion passes of
    its `maps` maps (one per target); `references` more maps per explicand are evaluated (the
    random reference); `where` names what `explicands` counts ("per class and seed")."""
    shape = tuple(int(v) for v in image_shape)
    lines, total = [], Passes()
    evaluation = evaluation_passes(eval_steps, maps=maps) if eval_steps else Passes()
    for name in options:
        if methods_mod.get(name).passes is None:
            continue
        per = method_passes(name, options.get(name), shape)
        total = total + (per + evaluation) * explicands
        lines.append(f"cost: {_what(name, per)} per explicand"
                     + (f", evaluation {evaluation.forward} forward passes" if eval_steps else ""))
    if eval_steps and references:
        reference = evaluation_passes(eval_steps, maps=maps) * references
        total = total + reference * explicands
        lines.append(f"cost: random reference: evaluation {reference.forward} forward passes per explicand")
    lines.append(f"cost: {explicands} explicand(s) {where}: {total.forward} forward + {total.gradient} gradient passes")
    return lines
