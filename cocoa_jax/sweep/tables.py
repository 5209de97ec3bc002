"""A finished (or partial) run read once, and the cells of its tables: what `report` and `studies`
both build on (neither imports the other's internals; `report` adds `studies`' sections).

Rows are (method, target) in the canonical order (`row_order`), the reference map's row last
(`SweepConfig.reference_of`: no target, its target cell left empty). A cell is (mean over seeds,
95% t half-width, number of seeds), or None where no unit finished.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from cocoa_jax import methods as methods_mod
from cocoa_jax import targets as targets_mod
from cocoa_jax.metrics import KINDS, MEASURES, RANDOM_REFERENCE
from cocoa_jax.sweep.config import METHOD_NAMES, SweepConfig, plan_units
from cocoa_jax.sweep.store import CONFIG_FILE, open_existing

METHOD_TITLES = {**{name: method.title for name, method in methods_mod.METHODS.items()},
                 RANDOM_REFERENCE.name: RANDOM_REFERENCE.title}
TARGET_TITLES = dict(targets_mod.TARGET_TITLES, **{RANDOM_REFERENCE.name: RANDOM_REFERENCE.title})
MEASURE_TITLES = {name: measure.title for name, measure in MEASURES.items()}
KIND_SHORT = {"insertion": "ins.", "deletion": "del."}

# Two-sided 97.5% Student t quantiles, df = 1..30 (then the normal 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def ci95_halfwidth(values, axis: int | None = None):
    """Half-width of the 95% t confidence interval of the mean; nan for fewer than 2 values.

    axis=None: over all values (a float); otherwise along `axis` (an array, e.g. seeds x steps
    -> one half-width per step, the curves' bands)."""
    values = np.asarray(values, dtype=np.float64)
    if axis is None:
        values, axis = values.ravel(), 0
    n = values.shape[axis]
    if n < 2:
        out = np.full(np.delete(values.shape, axis), np.nan)
        return float("nan") if out.ndim == 0 else out
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    out = t * values.std(axis=axis, ddof=1) / math.sqrt(n)
    return float(out) if np.ndim(out) == 0 else out


def read_record(run_dir: str) -> tuple[dict, dict | None]:
    """(identity, environment) that config.json records: what the run hash covers and where and when
    the run started (`store.run_environment`; None for runs written before it was recorded)."""
    with open(os.path.join(run_dir, CONFIG_FILE)) as fh:
        stored = json.load(fh)
    return stored.get("identity") or {}, stored.get("environment")


class Run:
    """A run directory read ONCE for a report: config, rows (each unit file's SHA-256 verified
    once), per-seed AUC means; unit arrays loaded at most once. Every report function takes a
    `Run` or a run directory (then it reads one). `identity`: what the run hash covers (encoder
    weights and data fingerprints); `environment`: where and when the run started (None for runs
    written before it was recorded)."""

    def __init__(self, run_dir: str):
        config_dict, store = open_existing(run_dir)
        self.run_dir = run_dir
        self.config = SweepConfig.from_dict(config_dict)
        self.config_hash = store.config_hash
        self.identity, self.environment = read_record(run_dir)
        self._store = store
        self.rows = store.read_rows()
        self.per_seed = _per_seed_means(self.rows)
        self._units: dict[str, dict] = {}

    def load_unit(self, row: dict) -> dict:
        if row["unit"] not in self._units:
            self._units[row["unit"]] = self._store.load_unit(row)
        return self._units[row["unit"]]

    def results_paths(self) -> list[str]:
        """The run's results files, one per process that wrote units."""
        return self._store.results_paths()


def open_run(run) -> Run:
    return run if isinstance(run, Run) else Run(run)


def _per_seed_means(rows) -> dict:
    per_seed: dict = {}
    for row in rows.values():
        for target, by_kind in row["auc"].items():
            cell = per_seed.setdefault((row["method"], target), {})
            for kind, by_measure in by_kind.items():
                for measure, value in by_measure.items():
                    seed_values = cell.setdefault((kind, measure), {})
                    sums = seed_values.setdefault(row["seed"], [0.0, 0])
                    # Explicand-weighted mean over a seed's classes.
                    sums[0] += value * row["n_explicands"]
                    sums[1] += row["n_explicands"]
    for cell in per_seed.values():
        for key, seed_values in cell.items():
            cell[key] = {seed: s / n for seed, (s, n) in seed_values.items()}
    return per_seed


def collect(run):
    """(config, run, rows, per_seed) of a `Run` or run directory: per_seed is
    {(method, target): {(kind, measure): {seed: value}}}; `run.load_unit(row)` gives a unit's arrays."""
    run = open_run(run)
    return run.config, run, run.rows, run.per_seed


def row_order(config: SweepConfig):
    """(method, target) rows: methods in the table's order (config.json stores the methods dict with
    sorted keys) x the config's targets, then the reference map's one row (`unit_targets`)."""
    methods = sorted(config.methods, key=lambda m: METHOD_NAMES.index(m) if m in METHOD_NAMES else len(METHOD_NAMES))
    order = [(m, t) for m in methods for t in config.targets]
    references = [m for m in config.method_names if config.reference_of(m) is not None]
    return order + [(m, t) for m in references for t in config.unit_targets(m)]


def row_titles(config: SweepConfig, method: str, target: str) -> list[str]:
    """A row's first two cells: the method's title and the target's (empty for a reference map)."""
    return [METHOD_TITLES.get(method, method),
            "" if config.reference_of(method) is not None else TARGET_TITLES.get(target, target)]


def format_cell(cell, best: bool = False) -> str:
    """"0.422 (0.006)": a cell's mean and 95% half-width (the mean alone for one seed; "-" for none)."""
    if cell is None:
        return "-"
    mean, ci, n = cell
    value = f"**{mean:.3f}**" if best else f"{mean:.3f}"
    return f"{value} ({ci:.3f})" if n > 1 else value


def best_rows(columns, body) -> list[set[int]]:
    """Per column (kind, measure): the indices of the rows whose mean is the best of the column
    in the measure's direction (`Measure.better`); ties all count, empty cells never do."""
    out = []
    for c, (kind, measure) in enumerate(columns):
        means = {i: cells[c][0] for i, (_, cells) in enumerate(body) if cells[c] is not None}
        if not means:
            out.append(set())
            continue
        pick = max if MEASURES[measure].better(kind) == "higher" else min
        best = pick(means.values())
        out.append({i for i, v in means.items() if v == best})
    return out


def table(run_dir: str, measures=("ccs", "corpus_majority_prob")):
    """(header, rows of cells, completeness note). Each cell: (mean, ci) or None."""
    config, store, rows, per_seed = collect(run_dir)
    columns = [(kind, m) for m in measures for kind in KINDS]
    body = []
    for method, target in row_order(config):
        cells = []
        for kind, measure in columns:
            values = per_seed.get((method, target), {}).get((kind, measure), {})
            seeds = [values[s] for s in config.seeds if s in values]
            cells.append((float(np.mean(seeds)), ci95_halfwidth(seeds), len(seeds)) if seeds else None)
        body.append(((method, target), cells))
    total = len(plan_units(config, config.classes or sorted({r["class_id"] for r in rows.values()})))
    note = f"{len(rows)} of {total} units finished; run hash {store.config_hash}"
    return config, columns, body, note


def column_header(measure: str, kind: str) -> str:
    """A column's title, e.g. "representation shift del. (↑)": the measure's own direction."""
    return f"{MEASURE_TITLES[measure]} {KIND_SHORT[kind]} ({MEASURES[measure].arrow(kind)})"


DIRECTION_NOTE = ("↑: higher is better, ↓: lower is better, for each measure and curve (`cocoa_jax.metrics.MEASURES`); "
                  "representation shift is a distance from the explicand's representation, so for it a LOWER "
                  "insertion and a HIGHER deletion AUC are better. Bold: the best mean of a column in its direction.")


def markdown_table(run_dir: str, measures=("ccs", "corpus_majority_prob"), *, directions_note: bool = True) -> str:
    """The paper-layout table of `measures` (see the module docstring); `directions_note`: end with
    the line saying what the arrows and bold mean (`write_report` states it once, in its header)."""
    config, columns, body, note = table(run_dir, measures)
    header = ["Method", "Target"] + [column_header(m, k) for k, m in columns]
    best = best_rows(columns, body)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, ((method, target), cells) in enumerate(body):
        lines.append("| " + " | ".join(row_titles(config, method, target)
                                       + [format_cell(c, i in best[j]) for j, c in enumerate(cells)]) + " |")
    n_seeds = len(config.seeds)
    lines.append("")
    if n_seeds > 1:
        lines.append(f"Mean (95% CI half-width, t over {n_seeds} seeds); corpus mode `{config.corpus_mode}`; {note}.")
    else:
        lines.append(f"Mean over the explicands of one seed: no confidence interval (intervals are over seeds, "
                     f"and one seed gives no spread; run several seeds for them); corpus mode "
                     f"`{config.corpus_mode}`; {note}.")
    if directions_note:
        lines.append(DIRECTION_NOTE)
    return "\n".join(lines)


def metric_cells(run) -> tuple[SweepConfig, list, list]:
    """The config's `metrics` (cocoa_jax.evaluation) per (method, target) row: (config, metrics,
    [((method, target), [cell per metric])]), a cell (mean over seeds, 95% t half-width, seeds) of
    the seed's explicand-weighted mean over its classes, read from the units' `metric_<name>` arrays
    (n, K); the reference map's row is not scored (it explains no target)."""
    config, run, rows, _ = collect(run)
    sums: dict = {}
    for row in rows.values():
        if config.reference_of(row["method"]) is not None:
            continue
        arrays = run.load_unit(row)
        for name in config.metrics:
            if f"metric_{name}" not in arrays:
                continue
            values = np.asarray(arrays[f"metric_{name}"], np.float64)  # (n, K)
            for k, target in enumerate(row["targets"]):
                acc = sums.setdefault((row["method"], target, name), {}).setdefault(row["seed"], [0.0, 0])
                acc[0] += float(values[:, k].sum())
                acc[1] += values.shape[0]
    body = []
    for method, target in row_order(config):
        if config.reference_of(method) is not None:
            continue
        cells = []
        for name in config.metrics:
            seeds = [s / n for s, n in sums.get((method, target, name), {}).values()]
            cells.append((float(np.mean(seeds)), ci95_halfwidth(seeds), len(seeds)) if seeds else None)
        body.append(((method, target), cells))
    return config, list(config.metrics), body


def metrics_markdown_table(run) -> str:
    """The `metrics` table (empty string for a run without them): one column per metric with its
    direction arrow, bold the best mean of a column in that direction."""
    from cocoa_jax import evaluation

    config, names, body = metric_cells(run)
    if not names:
        return ""
    records = [evaluation.get(name) for name in names]
    header = ["Method", "Target"] + [f"{r.title} ({r.arrow})" for r in records]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = []
    for c, record in enumerate(records):
        means = {i: cells[c][0] for i, (_, cells) in enumerate(body) if cells[c] is not None}
        pick = max if record.direction == "higher" else min
        best.append({i for i, v in means.items() if means and v == pick(means.values())})
    for i, ((method, target), cells) in enumerate(body):
        lines.append("| " + " | ".join(row_titles(config, method, target)
                                       + [format_cell(c, i in best[j]) for j, c in enumerate(cells)]) + " |")
    n_seeds = len(config.seeds)
    lines += ["", (f"Mean (95% CI half-width, t over {n_seeds} seeds)" if n_seeds > 1 else
                   "Mean over the explicands of one seed (no interval: intervals are over seeds)")
              + "; metrics of `cocoa_jax.evaluation` (docs/metrics.md), ↑ higher / ↓ lower is better."]
    return "\n".join(lines)


__all__ = ["DIRECTION_NOTE", "KIND_SHORT", "MEASURE_TITLES", "METHOD_TITLES", "TARGET_TITLES", "Run", "best_rows",
           "ci95_halfwidth", "collect", "column_header", "format_cell", "markdown_table", "metric_cells", "metrics_markdown_table", "open_run", "read_record",
           "row_order", "row_titles", "table"]
