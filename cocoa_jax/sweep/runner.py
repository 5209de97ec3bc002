"""Run a sweep: units (seed x corpus class x method), on every local device and every host.

A unit's K targets are ONE stacked `Target` (directions (N, K, D)), so they share every
encoder pass of the attribution method and of the evaluation. Units of one seed and method
are grouped so a group's explicands fill the devices: each group is attributed and evaluated
by the sharded programs of `cocoa_jax.sweep.programs`, then written unit by unit, atomically.

Randomness is derived from (seed, class, method name) only (`programs.unit_keys`), so a unit's
result does not depend on the grouping, the device count, the process count or on which other
units ran before it: a resume gives the same numbers.

Hosts: with several processes (`jax.distributed`), every process first checks that all were
started with the same run (their run hashes are exchanged before anything is written); process
0 writes config.json and the probe, reads which units are finished and hands that set to every
process; the MISSING units are split in contiguous blocks (`distributed.units_for_process`), so a
restart with another process count stays balanced and computes nothing twice. Every process
writes only its own units and results file, and computes on its own devices.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import batching, distributed, meshes, metrics, phases
from cocoa_jax import targets as targets_mod
from cocoa_jax.sweep import inputs
from cocoa_jax.sweep.config import SweepConfig, Unit, plan_units
from cocoa_jax.sweep.programs import SweepPrograms, local_mesh, unit_keys
from cocoa_jax.sweep.store import RunStore, unit_row

MEASURE_NAMES = metrics.MEASURE_NAMES


@dataclasses.dataclass
class SweepResult:
    run_dir: str
    config_hash: str
    computed: list[str]
    skipped: list[str]
    seconds: float
    probe_accuracy: float | None
    process_index: int = 0
    process_count: int = 1
    num_devices: int = 1


def units_per_group(explicands_per_unit: int, explicand_batch: int, num_devices: int,
                    n_classes: int | None = None) -> int:
    """Units whose explicands run together: about `explicand_batch` explicands, with the count
    chosen (among the next `num_devices` candidates) to waste the fewest padded device lanes.

    With `n_classes` (the units of one seed and method), the lanes of ALL its groups count: every
    group is padded to the largest one's lanes (one compiled program), so a short last group
    wastes lanes too (3 classes in groups of 2 compute 4 groups' worth). All classes in one group
    is then a candidate as well when their explicands fit in twice `explicand_batch`. Ties: fewer
    groups, then the smaller group."""
    base = max(1, explicand_batch // explicands_per_unit)

    def waste(k):
        n = k * explicands_per_unit
        return (-n % num_devices) / (n + (-n % num_devices))

    if n_classes is None:
        return min(range(base, base + num_devices), key=lambda k: (waste(k), k))
    candidates = {min(k, n_classes) for k in range(base, base + num_devices)}
    if n_classes * explicands_per_unit <= 2 * explicand_batch:
        candidates.add(n_classes)

    def lanes(k):  # every group padded to k units' explicands, rounded up to the devices
        return -(-n_classes // k) * (-(-k * explicands_per_unit // num_devices) * num_devices)

    return min(candidates, key=lambda k: (lanes(k), -(-n_classes // k), k))


def group_units(units: list[Unit], per_group: int, method_order) -> list[list[Unit]]:
    """Consecutive groups of at most `per_group` units of one seed and method."""
    rank = {m: i for i, m in enumerate(method_order)}
    ordered = sorted(units, key=lambda u: (u.seed, rank[u.method], u.class_id))
    groups: list[list[Unit]] = []
    for unit in ordered:
        if groups and len(groups[-1]) < per_group and (groups[-1][0].seed, groups[-1][0].method) == (
                unit.seed, unit.method):
            groups[-1].append(unit)
        else:
            groups.append([unit])
    return groups


# ----------------------------------------------------------------------------- progress


class Progress:
    """One line per finished group: units done / total, units per second, ETA (per process)."""

    def __init__(self, total: int, resumed: int, label: str, stream=None, enabled: bool = True):
        self.total, self.done, self.resumed = total, resumed, resumed
        self.label, self.stream, self.enabled = label, stream or sys.stderr, enabled
        self.start = time.perf_counter()

    def update(self, count: int, last: str) -> None:
        self.done += count
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = (self.done - self.resumed) / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        resumed = f" ({self.resumed} resumed)" if self.resumed else ""
        print(f"{self.label}: {self.done}/{self.total} units{resumed} | {rate:.2f} units/s | "
              f"ETA {eta} | last {last}", file=self.stream, flush=True)


# ----------------------------------------------------------------------------- probe


def get_probe(config: SweepConfig, store: RunStore, corpus_source, explicand_source, encode, *,
              writer: bool = True, name: str = "probe"):
    """The run's linear probe: from `probe_dir`, from the run dir, or trained once and saved there.

    Only the `writer` process trains and saves (RUN_DIR/probe.npz, atomically, with its accuracy
    in probe.json); the others load what it saved. An npz rather than an orbax checkpoint: orbax
    saves are collective over all processes, and only one process writes here.
    """
    from cocoa_jax import probe as probe_mod
    from cocoa_jax.sweep.store import atomic_write_bytes, npz_bytes

    if config.probe_dir:
        return probe_mod.load_probe(config.probe_dir), None
    weights_path = os.path.join(store.run_dir, f"{name}.npz")
    meta_path = os.path.join(store.run_dir, f"{name}.json")
    if os.path.exists(weights_path) and os.path.exists(meta_path):
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
            if meta.get("config_hash") == store.config_hash:
                with np.load(weights_path, allow_pickle=False) as data:
                    return probe_mod.LinearProbe(jnp.asarray(data["weights"]), jnp.asarray(data["bias"])), \
                        meta.get("accuracy")
        except Exception as err:  # a damaged probe is retrained, never trusted
            if not writer:
                raise
            warnings.warn(f"ignoring damaged probe in {store.run_dir}: {err}", stacklevel=2)
    if not writer:
        raise FileNotFoundError(f"{meta_path}: process 0 has not written the probe")
    rng = np.random.default_rng(12345)
    train_index = np.arange(len(corpus_source))
    if config.probe_train_size and config.probe_train_size < train_index.size:
        train_index = np.sort(rng.choice(train_index, config.probe_train_size, replace=False))
    test_index = np.arange(len(explicand_source))
    if config.probe_test_size and config.probe_test_size < test_index.size:
        test_index = np.sort(rng.choice(test_index, config.probe_test_size, replace=False))
    n_classes = int(max(corpus_source.labels.max(), explicand_source.labels.max())) + 1
    train_reps = encode(corpus_source.images(train_index))
    probe = probe_mod.fit_probe(train_reps, corpus_source.labels[train_index], n_classes=n_classes,
                                key=jax.random.key(0))
    accuracy = probe_mod.accuracy(probe, encode(explicand_source.images(test_index)),
                                  explicand_source.labels[test_index])
    atomic_write_bytes(weights_path, npz_bytes({"weights": np.asarray(probe.weights), "bias": np.asarray(probe.bias)}))
    meta = {"accuracy": accuracy, "config_hash": store.config_hash, "n_train": int(train_index.size),
            "n_test": int(test_index.size)}
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
    return probe, accuracy


def get_probes(config: SweepConfig, store: RunStore, corpus_source, explicand_source, programs, *,
               writer: bool = True):
    """({seed or None: probe}, accuracy): the run's probe under None; with `randomize_model`, one
    probe per seed trained on that seed's randomised encoder (RUN_DIR/probe_s<seed>.npz), and the
    mean of their accuracies."""
    if not config.randomize_model:
        encode = lambda images: programs.encode(programs.trained, images)  # noqa: E731
        probe, accuracy = get_probe(config, store, corpus_source, explicand_source, encode, writer=writer)
        return {None: probe}, accuracy
    probes, accuracies = {}, []
    for seed in config.seeds:
        params = programs.seed_params(seed)
        probes[seed], accuracy = get_probe(config, store, corpus_source, explicand_source,
                                           lambda images: programs.encode(params, images),
                                           writer=writer, name=f"probe_s{seed}")
        accuracies.append(accuracy)
    known = [a for a in accuracies if a is not None]
    return probes, (float(np.mean(known)) if known else None)


# ----------------------------------------------------------------------------- units


class UnitRunner:
    """Computes groups of units with the sweep's programs; keeps the current seed's parameters and
    data (values computed from the seed alone: which seed ran before changes nothing)."""

    def __init__(self, config: SweepConfig, programs: SweepPrograms, corpus_source, explicand_source, probe,
                 classes):
        self.config, self.programs = config, programs
        self.corpus_source, self.explicand_source = corpus_source, explicand_source
        # One probe, or {seed or None: probe} (`get_probes`; per seed with randomize_model).
        self.probes = probe if isinstance(probe, dict) else {None: probe}
        self.classes = classes
        self.image_shape = programs.image_shape
        self._params: dict[int, object] = {}  # one seed's encoder parameters (`programs.seed_params`)
        self._seed_data: dict[int, inputs.SeedData] = {}
        self._cascade: dict = {}  # randomize_cascade: one seed's steps and their samples' representations

    def probe_for(self, seed: int):
        return self.probes[seed] if seed in self.probes else self.probes[None]

    def params_for(self, seed: int):
        """The encoder parameters of `seed`'s units (`SweepPrograms.seed_params`); one seed kept."""
        if seed not in self._params:  # keep one seed: groups run seed by seed
            self._params = {seed: self.programs.seed_params(seed)}
        return self._params[seed]

    def seed_data(self, seed: int) -> inputs.SeedData:
        """`seed`'s samples and their representations under the seed's encoder; one seed kept."""
        if seed not in self._seed_data:
            params = self.params_for(seed)
            self._seed_data = {seed: inputs.sample_seed(self.config, seed, self.classes, self.corpus_source,
                                                        self.explicand_source,
                                                        lambda images: self.programs.encode(params, images))}
        return self._seed_data[seed]

    def _unit_inputs(self, unit: Unit) -> dict:
        """Per-explicand arrays of one unit (leading axis n = explicands_per_class)."""
        config = self.config
        data = self.seed_data(unit.seed)
        index = data.explicand_index[unit.class_id]
        n = len(index)
        xs = np.asarray(self.explicand_source.images(index), np.float32)
        reps = self.programs.encode(self.params_for(unit.seed), xs)
        probe = self.probe_for(unit.seed)
        # Per size of a study (one entry for a plain run): the corpus and foils of that size.
        corpora, foils, foils2 = data.corpus_reps[unit.class_id], data.foil_reps, data.foil2_reps
        if config.reference_of(unit.method) is not None:
            directions = np.zeros((n, 1, reps.shape[-1]), np.float32)  # unused by a reference map
        else:
            # One column per target, or per (target, size) for a target that reads the varied corpus /
            # foil (`config.target_columns`); other targets read size 0's (identical) fixed samples.
            stacked = targets_mod.stack([
                targets_mod.build(t, explicand_reps=reps, corpus_reps=corpora[i or 0], foil_reps=foils[i or 0],
                                  similarity=config.similarity) for t, i in config.target_columns()])
            directions = np.asarray(jnp.broadcast_to(stacked.direction, (n,) + stacked.direction.shape[-2:]))
        ccs = np.stack([np.stack([np.asarray(targets_mod.cocoa(c, f, config.similarity).direction),
                                  np.asarray(targets_mod.cocoa(c, f2, config.similarity).direction)])
                        for c, f, f2 in zip(corpora, foils, foils2)])  # (Z, 2, D)
        majority = np.asarray([int(metrics.majority_class(probe.logits(jnp.asarray(c)), probe.n_classes))
                               for c in corpora], np.int32)  # (Z,)
        if config.size_field is None:
            ccs, majority = ccs[0], majority[0]
        return dict(
            xs=xs, directions=directions, keys=unit_keys(unit.seed, unit.class_id, unit.method, n),
            ccs=np.broadcast_to(ccs, (n,) + ccs.shape), majority=np.broadcast_to(majority, (n,) + majority.shape),
            pred=np.asarray(probe.predict(jnp.asarray(reps)), np.int32), reps=reps,
            _index=index, _majority=majority)

    def run_group(self, units: list[Unit], capacity: int) -> list[tuple[Unit, dict, dict]]:
        """Compute a group of units of one seed and method: [(unit, npz arrays, summary row)].

        capacity: explicand lanes of the programs (the group is padded to it by repeating its
        last explicand, so every group reuses one compiled program; padded results are dropped).
        """
        config = self.config
        start = time.perf_counter()
        params = self.params_for(units[0].seed)
        parts = [self._unit_inputs(u) for u in units]
        sizes = [len(p["_index"]) for p in parts]
        batch = {k: (jnp.concatenate([p[k] for p in parts]) if k == "keys" else
                     np.concatenate([p[k] for p in parts]))
                 for k in ("xs", "directions", "keys", "ccs", "majority", "pred", "reps")}
        batch = {k: batching.pad_to_multiple(v, capacity)[0] for k, v in batch.items()}
        t0 = time.perf_counter()
        attributions = self.programs.attribute(params, units[0].method, batch["xs"], batch["directions"],
                                               batch["keys"])
        attributions = jax.block_until_ready(attributions)
        t1 = time.perf_counter()
        curves, aucs, stored = self.programs.evaluate(params, self.probe_for(units[0].seed), batch["xs"], attributions,
                                                      batch["ccs"], batch["majority"], batch["pred"], batch["reps"])
        curves, aucs = np.asarray(curves, np.float32), np.asarray(aucs, np.float64)
        stored = {k: np.asarray(v, np.float32) for k, v in stored.items()}
        method = units[0].method
        explains = config.reference_of(method) is None  # a reference map explains no target
        if config.size_field is not None:
            curves, aucs, stored = _by_size(config, curves, aucs, stored, method)
        t2 = time.perf_counter()
        if config.randomize_cascade and explains:  # the cascading randomisation test
            stored.update(self.cascade_correlations(units, parts, batch, capacity, attributions))
        metric_scores = self.metric_scores(units, parts, sizes, batch, attributions, params) if explains else None
        data = self.seed_data(units[0].seed)
        fractions = self.programs.eval_fractions()
        target_names = config.unit_targets(method)
        share = 1.0 / len(units)
        out, offset = [], 0
        for unit, part, n in zip(units, parts, sizes):
            rows = slice(offset, offset + n)
            offset += n
            arrays = dict(curves=curves[rows], aucs=aucs[rows], fractions=fractions,
                          explicand_index=part["_index"], corpus_index=data.corpus_index[unit.class_id][-1],
                          explicand_labels=self.explicand_source.labels[part["_index"]],
                          majority_class=np.asarray(int(np.asarray(part["_majority"]).reshape(-1)[-1])),
                          **{k: v[rows] for k, v in stored.items()})
            extra = {}
            if config.size_field is not None:
                # The size axis: size_* arrays (N, Z, K, ...); the plain keys hold the largest size.
                arrays.update(sizes=np.asarray(config.sizes), size_field=np.asarray(config.size_field),
                              size_majority_class=np.asarray(part["_majority"]),
                              corpus_draw=data.corpus_draw[unit.class_id], foil_draw=data.foil_draw)
                size_aucs = arrays["size_aucs"].mean(axis=0)  # (Z, K, 2, M)
                extra = dict(size_field=config.size_field, sizes=list(config.sizes),
                             auc_by_size={str(size): _summary(size_aucs[z], target_names)
                                          for z, size in enumerate(config.sizes)})
            if metric_scores is not None:  # (n, K) per metric; the report reads them from the unit file
                arrays.update({f"metric_{name}": values for name, values in metric_scores[unit].items()})
            summary = _summary(arrays["aucs"].mean(axis=0), target_names)  # (K, 2, M)
            row = unit_row(seed=unit.seed, class_id=unit.class_id, method=unit.method, targets=list(target_names),
                       measures=list(MEASURE_NAMES), n_explicands=n, auc=summary, **extra,
                       seconds=round((time.perf_counter() - start) * share, 4),
                       attribution_seconds=round((t1 - t0) * share, 4),
                       evaluation_seconds=round((t2 - t1) * share, 4),
                       group_units=len(units), devices=self.programs.num_devices)
            out.append((unit, arrays, row))
        if config.randomize_cascade and explains:
            for _, arrays, _ in out:
                arrays["cascade_blocks"] = np.asarray([name for name, _ in self._cascade["steps"][1:]])
        return out

    # -- metrics (cocoa_jax.evaluation) -------------------------------------------------------

    def metric_scores(self, units: list[Unit], parts, sizes, batch, attributions, params) -> dict | None:
        """{unit: {metric: (n, K)}} of the config's `metrics` on each unit's maps, one
        `evaluation.evaluate` call per unit (its explicands, stacked targets and blurred baseline;
        key fold_in(key(seed), class_id), so scores do not depend on how units are grouped)."""
        config = self.config
        if not config.metrics:
            return None
        import types

        from cocoa_jax import evaluation

        model = types.SimpleNamespace(encode_fn=self.programs.spec.encode_fn, params=params)
        normalize = tuple(config.similarity == "cosine" for _ in range(np.shape(batch["directions"])[1]))
        maps = np.asarray(attributions)
        out, offset = {}, 0
        for unit, part, n in zip(units, parts, sizes):
            rows = slice(offset, offset + n)
            offset += n
            xs = np.asarray(batch["xs"][rows])
            target = targets_mod.Target(jnp.asarray(batch["directions"][rows]), normalize)
            out[unit] = evaluation.evaluate(model, xs, maps[rows], metrics=config.metrics, target=target,
                                            baseline=np.asarray(jax.vmap(self.programs.baseline)(xs)),
                                            key=jax.random.fold_in(jax.random.key(unit.seed), unit.class_id),
                                            mesh=self.programs.mesh, allow_zero_maps=True)
        return out

    # -- randomize_cascade ---------------------------------------------------------------

    def cascade_steps(self, seed: int) -> list[tuple[str, object]]:
        """[("trained", trained params), (block, params), ...]: the cascade of `seed`,
        `cascading_randomizations(params, jax.random.key(seed))` in the encoder's top-down block
        order (`forward_block_order` reversed), on the devices; one seed kept."""
        from cocoa_jax.models.randomize import cascading_randomizations, forward_block_order

        if self._cascade.get("seed") != seed:
            spec, mesh = self.programs.spec, self.programs.mesh
            if "order" not in self._cascade:
                example = jnp.zeros((1,) + tuple(self.image_shape), jnp.float32)
                self._cascade["order"] = forward_block_order(spec.encode_fn, spec.params, example)[::-1]
            steps = cascading_randomizations(spec.params, jax.random.key(seed), self._cascade["order"])
            replicated = meshes.replicated_sharding(mesh)
            self._cascade.update(seed=seed, data={}, steps=[("trained", self.programs.trained)] + [
                (name, jax.device_put(params, replicated)) for name, params in steps])
        return self._cascade["steps"]

    def cascade_correlations(self, units: list[Unit], parts, batch, capacity: int, attributions) -> dict:
        """Per-explicand Spearman correlations (capacity, B+1, K) of every cascade step's maps with
        the trained maps `attributions` (capacity, K, H, W[, C]): "cascade_spearman" of the
        channel-mean maps, "cascade_spearman_abs" of the channel means of |a|. Step j attributes the
        same explicands with the same keys under `cascade_steps(seed)[j]`, its target directions
        built from that step's representations of the explicands and of the seed's samples (the
        same draws); step 0 repeats the trained encoder through this path (a correlation of 1)."""
        from cocoa_jax.correlation import spearman

        config, seed, method = self.config, units[0].seed, units[0].method
        reference = _map_pair(attributions)
        signed, absolute = [], []
        for j, (_, params) in enumerate(self.cascade_steps(seed)):
            encode = lambda images, params=params: self.programs.encode(params, images)  # noqa: E731
            if j not in self._cascade["data"]:  # the step's encoder encodes the seed's samples
                self._cascade["data"][j] = inputs.sample_seed(config, seed, self.classes, self.corpus_source,
                                                              self.explicand_source, encode)
            data = self._cascade["data"][j]
            directions = []
            for unit, part in zip(units, parts):
                reps = encode(part["xs"])
                stacked = targets_mod.stack([
                    targets_mod.build(t, explicand_reps=reps, corpus_reps=data.corpus_reps[unit.class_id][0],
                                      foil_reps=data.foil_reps[0], similarity=config.similarity)
                    for t in config.targets])
                directions.append(np.asarray(jnp.broadcast_to(stacked.direction,
                                                              (len(reps),) + stacked.direction.shape[-2:])))
            directions = batching.pad_to_multiple(np.concatenate(directions), capacity)[0]
            maps = _map_pair(self.programs.attribute(params, method, batch["xs"], directions, batch["keys"]))
            signed.append(spearman(reference[0], maps[0], ndim=2))
            absolute.append(spearman(reference[1], maps[1], ndim=2))
        return {"cascade_spearman": np.stack(signed, axis=1), "cascade_spearman_abs": np.stack(absolute, axis=1)}


def _map_pair(attributions):
    """(channel mean, channel mean of |a|) float64 maps (N, K, H, W) of attributions (N, K, H, W[, C])."""
    a = np.asarray(attributions, np.float64)
    return (a.mean(axis=-1), np.abs(a).mean(axis=-1)) if a.ndim == 5 else (a, np.abs(a))


def _summary(mean_auc, target_names) -> dict:
    """{target: {kind: {measure: AUC}}} of (K, 2, M) mean AUCs."""
    return {t: {kind: {m: float(mean_auc[k, j, i]) for i, m in enumerate(MEASURE_NAMES)}
                for j, kind in enumerate(metrics.KINDS)} for k, t in enumerate(target_names)}


def _by_size(config: SweepConfig, curves, aucs, stored, method: str):
    """A size study's outputs on the (size, target) grid.

    In: curves (N, Kc, 2, S+1, Z*M), aucs (N, Kc, 2, Z*M) over the attribution columns
    (`config.target_columns`), maps (N, Kc, H, W). Out: the plain keys at the LARGEST size
    (curves (N, K, 2, S+1, M), aucs, maps: what tables and curve figures read) plus size_curves
    (N, Z, K, 2, S+1, M), size_aucs (N, Z, K, 2, M) and size_<map> (N, Z, K, H, W). Size z of
    target k reads column (k, z) (or the target's single column) and size z's measures."""
    z_count, m_count = len(config.sizes), len(MEASURE_NAMES)
    columns = config.unit_columns(method)
    names = list(config.unit_targets(method))
    col = np.array([[columns.index((t, None)) if (t, None) in columns else columns.index((t, z))
                     for t in names] for z in range(z_count)])  # (Z, K)
    curves = curves.reshape(curves.shape[:-1] + (z_count, m_count))  # (N, Kc, 2, S+1, Z, M)
    aucs = aucs.reshape(aucs.shape[:-1] + (z_count, m_count))  # (N, Kc, 2, Z, M)
    zs = np.arange(z_count)[:, None]
    size_curves = np.moveaxis(curves, 4, 1)[:, zs, col]  # (N, Z, K, 2, S+1, M)
    size_aucs = np.moveaxis(aucs, 3, 1)[:, zs, col]  # (N, Z, K, 2, M)
    out = {"size_curves": size_curves, "size_aucs": size_aucs}
    plain = {}
    for key, maps in stored.items():
        out[f"size_{key}"] = maps[:, col]  # (N, Z, K, H, W)
        plain[key] = out[f"size_{key}"][:, -1]
    return size_curves[:, -1], size_aucs[:, -1], {**plain, **out}


# ----------------------------------------------------------------------------- the run


def _enable_compile_cache(path: str | None) -> None:
    """JAX's persistent compilation cache at `path` (a re-run or resume compiles nothing), unless
    the user has configured one already."""
    if path is None or jax.config.jax_compilation_cache_dir:
        return
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class ProcessMismatch(ValueError):
    """The processes of one job were started with different runs, or process 0 failed to set it up."""


# Seconds a process waits for the others at the start: loading and fingerprinting differ little.
START_TIMEOUT = 600.0
# ... and for process 0's set-up (it may train the probe) or for the slowest process to finish.
WORK_TIMEOUT = 7 * 24 * 3600.0


def _barrier(name: str) -> None:
    """Wait until every process reaches `name` (no-op for one process; no device computation)."""
    distributed.exchange_strings(f"sweep/{name}", "", timeout=WORK_TIMEOUT)


def check_same_run(identity: dict, run_hash: str) -> None:
    """Refuse (ProcessMismatch, in every process) a job whose processes hold different runs.

    Run before anything is written: every process sends its run hash and identity to every
    other, so each names the processes that differ from process 0 and how.
    """
    from cocoa_jax.sweep.config import diff_fields

    payload = json.dumps({"hash": run_hash, "identity": identity}, sort_keys=True)
    views = [json.loads(v) for v in distributed.exchange_strings("sweep/run-hash", payload, timeout=START_TIMEOUT)]
    differ = [i for i, v in enumerate(views) if v["hash"] != views[0]["hash"]]
    if differ:
        i = differ[0]
        fields = diff_fields(views[0]["identity"], views[i]["identity"]) or ["the run hash"]
        raise ProcessMismatch(
            f"process(es) {', '.join(map(str, differ))} of {len(views)} were started with another run than "
            f"process 0 (run hash {views[i]['hash']} vs {views[0]['hash']}; differs in: {'; '.join(fields)}); "
            f"start every process with the same --config and --set. Nothing was written")


def run_identity(config: SweepConfig, spec: inputs.EncoderSpec, corpus_source, explicand_source) -> dict:
    """What a run's hash covers: the result fields of the config, the encoder weights and the data."""
    return {"config": config.result_fields(), "encoder": inputs.fingerprint_params(spec.params),
            "data": inputs.fingerprint_data(corpus_source, explicand_source)}


def run_sweep(config: SweepConfig, run_dir: str, *, encoder=None, datasets=None, progress: bool = True,
              max_units: int | None = None, on_unit: Callable[[str], None] | None = None,
              devices: int | None = None, compile_cache: str | None = "auto") -> SweepResult:
    """Run (or resume) a sweep in `run_dir`, on this process's devices and its share of the units.

    Args:
      config: the protocol. Its run hash must match the one stored in `run_dir` (if any).
      encoder: an object with `params`, `encode_fn(params, x)`, `input_shape` (default:
        `cocoa_jax.models.load(config.encoder, config.encoder_dir)`).
      datasets: {split: LabelledImages} (default: resolve `config.dataset`).
      progress: print a progress line per finished group (units done / total, units/s, ETA).
      max_units: stop after computing this many units (in this process).
      on_unit: called with each unit id right after it is written.
      devices: use this process's first `devices` devices (None: all).
      compile_cache: directory of JAX's persistent compilation cache ("auto": RUN_DIR/compile_cache;
        None: off; an already configured cache is kept).
    Returns: a `SweepResult` with the ids this process computed now, and the ids of the run
    that were finished before it started (the same list in every process).
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"`config` must be a SweepConfig, got {type(config).__name__}")
    start = time.perf_counter()
    mesh = local_mesh(devices)
    spec = inputs.resolve_encoder(config, encoder)
    # Option values (counts, keep_prob, grid vs image size...) before anything is written.
    config.check_method_values(tuple(spec.input_shape))
    corpus_source, explicand_source = inputs.resolve_datasets(config, spec, datasets)
    classes = inputs.classes_of(config, corpus_source)
    identity = run_identity(config, spec, corpus_source, explicand_source)
    run_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    index, count = jax.process_index(), jax.process_count()
    writer = index == 0
    if count > 1:
        check_same_run(identity, run_hash)
    units = plan_units(config, classes)
    probe = probe_accuracy = None
    if writer:
        try:
            store = RunStore(run_dir, dict(config.to_dict()), run_hash, identity=identity, process_index=index)
            _enable_compile_cache(os.path.join(os.path.abspath(run_dir), "compile_cache")
                                  if compile_cache == "auto" else compile_cache)
            programs = SweepPrograms(spec, config, mesh)
            rows = store.read_rows()
            finished_ids = [u.unit_id for u in units if u.unit_id in rows]
            if len(finished_ids) < len(units):
                probe, probe_accuracy = get_probes(config, store, corpus_source, explicand_source, programs)
        except Exception as err:  # tell the waiting processes, then fail here as usual
            distributed.broadcast_string("sweep/ready", json.dumps({"error": f"{type(err).__name__}: {err}"}))
            raise
        # The start barrier: every process uses process 0's finished set (one view, one split).
        distributed.broadcast_string("sweep/ready", json.dumps({"finished": finished_ids}))
    else:
        ready = json.loads(distributed.broadcast_string("sweep/ready", None, timeout=WORK_TIMEOUT))
        if "error" in ready:
            raise ProcessMismatch(f"process 0 could not set up the run in {run_dir}: {ready['error']}")
        finished_ids = ready["finished"]
        store = RunStore(run_dir, dict(config.to_dict()), run_hash, identity=identity, process_index=index,
                         create=False)
        _enable_compile_cache(os.path.join(os.path.abspath(run_dir), "compile_cache") if compile_cache == "auto"
                              else compile_cache)
        programs = SweepPrograms(spec, config, mesh)
    finished = set(finished_ids)
    # Only the missing units are split: balanced whatever the process count was before.
    mine = distributed.units_for_process([u for u in units if u.unit_id not in finished], index, count)
    todo = list(mine)
    skipped = list(finished_ids)
    if max_units is not None:
        todo = todo[:max_units]
    computed: list[str] = []
    if todo:
        if probe is None:
            probe, probe_accuracy = get_probes(config, store, corpus_source, explicand_source, programs,
                                               writer=writer)
        probe = {seed: jax.device_put(p, meshes.replicated_sharding(mesh)) for seed, p in probe.items()}
        runner = UnitRunner(config, programs, corpus_source, explicand_source, probe, classes)
        # A group holds units of one seed and method: at most one per class.
        per_group = min(units_per_group(config.explicands_per_class, config.explicand_batch, programs.num_devices,
                                        len(classes)), len(classes))
        capacity = -(-per_group * config.explicands_per_class // programs.num_devices) * programs.num_devices
        label = (f"sweep {run_hash[:8]} [process {index}/{count}, {programs.num_devices} device(s), "
                 f"{len(skipped)} of the run's {len(units)} units finished before]")
        bar = Progress(len(mine), 0, label, enabled=progress)
        for group in group_units(todo, per_group, config.method_names):
            for unit, arrays, row in runner.run_group(group, capacity):
                store.write_unit(unit.unit_id, arrays, row)
                computed.append(unit.unit_id)
                if on_unit is not None:
                    on_unit(unit.unit_id)
                phases.reached(f"unit {len(computed)}")  # tests: act after this process's n-th unit
            bar.update(len(group), group[-1].unit_id)
    _barrier("done")
    return SweepResult(store.run_dir, store.config_hash, computed, skipped, time.perf_counter() - start,
                       probe_accuracy, index, count, programs.num_devices)


def count_finished(run_dir: str) -> int | None:
    """Units finished in a run directory (every process), or None if it holds no run."""
    from cocoa_jax.sweep.store import open_existing
    try:
        _, store = open_existing(run_dir)
    except (OSError, ValueError, TypeError):
        return None
    return len(store.read_rows(verify=False, warn=False))
