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

The run is read once through `tables` (shared with `studies`, whose sections `write_report`
adds); figures are drawn by `cocoa_jax.viz`. Nothing here loads the runner, its programs or
the devices: a report needs only the run directory.
"""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from cocoa_jax.metrics import KINDS, MEASURE_NAMES, MEASURES
from cocoa_jax.sparsity import GINI_MODES
from cocoa_jax.sweep import studies
from cocoa_jax.sweep.config import SweepConfig, plan_units
from cocoa_jax.sweep.store import RESULTS_PATTERN
from cocoa_jax.sweep.tables import (DIRECTION_NOTE, MEASURE_TITLES, METHOD_TITLES, TARGET_TITLES, Run,
                                    ci95_halfwidth, collect, markdown_table, metrics_markdown_table, open_run,
                                    row_order, table)


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
    reference = None
    # COCOA first (solid line), then corpus, contrastive label-free, label-free.
    rank = {t: i for i, t in enumerate(("cocoa", "corpus", "contrastive_label_free", "label_free"))}
    for method, target in sorted(row_order(config), key=lambda mt: rank.get(mt[1], len(rank))):
        by_seed = per_seed.get((method, target))
        if not by_seed:
            continue
        stacked = np.stack([by_seed[s] for s in sorted(by_seed)])[..., columns]  # (seeds, 2, S+1, M')
        n_seeds = max(n_seeds, len(stacked))
        generator = config.reference_of(method)
        if generator is not None:  # the dashed grey reference curve, no target
            reference = f"{generator.title} attribution"
            key = (reference, None)
        else:
            key = (METHOD_TITLES.get(method, method), TARGET_TITLES.get(target, target))
        curves[key] = (stacked.mean(axis=0), ci95_halfwidth(stacked, axis=0) if len(stacked) > 1 else None)
    return viz.plot_insertion_deletion(
        fractions, curves, measures=[(m, MEASURE_TITLES[m]) for m in measures], kinds=KINDS,
        better=[tuple(MEASURES[m].better(k) for k in KINDS) for m in measures],
        reference=reference, n_seeds=n_seeds,
        suptitle=f"Insertion and deletion curves: mean over {n_seeds} seed(s), corpus mode {config.corpus_mode}")


# ----------------------------------------------------------------------------- header


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
               if config.reference_of(m) is None else config.reference_of(m).description
               for m in dict.fromkeys(m for m, _ in row_order(config))]
    found_classes = sorted({r["class_id"] for r in run.rows.values()})
    classes = (", ".join(map(str, config.classes)) + f" ({len(config.classes)})" if config.classes is not None
               else f"all of the corpus split ({len(found_classes)} in finished units)")
    total = len(plan_units(config, config.classes or found_classes))
    sizes = (f"corpus {config.corpus_size}, foil {config.foil_size}, {config.explicands_per_class} explicands per "
             f"class, images {_image_size(run)}")
    if config.size_field:
        sizes += f" (size study over `{config.size_field}`)"
    prefix, suffix = RESULTS_PATTERN.split("{index}")
    processes = sorted(int(os.path.basename(p)[len(prefix):-len(suffix)]) for p in run.results_paths())
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
                       f"{config.blur_kernel_size}, sigma {config.blur_sigma})"
                       + ("; patches removed by dropping their tokens" if config.eval_removal == "token_drop" else "")),
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
    if run_dir.config.metrics:  # the optional metric columns (config `metrics`)
        md_parts.append("### Metrics\n\n" + metrics_markdown_table(run_dir))
    timing = timing_summary(run_dir)
    timing_lines = ["| Method | units | median s/unit | attribution s | evaluation s | total s |", "|---|---|---|---|---|---|"]
    for method, t in timing.items():
        timing_lines.append(f"| {METHOD_TITLES.get(method, method)} | {t['units']} | {t['median_seconds']:.2f} | "
                            f"{t['median_attribution_seconds']:.2f} | {t['median_evaluation_seconds']:.2f} | "
                            f"{t['total_seconds']:.1f} |")
    md_parts.append("### Time per unit\n\n" + "\n".join(timing_lines))
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


__all__ = ["csv_table", "curves_figure", "header_fields", "header_markdown", "plot_curves", "seed_curves",
           "timing_summary", "write_report"]
