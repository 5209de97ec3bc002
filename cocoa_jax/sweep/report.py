"""Tables and plots of a sweep, in the paper's layout (Tables 1-8).

`report.md` opens with a header (encoder, weights hash, data, methods and their options,
targets, seeds, classes, sizes, run hash, dates, versions, devices and processes), then one
table per measure. Rows: method x target, plus the random-attribution row. Columns: insertion
and deletion AUC per measure, each with its direction from the measure table
(`cocoa_jax.metrics.MEASURES`: ↑ higher is better, ↓ lower is better; representation shift,
a distance from the explicand, is ↓ for insertion and ↑ for deletion). Cells: mean over
seeds and the half-width of the 95% confidence interval (Student t over seeds), "0.422
(0.006)"; the best mean of a column, in its direction, in bold. A seed's value is the mean
over all its explicands (every corpus class).
"""
from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from cocoa_jax import methods as methods_mod
from cocoa_jax import targets as targets_mod
from cocoa_jax.metrics import KINDS, MEASURE_NAMES, MEASURES
from cocoa_jax.sparsity import GINI_MODES
from cocoa_jax.sweep.config import METHOD_NAMES, RANDOM_METHOD, SweepConfig
from cocoa_jax.sweep.runner import plan_units
from cocoa_jax.sweep.store import CONFIG_FILE, RESULTS_PATTERN, open_existing

METHOD_TITLES = {name: method.title for name, method in methods_mod.METHODS.items()}
TARGET_TITLES = dict(targets_mod.TARGET_TITLES, **{RANDOM_METHOD: "Random"})
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
    # Canonical method order (config.json stores the methods dict with sorted keys).
    methods = sorted(config.methods, key=lambda m: METHOD_NAMES.index(m) if m in METHOD_NAMES else len(METHOD_NAMES))
    order = [(m, t) for m in methods for t in config.targets]
    if config.include_random:
        order.append((RANDOM_METHOD, RANDOM_METHOD))
    return order


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


def _fmt(cell, best: bool = False) -> str:
    if cell is None:
        return "-"
    mean, ci, n = cell
    value = f"**{mean:.3f}**" if best else f"{mean:.3f}"
    return f"{value} ({ci:.3f})" if n > 1 else value


def column_header(measure: str, kind: str) -> str:
    """A column's title, e.g. "representation shift del. (↑)": the measure's own direction."""
    return f"{MEASURE_TITLES[measure]} {KIND_SHORT[kind]} ({MEASURES[measure].arrow(kind)})"


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
        lines.append("| " + " | ".join([METHOD_TITLES.get(method, method),
                                        "" if method == RANDOM_METHOD else TARGET_TITLES.get(target, target)]
                                       + [_fmt(c, i in best[j]) for j, c in enumerate(cells)]) + " |")
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


def csv_table(run_dir: str, measures=MEASURE_NAMES) -> str:
    config, columns, body, _ = table(run_dir, measures)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", "target"] + [f"{m}_{k}_{stat}" for k, m in columns for stat in ("mean", "ci95", "n_seeds")])
    for (method, target), cells in body:
        values = []
        for cell in cells:
            values += ["", "", 0] if cell is None else [f"{cell[0]:.6g}", f"{cell[1]:.6g}", cell[2]]
        writer.writerow([method, target] + values)
    return out.getvalue()


def seed_curves(run_dir: str):
    """{(method, target): {seed: curves (2, S+1, M)}}: per seed, the explicand-weighted mean over
    its classes (as the AUC table), plus the fractions (S+1,) and the config."""
    config, store, rows, _ = collect(run_dir)
    sums: dict = {}
    fractions = None
    for row in rows.values():
        arrays = store.load_unit(row)
        fractions = arrays["fractions"]
        for k, target in enumerate(row["targets"]):
            acc = sums.setdefault((row["method"], target), {}).setdefault(row["seed"], [0.0, 0])
            acc[0] = acc[0] + arrays["curves"][:, k].sum(axis=0)  # (2, S+1, M)
            acc[1] += arrays["curves"].shape[0]
    return config, fractions, {key: {seed: s / n for seed, (s, n) in by_seed.items()}
                               for key, by_seed in sums.items()}


