"""Report parts of a sweep's studies: size sensitivity (the paper's Appendix I / J, Figures 4-7),
model randomisation (full, and cascading: Spearman correlations per cascade step), and the Gini
sparsity of the stored maps.

Kept apart from `report` (tables and curves of every run); `report.write_report` adds what these
functions return when the run holds a study.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from cocoa_jax.metrics import KINDS, MEASURES
from cocoa_jax.sweep.config import RANDOM_METHOD

STUDY_TITLES = {"corpus_size": ("corpus", "Corpus size"), "foil_size": ("foil", "Foil size")}


def _report():
    from cocoa_jax.sweep import report  # report imports this module: import it lazily

    return report


# ----------------------------------------------------------------------------- size sensitivity


def sensitivity_per_seed(run_dir: str):
    """(config, sizes, {(method, target): {(size, kind, measure): {seed: value}}}): per seed, the
    explicand-weighted mean AUC over its classes at every size (rows' `auc_by_size`)."""
    config, _, rows, _ = _report().collect(run_dir)
    if config.size_field is None:
        raise ValueError(f"{run_dir!r} is not a size study (corpus_size and foil_size are numbers)")
    sums: dict = {}
    for row in rows.values():
        for size, by_target in row.get("auc_by_size", {}).items():
            for target, by_kind in by_target.items():
                cell = sums.setdefault((row["method"], target), {})
                for kind, by_measure in by_kind.items():
                    for measure, value in by_measure.items():
                        acc = cell.setdefault((int(size), kind, measure), {}).setdefault(row["seed"], [0.0, 0])
                        acc[0] += value * row["n_explicands"]
                        acc[1] += row["n_explicands"]
    per_seed = {key: {k: {seed: s / n for seed, (s, n) in by_seed.items()} for k, by_seed in cell.items()}
                for key, cell in sums.items()}
    return config, list(config.sizes), per_seed


def sensitivity_table(run_dir: str, measures=("ccs", "corpus_majority_prob")):
    """(config, sizes, [(measure, kind, [((method, target), [cell per size])])]); cell (mean, ci, n)."""
    report = _report()
    config, sizes, per_seed = sensitivity_per_seed(run_dir)
    out = []
    for measure in measures:
        for kind in KINDS:
            body = []
            for method, target in report.row_order(config):
                cells = []
                for size in sizes:
                    values = per_seed.get((method, target), {}).get((size, kind, measure), {})
                    seeds = [values[s] for s in config.seeds if s in values]
                    cells.append((float(np.mean(seeds)), report.ci95_halfwidth(seeds), len(seeds)) if seeds else None)
                body.append(((method, target), cells))
            out.append((measure, kind, body))
    return config, sizes, out


def sensitivity_markdown(run_dir: str, measures=("ccs", "corpus_majority_prob")) -> str:
    report = _report()
    config, sizes, tables = sensitivity_table(run_dir, measures)
    noun, title = STUDY_TITLES[config.size_field]
    fixed = (f"foil size {config.foil_size}" if config.size_field == "corpus_size"
             else f"corpus size {config.corpus_size}")
    parts = [f"{title} sensitivity (the paper's Appendix {'I' if noun == 'corpus' else 'J'}): AUC at each {noun} "
             f"size, {fixed}; every size from ONE pass (nested draws: size s is the first s of one draw per seed "
             f"and class). Mean (95% CI half-width, t over {len(config.seeds)} seed(s))."]
    for measure, kind, body in tables:
        arrow = MEASURES[measure].arrow(kind)
        header = ["Method", "Target"] + [f"{noun} {s}" for s in sizes]
        lines = [f"#### {report.MEASURE_TITLES[measure]}, {kind} ({arrow})", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        best = report.best_rows([(kind, measure)] * len(sizes), body)  # per size column
        for i, ((method, target), cells) in enumerate(body):
            lines.append("| " + " | ".join([report.METHOD_TITLES.get(method, method),
                                            "" if method == RANDOM_METHOD else report.TARGET_TITLES.get(target, target)]
                                           + [report._fmt(c, i in best[j]) for j, c in enumerate(cells)]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def sensitivity_csv(run_dir: str, measures=None) -> str:
    from cocoa_jax.metrics import MEASURE_NAMES

    config, sizes, tables = sensitivity_table(run_dir, measures or MEASURE_NAMES)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["size_field", "size", "method", "target", "measure", "kind", "mean", "ci95", "n_seeds"])
    for measure, kind, body in tables:
        for (method, target), cells in body:
            for size, cell in zip(sizes, cells):
                if cell is not None:
                    writer.writerow([config.size_field, size, method, target, measure, kind, f"{cell[0]:.6g}",
                                     f"{cell[1]:.6g}", cell[2]])
    return out.getvalue()


def sensitivity_figure(run_dir: str, measures=("ccs", "corpus_majority_prob"), target: str = "cocoa"):
    """The paper's Figures 4-7: AUC vs size (sizes evenly spaced on x), one panel per measure (rows) x kind (columns),
    one line per method for `target` (COCOA), mean over seeds with a 95% t band (none with one
    seed), the random attribution as the dashed grey reference. Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    report = _report()
    config, sizes, tables = sensitivity_table(run_dir, measures)
    noun, title = STUDY_TITLES[config.size_field]
    fig, axes = plt.subplots(len(measures), len(KINDS), figsize=(4.2 * len(KINDS), 3.2 * len(measures)),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(sizes), dtype=float)  # evenly spaced sizes: 100 and 120 stay readable
    handles = {}
    for measure, kind, body in tables:
        ax = axes[list(measures).index(measure), KINDS.index(kind)]
        methods = [m for (m, t), _ in body if t == target]
        for (method, tgt), cells in body:
            if tgt != target and method != RANDOM_METHOD:
                continue
            mean = np.array([np.nan if c is None else c[0] for c in cells])
            ci = np.array([np.nan if c is None else c[1] for c in cells])
            if method == RANDOM_METHOD:
                style, label = dict(color="0.4", linestyle=(0, (5, 2)), linewidth=1.8), "Random attribution"
            else:
                style = dict(color=colors[methods.index(method) % len(colors)], linewidth=1.8, marker="o",
                             markersize=3.5)
                label = f"{report.METHOD_TITLES.get(method, method)} ({report.TARGET_TITLES.get(target, target)})"
            line, = ax.plot(x, mean, label=label, **style)
            if np.isfinite(ci).any():
                ax.fill_between(x, mean - ci, mean + ci, color=line.get_color(), alpha=0.18, linewidth=0)
            handles[label] = line
        ax.set_xticks(x)
        ax.set_xticklabels([str(s) for s in sizes], fontsize=8)
        ax.set_xlabel(f"{noun} size", fontsize=9)
        ax.set_ylabel(f"{report.MEASURE_TITLES[measure]}\n{kind} AUC ({MEASURES[measure].arrow(kind)})",
                      fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fixed = f"foil {config.foil_size}" if noun == "corpus" else f"corpus {config.corpus_size}"
    fig.suptitle(f"{title} sensitivity ({fixed}): mean over {len(config.seeds)} seed(s)"
                 + (", 95% t bands" if len(config.seeds) > 1 else ""), fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def plot_sensitivity(run_dir: str, out_path, **kwargs):
    from cocoa_jax import viz

    fig = sensitivity_figure(run_dir, **kwargs)
    try:
        return viz.save_figure(fig, out_path, dpi=110)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


# ----------------------------------------------------------------------------- Gini


def gini_per_seed(run_dir: str, absolute: bool = True):
    """{(method, target): {seed: mean Gini over the seed's explicands}} of each stored channel-mean
    map: `sparsity.gini_index(maps, ndim=2, absolute=absolute)`. absolute=True (default): the Gini
    of |a|, in [0, 1) for every map; False: the official `compute_gini_index` on the RAW values."""
    from cocoa_jax.sparsity import gini_index

    _, run, rows, _ = _report().collect(run_dir)
    sums: dict = {}
    for row in rows.values():
        maps = run.load_unit(row)["attributions"]  # (N, K, H, W) channel means (largest size of a study)
        values = np.asarray(gini_index(np.asarray(maps, np.float64), ndim=2, absolute=absolute))  # (N, K)
        for k, target in enumerate(row["targets"]):
            acc = sums.setdefault((row["method"], target), {}).setdefault(row["seed"], [0.0, 0])
            acc[0] += float(values[:, k].sum())
            acc[1] += values.shape[0]
    return {key: {seed: s / n for seed, (s, n) in by_seed.items()} for key, by_seed in sums.items()}


GINI_NOTES = {
    True: ("the Gini index of |a| (`cocoa_jax.sparsity.gini_index(maps, ndim=2)`): 0 when every pixel carries "
           "the same |attribution|, 1 - 1/n when one pixel carries it all; higher is sparser, for signed maps "
           "(IG, GradientSHAP) as for non-negative ones (RISE, random). The official `compute_gini_index` formula "
           "on the raw values: `cocoa-jax report --gini official`."),
    False: ("the official `compute_gini_index` formula on the RAW values (no absolute value: "
            "`cocoa_jax.sparsity.gini_index(maps, ndim=2, absolute=False)`, chosen with `--gini official`). For "
            "non-negative maps (RISE, random) it equals the Gini of |a| and lies in [0, 1), higher is sparser; "
            "for signed maps (IG, GradientSHAP) its denominator is the signed sum, which can be near 0 or "
            "negative, so values can lie far outside [0, 1] and do not measure sparsity (as in the official "
            "code). The default, |a|, is comparable across methods."),
}


def gini_markdown(run_dir: str, absolute: bool = True) -> str:
    report = _report()
    config, _, _, _ = report.collect(run_dir)
    per_seed = gini_per_seed(run_dir, absolute)
    column = "Gini of \\|a\\| (higher: sparser)" if absolute else "Gini, official raw-value formula"
    lines = [f"| Method | Target | {column} |", "|---|---|---|"]
    for method, target in report.row_order(config):
        values = per_seed.get((method, target), {})
        seeds = [values[s] for s in config.seeds if s in values]
        cell = (float(np.mean(seeds)), report.ci95_halfwidth(seeds), len(seeds)) if seeds else None
        lines.append(f"| {report.METHOD_TITLES.get(method, method)} | "
                     f"{'' if method == RANDOM_METHOD else report.TARGET_TITLES.get(target, target)} | "
                     f"{report._fmt(cell)} |")
    where = " (at the largest size of the study)" if config.size_field else ""
    lines += ["", "Gini index of the stored channel-mean attribution maps" + where + ": " + GINI_NOTES[absolute]
              + " Mean over the explicands of a seed, then mean (95% CI half-width) over seeds."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- randomisation


def randomization_markdown(run_dir: str) -> str:
    report = _report()
    config, _, _, _ = report.collect(run_dir)
    intro = ("Every number in this report is under model randomisation: per seed s, the encoder's parameters "
             "re-drawn with `randomize_params(params, jax.random.key(s))` (the official `--randomize-model`: each "
             "tensor from a normal with its own mean and std, truncated to its own range), then the same sampling, "
             "attribution and evaluation; the linear probe is trained per seed on the randomised encoder. "
             "Compare with the trained encoder's run of the same config (randomize_model false).")
    return intro + "\n\n" + report.markdown_table(run_dir, ("ccs", "corpus_majority_prob"), directions_note=False)


# ----------------------------------------------------------------------------- cascading randomisation

CASCADE_KINDS = (("abs", "cascade_spearman_abs", "absolute values"), ("signed", "cascade_spearman", "signed values"))


def cascade_values(run_dir: str):
    """(config, steps, {(method, target): {kind: {seed: per-explicand correlations (n, B+1)}}}) of a
    `randomize_cascade` run: steps = ["trained", block randomised first, ...]; kind "abs" or "signed"."""
    config, run, rows, _ = _report().collect(run_dir)
    if not config.randomize_cascade:
        raise ValueError(f"{run_dir!r} is not a cascading-randomisation run (randomize_cascade is false)")
    steps, values = None, {}
    for row in rows.values():
        if row["method"] == RANDOM_METHOD:
            continue
        arrays = run.load_unit(row)
        names = ["trained"] + [str(b) for b in arrays["cascade_blocks"]]
        if steps is not None and names != steps:
            raise ValueError(f"unit {row['unit']} has cascade steps {names}, others {steps}")
        steps = names
        for kind, key, _ in CASCADE_KINDS:
            for k, target in enumerate(row["targets"]):
                per_seed = values.setdefault((row["method"], target), {}).setdefault(kind, {})
                per_seed[row["seed"]] = np.concatenate([per_seed[row["seed"]], arrays[key][:, :, k]]) \
                    if row["seed"] in per_seed else np.asarray(arrays[key][:, :, k], np.float64)
    return config, steps or ["trained"], values


def cascade_table(run_dir: str):
    """(config, steps, [(kind, [((method, target), [cell per step])])], basis). A cell is (mean, ci, n):
    with several seeds the mean over seeds of each seed's mean over its explicands and the 95% t CI
    over seeds (basis "seeds"); with one seed the mean and 95% t CI over its explicands (basis
    "explicands"). Undefined correlations (a constant map) are left out; None where none is left."""
    report = _report()
    config, steps, values = cascade_values(run_dir)
    basis = "seeds" if len(config.seeds) > 1 else "explicands"
    out = []
    for kind, _, _ in CASCADE_KINDS:
        body = []
        for method, target in report.row_order(config):
            if method == RANDOM_METHOD:
                continue
            by_seed = values.get((method, target), {}).get(kind, {})
            cells = []
            for j in range(len(steps)):
                if basis == "seeds":
                    samples = [float(np.nanmean(v[:, j])) for s, v in sorted(by_seed.items())
                               if np.isfinite(v[:, j]).any()]
                else:
                    samples = [float(x) for v in by_seed.values() for x in v[:, j] if np.isfinite(x)]
                cells.append((float(np.mean(samples)), report.ci95_halfwidth(samples), len(samples))
                             if samples else None)
            body.append(((method, target), cells))
        out.append((kind, body))
    return config, steps, out, basis


def cascade_markdown(run_dir: str) -> str:
    report = _report()
    config, steps, tables, basis = cascade_table(run_dir)
    parts = [
        "Cascading model randomisation (Adebayo et al., 2018): per seed s, the encoder's blocks are randomised "
        "cumulatively from the top (output) block down, `cascading_randomizations(params, jax.random.key(s))` in "
        "the forward pass's block order (each tensor re-drawn as `randomize_params` does; the last step is the "
        "`randomize_model` encoder of seed s). Every step attributes the same explicands with the same keys, its "
        "targets built from that step's representations of the same samples. Cell: Spearman rank correlation "
        "between the step's map and the trained encoder's map of the same explicand and target (channel-mean "
        f"maps; 'absolute' ranks |a|), mean (95% CI half-width, t over {basis}"
        + (f", {len(config.seeds)} seeds: each seed's mean over its explicands" if basis == "seeds" else
           ", one seed") + "). Column 'trained' repeats the trained encoder through the cascade's path (1 by "
        "construction). A map that stays close to the trained one (correlation near 1) as blocks are "
        "randomised does not depend on the model. The AUC tables above are the trained encoder's; AUCs per step "
        "are not computed (each step would need its own evaluation and probe)."]
    for kind, body in tables:
        title = dict((k, t) for k, _, t in CASCADE_KINDS)[kind]
        header = ["Method", "Target"] + [("trained" if j == 0 else f"+{name}") for j, name in enumerate(steps)]
        lines = [f"#### Spearman correlation with the trained maps, {title}", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (method, target), cells in body:
            lines.append("| " + " | ".join([report.METHOD_TITLES.get(method, method),
                                            report.TARGET_TITLES.get(target, target)]
                                           + [report._fmt(c) for c in cells]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def cascade_csv(run_dir: str) -> str:
    config, steps, tables, basis = cascade_table(run_dir)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["step", "block", "method", "target", "kind", "mean", "ci95", "n", "ci_over"])
    for kind, body in tables:
        for (method, target), cells in body:
            for j, (name, cell) in enumerate(zip(steps, cells)):
                if cell is not None:
                    writer.writerow([j, name, method, target, kind, f"{cell[0]:.6g}", f"{cell[1]:.6g}", cell[2],
                                     basis])
    return out.getvalue()


def cascade_figure(run_dir: str):
    """Spearman correlation with the trained maps vs cascade step ("trained", then one more block
    randomised per step, from the top block to all blocks): one row per method, columns absolute and
    signed, one line per target with a 95% t band. Returns the Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    report = _report()
    config, steps, tables, basis = cascade_table(run_dir)
    methods = list(dict.fromkeys(method for (method, _), _ in tables[0][1]))
    fig, axes = plt.subplots(max(1, len(methods)), len(tables), figsize=(4.6 * len(tables), 3.0 * max(1, len(methods))),
                             squeeze=False)
    x = np.arange(len(steps), dtype=float)
    handles = {}
    for c, (kind, body) in enumerate(tables):
        for method_index, method in enumerate(methods):
            ax = axes[method_index, c]
            for (m, target), cells in body:
                if m != method:
                    continue
                mean = np.array([np.nan if cell is None else cell[0] for cell in cells])
                ci = np.array([np.nan if cell is None else cell[1] for cell in cells])
                label = report.TARGET_TITLES.get(target, target)
                line, = ax.plot(x, mean, marker="o", markersize=3.5, linewidth=1.6, label=label)
                if np.isfinite(ci).any():
                    ax.fill_between(x, mean - ci, mean + ci, color=line.get_color(), alpha=0.18, linewidth=0)
                handles.setdefault(label, line)
            ax.axhline(0.0, color="0.5", linewidth=0.8)
            ax.set_ylim(-1.05, 1.05)
            ax.set_xticks(x)
            ax.set_xticklabels(["trained"] + [f"+{s}" for s in steps[1:]], rotation=35, ha="right", fontsize=7)
            ax.set_title(f"{report.METHOD_TITLES.get(method, method)}: "
                         f"{dict((k, t) for k, _, t in CASCADE_KINDS)[kind]}", fontsize=9)
            ax.set_ylabel("Spearman vs trained", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle("Cascading model randomisation: blocks randomised from the top block (left) to all blocks "
                 f"(right); 95% t bands over {basis}", fontsize=9)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return fig


def plot_cascade(run_dir: str, out_path):
    from cocoa_jax import viz

    fig = cascade_figure(run_dir)
    try:
        return viz.save_figure(fig, out_path, dpi=110)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def extra_sections(run_dir: str, gini_absolute: bool = True) -> list[tuple[str, str]]:
    """(title, markdown) sections `write_report` adds for this run: model randomisation (first),
    size sensitivity, Gini (of |a|, or the official raw-value formula with gini_absolute=False)."""
    report = _report()
    config, _, _, _ = report.collect(run_dir)
    out = []
    if config.randomize_model:
        out.append(("Model randomisation", randomization_markdown(run_dir)))
    if config.randomize_cascade:
        out.append(("Model randomisation (cascading)", cascade_markdown(run_dir)))
    if config.size_field is not None:
        out.append((f"{STUDY_TITLES[config.size_field][1]} sensitivity", sensitivity_markdown(run_dir)))
    out.append(("Sparsity: Gini index", gini_markdown(run_dir, gini_absolute)))
    return out


def add_outputs(run_dir: str, out_dir: str, outputs, paths: dict) -> None:
    """Queue the study files on `outputs` (a `cocoa_jax.files.Outputs`): for a size study
    sensitivity_<corpus|foil>.png and .csv, for a cascading randomisation cascade.png and .csv;
    names added to `paths`."""
    import os

    config, _, _, _ = _report().collect(run_dir)
    if config.randomize_cascade:
        paths["cascade_plot"] = os.path.join(out_dir, "cascade.png")
        paths["cascade_csv"] = os.path.join(out_dir, "cascade.csv")
        outputs.add_rendered(paths["cascade_plot"], lambda f: plot_cascade(run_dir, f))
        outputs.add_text(paths["cascade_csv"], cascade_csv(run_dir))
    if config.size_field is None:
        return
    noun = STUDY_TITLES[config.size_field][0]
    paths["sensitivity_plot"] = os.path.join(out_dir, f"sensitivity_{noun}.png")
    paths["sensitivity_csv"] = os.path.join(out_dir, f"sensitivity_{noun}.csv")
    outputs.add_rendered(paths["sensitivity_plot"], lambda f: plot_sensitivity(run_dir, f))
    outputs.add_text(paths["sensitivity_csv"], sensitivity_csv(run_dir))