def plot_curves(run_dir: str, out_path, measures=("ccs", "corpus_majority_prob")):
    """`curves_figure` written as a PNG to `out_path` (file name, atomically, or file object)."""
    from cocoa_jax import viz

    return viz.save_figure(curves_figure(run_dir, measures), out_path, dpi=110)


def curves_figure(run_dir: str, measures=("ccs", "corpus_majority_prob")):
    """One panel per measure x (insertion, deletion): mean curves over seeds with 95% t-interval
    bands (`ci95_halfwidth` over seeds at every step; none with one seed), methods by colour,
    targets by line style, the random attribution dashed grey, one legend below the panels.
    Returns the matplotlib Figure."""
    from cocoa_jax import viz

    config, fractions, per_seed = seed_curves(run_dir)
    if fractions is None:
        raise ValueError(f"no finished units in {run_dir!r}")
    columns = [MEASURE_NAMES.index(m) for m in measures]
    curves = {}
    n_seeds = 0
    # COCOA first (solid line), then corpus, contrastive label-free, label-free.
    rank = {t: i for i, t in enumerate(("cocoa", "corpus", "contrastive_label_free", "label_free"))}
    for method, target in sorted(row_order(config), key=lambda mt: rank.get(mt[1], len(rank))):
        by_seed = per_seed.get((method, target))
        if not by_seed:
            continue
        stacked = np.stack([by_seed[s] for s in sorted(by_seed)])[..., columns]  # (seeds, 2, S+1, M')
        n_seeds = max(n_seeds, len(stacked))
        label = (RANDOM_METHOD if method == RANDOM_METHOD else METHOD_TITLES.get(method, method))
        key = (label, None if method == RANDOM_METHOD else TARGET_TITLES.get(target, target))
        curves[key] = (stacked.mean(axis=0), ci95_halfwidth(stacked, axis=0) if len(stacked) > 1 else None)
    reference = RANDOM_METHOD if any(m == RANDOM_METHOD for m, _ in curves) else None
    if reference is not None:
        curves = {((TARGET_TITLES[RANDOM_METHOD] + " attribution") if m == reference else m, t): v
                  for (m, t), v in curves.items()}
        reference = TARGET_TITLES[RANDOM_METHOD] + " attribution"
    return viz.plot_insertion_deletion(
        fractions, curves, measures=[(m, MEASURE_TITLES[m]) for m in measures], kinds=KINDS,
        better=[tuple(MEASURES[m].better(k) for k in KINDS) for m in measures],
        reference=reference, n_seeds=n_seeds,
        suptitle=f"Insertion and deletion curves: mean over {n_seeds} seed(s), corpus mode {config.corpus_mode}")


# ----------------------------------------------------------------------------- header


def read_record(run_dir: str) -> tuple[dict, dict | None]:
    """(identity, environment) that config.json records: what the run hash covers and where and when
    the run started (`store.run_environment`; None for runs written before it was recorded)."""
    import json

    with open(os.path.join(run_dir, CONFIG_FILE)) as fh:
        stored = json.load(fh)
    return stored.get("identity") or {}, stored.get("environment")


def _options_text(options: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(options.items())) or "no options"


def _image_size(run: Run) -> str:
    """H x W of the stored maps (the evaluated images), from one finished unit ("?" if none)."""
    if not run.rows:
        return "?"
    shape = run.load_unit(next(iter(run.rows.values())))["attributions"].shape
    return f"{shape[-2]}x{shape[-1]} px"


def _architecture(config: SweepConfig) -> str:
    if config.encoder.startswith("custom"):
        return f"`{config.encoder}` (an encoder object given to `run_sweep`)"
    from cocoa_jax.models.store import input_shape_of

    # None when the directory's model.json cannot be read: the header still names the architecture.
    shape = input_shape_of(config.encoder, config.encoder_dir and os.path.expanduser(config.encoder_dir))
    return f"`{config.encoder}`" + (f", input {shape[0]}x{shape[1]}x{shape[2]}" if shape else "")


def header_fields(run) -> list[tuple[str, str]]:
    """(label, text) of every line of report.md's header, in order: Encoder, Architecture, Weights
    hash, Dataset, Methods, Targets, Seeds, Classes, Sizes, Evaluation, Run hash, Date, Versions,
    Devices and processes. Read from what the run directory records (config.json: config, run
    identity, environment at the start; the results rows); nothing is recomputed, and nothing
    depends on when the report is written (the same run gives the same report.md)."""
    run = open_run(run)
    config, env = run.config, run.environment
    unrecorded = "not recorded (the run predates this record)"
    methods = [f"{METHOD_TITLES.get(m, m)} (`{m}`: {_options_text(config.method_options(m))})"
               for m in dict.fromkeys(m for m, _ in row_order(config) if m != RANDOM_METHOD)]
    if config.include_random:
        methods.append("the random attribution (i.i.d. U[0, 1) pixel scores)")
    found_classes = sorted({r["class_id"] for r in run.rows.values()})
    classes = (", ".join(map(str, config.classes)) + f" ({len(config.classes)})" if config.classes is not None
               else f"all of the corpus split ({len(found_classes)} in finished units)")
    total = len(plan_units(config, config.classes or found_classes))
    sizes = (f"corpus {config.corpus_size}, foil {config.foil_size}, {config.explicands_per_class} explicands per "
             f"class, images {_image_size(run)}")
    if config.size_field:
        sizes += f" (size study over `{config.size_field}`)"
    prefix, suffix = RESULTS_PATTERN.split("{index}")
    processes = sorted(int(os.path.basename(p)[len(prefix):-len(suffix)]) for p in run._store.results_paths())
    group_devices = sorted({int(r["devices"]) for r in run.rows.values()})
    report_versions = f"report by cocoa-jax {_version()}, jax {_jax_version()}"
    fields = [
        ("Encoder", f"`{config.encoder}`, weights "
                    + (f"from `{config.encoder_dir}`" if config.encoder_dir else
                       ("given to `run_sweep`" if config.encoder.startswith("custom") else "shipped with cocoa-jax"))
                    + ("; model randomisation (per seed)" if config.randomize_model else "")
                    + ("; cascading randomisation" if config.randomize_cascade else "")),
        ("Architecture", _architecture(config)),
        ("Weights hash", f"`{run.identity.get('encoder', '?')}` (SHA-256 of every parameter, 16 hex)"),
        ("Dataset", f"`{config.dataset}`" + (f" from `{config.data_dir}`" if config.data_dir else "")
                    + f"; corpus split `{config.corpus_split}`, explicand split `{config.explicand_split}`, "
                      f"preprocess `{config.preprocess}`; data hash `{run.identity.get('data', '?')}`"),
        ("Methods", "; ".join(methods) + f"; estimator profile `{config.estimators}`"),
        ("Targets", ", ".join(f"{TARGET_TITLES.get(t, t)} (`{t}`)" for t in config.targets)
                    + f"; similarity `{config.similarity}`, corpus mode `{config.corpus_mode}`"),
        ("Seeds", ", ".join(map(str, config.seeds)) + f" ({len(config.seeds)})"),
        ("Classes", classes),
        ("Sizes", sizes),
        ("Evaluation", f"{config.eval_steps} insertion/deletion steps, superpixel {config.eval_superpixel}, "
                       f"absolute {str(config.eval_absolute).lower()}, blurred baseline (kernel "
                       f"{config.blur_kernel_size}, sigma {config.blur_sigma})"),
        ("Run hash", f"`{run.config_hash}`; {len(run.rows)} of {total} units finished"),
        # The run's date only: a report regenerated from the same run is the same file.
        ("Date", f"run started {env['created_utc']} UTC" if env else f"run start {unrecorded}"),
        ("Versions", (f"run started with cocoa-jax {env['cocoa_jax']}, jax {env['jax']} (jaxlib {env['jaxlib']})"
                      if env else f"run's {unrecorded}") + f"; {report_versions}"),
        ("Devices and processes",
         (f"{env['devices']} {env['platform']} device(s) ({env['device_kind']}), {env['process_count']} "
          f"process(es) at the start" if env else f"at the start {unrecorded}")
         + f"; units written by process(es) {', '.join(map(str, processes)) or 'none'}"
         + (f", {' or '.join(map(str, group_devices))} device(s) per unit group" if group_devices else "")),
    ]
    return fields


def _version() -> str:
    from cocoa_jax import __version__

    return __version__


def _jax_version() -> str:
    import jax

    return jax.__version__


def header_markdown(run, gini_absolute: bool = True) -> str:
    """report.md's opening: a title, `header_fields` as a list, and what the marks mean."""
    lines = ["# Sweep report", ""] + [f"- **{label}**: {text}" for label, text in header_fields(run)]
    lines += ["", DIRECTION_NOTE + " Gini: " + ("of |a| (the default)" if gini_absolute
                                                else "the official raw-value formula (`--gini official`)") + "."]
    return "\n".join(lines)


def timing_summary(run_dir: str) -> dict:
    """Per method: median seconds per unit (total, attribution, evaluation) and unit count."""
    _, _, rows, _ = collect(run_dir)
    out = {}
    for method in sorted({r["method"] for r in rows.values()}):
        rs = [r for r in rows.values() if r["method"] == method]
        out[method] = {"units": len(rs),
                       "median_seconds": float(np.median([r["seconds"] for r in rs])),
                       "median_attribution_seconds": float(np.median([r["attribution_seconds"] for r in rs])),
                       "median_evaluation_seconds": float(np.median([r["evaluation_seconds"] for r in rs])),
                       "total_seconds": float(np.sum([r["seconds"] for r in rs]))}
    return out


def write_report(run_dir: str, out_dir: str | None = None, *, gini: str = "absolute") -> dict:
    """Write report.md, report.csv (all measures) and curves.png; returns their paths.

    report.md opens with `header_markdown` (what ran, where, when). gini: "absolute" (default:
    the Gini index of |a|, in [0, 1)) or "official" (the official raw-value formula, which leaves
    [0, 1] for signed maps; see `studies.gini_markdown`).

    Regenerated from the run every time: the three files replace earlier ones together, after
    all of them are computed (an interrupt or an error before that leaves the old report).
    """
    from cocoa_jax.files import Outputs

    if gini not in GINI_MODES:
        raise ValueError(f"gini must be one of {', '.join(GINI_MODES)}, got {gini!r}")
    gini_absolute = gini == "absolute"
    out_dir = out_dir or os.path.join(run_dir if isinstance(run_dir, str) else run_dir.run_dir, "report")
    run_dir = open_run(run_dir)  # read and verified once for every table and figure below
    md_parts = []
    for title, measures in (("Corpus majority probability", ("corpus_majority_prob",)),
                            ("Contrastive corpus similarity", ("ccs",)),
                            ("Contrastive corpus similarity, resampled foil", ("ccs_resampled_foil",)),
                            ("Explicand predicted probability", ("explicand_pred_prob",)),
                            ("Representation shift", ("rep_shift",))):
        md_parts.append(f"### {title}\n\n" + markdown_table(run_dir, measures, directions_note=False))
    timing = timing_summary(run_dir)
    timing_lines = ["| Method | units | median s/unit | attribution s | evaluation s | total s |", "|---|---|---|---|---|---|"]
    for method, t in timing.items():
        timing_lines.append(f"| {METHOD_TITLES.get(method, method)} | {t['units']} | {t['median_seconds']:.2f} | "
                            f"{t['median_attribution_seconds']:.2f} | {t['median_evaluation_seconds']:.2f} | "
                            f"{t['total_seconds']:.1f} |")
    md_parts.append("### Time per unit\n\n" + "\n".join(timing_lines))
    from cocoa_jax.sweep import studies  # model randomisation (first), size sensitivity, Gini

    for title, body in studies.extra_sections(run_dir, gini_absolute):
        part = f"### {title}\n\n{body}"
        if title == "Model randomisation":
            md_parts.insert(0, part)
        else:
            md_parts.append(part)
    paths = {"markdown": os.path.join(out_dir, "report.md"), "csv": os.path.join(out_dir, "report.csv"),
             "plot": os.path.join(out_dir, "curves.png")}
    outputs = Outputs()
    outputs.add_text(paths["markdown"], "\n\n".join([header_markdown(run_dir, gini_absolute)] + md_parts) + "\n")
    outputs.add_text(paths["csv"], csv_table(run_dir))
    outputs.add_rendered(paths["plot"], lambda f: plot_curves(run_dir, f))
    studies.add_outputs(run_dir, out_dir, outputs, paths)  # a size study: sensitivity_<corpus|foil>.png/.csv
    outputs.commit()
    return paths
