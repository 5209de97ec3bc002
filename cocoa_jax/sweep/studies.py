"""Report parts of a sweep's studies: size sensitivity (the paper's Appendix I / J, Figures 4-7),
model randomisation (full, and cascading: Spearman correlations per cascade step), and the Gini
sparsity of the stored maps.

Kept apart from `report` (tables and curves of every run); `report.write_report` adds what these
functions return when the run holds a study. Both read the run through `tables`; this module
computes the studies' numbers, `cocoa_jax.viz` draws them.
"""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from cocoa_jax.metrics import KINDS, MEASURE_NAMES, MEASURES
from cocoa_jax.sweep.tables import (MEASURE_TITLES, METHOD_TITLES, TARGET_TITLES, best_rows, ci95_halfwidth,
                                    collect, format_cell, markdown_table, row_order, row_titles)

STUDY_TITLES = {"corpus_size": ("corpus", "Corpus size"), "foil_size": ("foil", "Foil size")}


# ----------------------------------------------------------------------------- size sensitivity


def sensitivity_per_seed(run_dir: str):
    """(config, sizes, {(method, target): {(size, kind, measure): {seed: value}}}): per seed, the
    explicand-weighted mean AUC over its classes at every size (rows' `auc_by_size`)."""
    config, _, rows, _ = collect(run_dir)
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
    config, sizes, per_seed = sensitivity_per_seed(run_dir)
    out = []
    for measure in measures:
        for kind in KINDS:
            body = []
            for method, target in row_order(config):
                cells = []
                for size in sizes:
                    values = per_seed.get((method, target), {}).get((size, kind, measure), {})
                    seeds = [values[s] for s in config.seeds if s in values]
                    cells.append((float(np.mean(seeds)), ci95_halfwidth(seeds), len(seeds)) if seeds else None)
                body.append(((method, target), cells))
            out.append((measure, kind, body))
    return config, sizes, out


def sensitivity_markdown(run_dir: str, measures=("ccs", "corpus_majority_prob")) -> str:
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
        lines = [f"#### {MEASURE_TITLES[measure]}, {kind} ({arrow})", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        best = best_rows([(kind, measure)] * len(sizes), body)  # per size column
        for i, ((method, target), cells) in enumerate(body):
            lines.append("| " + " | ".join(row_titles(config, method, target)
                                           + [format_cell(c, i in best[j]) for j, c in enumerate(cells)]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def sensitivity_csv(run_dir: str, measures=None) -> str:
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
    seed), the reference map (the random attribution) as the dashed grey reference
    (`viz.plot_size_sensitivity`). Returns the Figure."""
    from cocoa_jax import viz

    config, sizes, tables = sensitivity_table(run_dir, measures)
    noun, title = STUDY_TITLES[config.size_field]
    panels = [[None] * len(KINDS) for _ in measures]
    for measure, kind, body in tables:
        lines = []
        for (method, tgt), cells in body:
            generator = config.reference_of(method)
            if tgt != target and generator is None:
                continue
            label = (f"{generator.title} attribution" if generator is not None else
                     f"{METHOD_TITLES.get(method, method)} ({TARGET_TITLES.get(target, target)})")
            lines.append(viz.Series(label, np.array([np.nan if c is None else c[0] for c in cells]),
                                    np.array([np.nan if c is None else c[1] for c in cells]), generator is not None))
        panels[list(measures).index(measure)][KINDS.index(kind)] = (
            f"{MEASURE_TITLES[measure]}\n{kind} AUC ({MEASURES[measure].arrow(kind)})", lines)
    fixed = f"foil {config.foil_size}" if noun == "corpus" else f"corpus {config.corpus_size}"
    return viz.plot_size_sensitivity(
        sizes, panels, xlabel=f"{noun} size",
        suptitle=f"{title} sensitivity ({fixed}): mean over {len(config.seeds)} seed(s)"
                 + (", 95% t bands" if len(config.seeds) > 1 else ""))


def plot_sensitivity(run_dir: str, out_path, **kwargs):
    from cocoa_jax import viz

    return viz.save_figure(sensitivity_figure(run_dir, **kwargs), out_path, dpi=110)


# ----------------------------------------------------------------------------- Gini


def gini_per_seed(run_dir: str, absolute: bool = True):
    """{(method, target): {seed: mean Gini over the seed's explicands}} of each stored channel-mean
    map: `sparsity.gini_index(maps, ndim=2, absolute=absolute)`. absolute=True (default): the Gini
    of |a|, in [0, 1) for every map; False: the official `compute_gini_index` on the RAW values."""
    from cocoa_jax.sparsity import gini_index

    _, run, rows, _ = collect(run_dir)
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
    config, _, _, _ = collect(run_dir)
    per_seed = gini_per_seed(run_dir, absolute)
    column = "Gini of \\|a\\| (higher: sparser)" if absolute else "Gini, official raw-value formula"
    lines = [f"| Method | Target | {column} |", "|---|---|---|"]
    for method, target in row_order(config):
        values = per_seed.get((method, target), {})
        seeds = [values[s] for s in config.seeds if s in values]
        cell = (float(np.mean(seeds)), ci95_halfwidth(seeds), len(seeds)) if seeds else None
        lines.append("| " + " | ".join(row_titles(config, method, target) + [format_cell(cell)]) + " |")
    where = " (at the largest size of the study)" if config.size_field else ""
    lines += ["", "Gini index of the stored channel-mean attribution maps" + where + ": " + GINI_NOTES[absolute]
              + " Mean over the explicands of a seed, then mean (95% CI half-width) over seeds."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- randomisation


def randomization_markdown(run_dir: str) -> str:
    config, _, _, _ = collect(run_dir)
    intro = ("Every number in this report is under model randomisation: per seed s, the encoder's parameters "
             "re-drawn with `randomize_params(params, jax.random.key(s))` (the official `--randomize-model`: each "
             "tensor from a normal with its own mean and std, truncated to its own range), then the same sampling, "
             "attribution and evaluation; the linear probe is trained per seed on the randomised encoder. "
             "Compare with the trained encoder's run of the same config (randomize_model false).")
    return intro + "\n\n" + markdown_table(run_dir, ("ccs", "corpus_majority_prob"), directions_note=False)


# ----------------------------------------------------------------------------- cascading randomisation

CASCADE_KINDS = (("abs", "cascade_spearman_abs", "absolute values"), ("signed", "cascade_spearman", "signed values"))


def cascade_values(run_dir: str):
    """(config, steps, {(method, target): {kind: {seed: per-explicand correlations (n, B+1)}}}) of a
    `randomize_cascade` run: steps = ["trained", block randomised first, ...]; kind "abs" or "signed"."""
    config, run, rows, _ = collect(run_dir)
    if not config.randomize_cascade:
        raise ValueError(f"{run_dir!r} is not a cascading-randomisation run (randomize_cascade is false)")
    steps, values = None, {}
    for row in rows.values():
        if config.reference_of(row["method"]) is not None:  # a reference map has no cascade
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
    config, steps, values = cascade_values(run_dir)
    basis = "seeds" if len(config.seeds) > 1 else "explicands"
    out = []
    for kind, _, _ in CASCADE_KINDS:
        body = []
        for method, target in row_order(config):
            if config.reference_of(method) is not None:
                continue
            by_seed = values.get((method, target), {}).get(kind, {})
            cells = []
            for j in range(len(steps)):
                if basis == "seeds":
                    samples = [float(np.nanmean(v[:, j])) for s, v in sorted(by_seed.items())
                               if np.isfinite(v[:, j]).any()]
                else:
                    samples = [float(x) for v in by_seed.values() for x in v[:, j] if np.isfinite(x)]
                cells.append((float(np.mean(samples)), ci95_halfwidth(samples), len(samples))
                             if samples else None)
            body.append(((method, target), cells))
        out.append((kind, body))
    return config, steps, out, basis


def cascade_markdown(run_dir: str) -> str:
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
            lines.append("| " + " | ".join(row_titles(config, method, target) + [format_cell(c) for c in cells])
                         + " |")
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
    signed, one line per target with a 95% t band (`viz.plot_cascade`). Returns the Figure."""
    from cocoa_jax import viz

    config, steps, tables, basis = cascade_table(run_dir)
    methods = list(dict.fromkeys(method for (method, _), _ in tables[0][1]))
    kind_titles = dict((k, t) for k, _, t in CASCADE_KINDS)
    panels = [[(f"{METHOD_TITLES.get(method, method)}: {kind_titles[kind]}",
                [viz.Series(TARGET_TITLES.get(target, target),
                            np.array([np.nan if cell is None else cell[0] for cell in cells]),
                            np.array([np.nan if cell is None else cell[1] for cell in cells]))
                 for (m, target), cells in body if m == method])
               for kind, body in tables] for method in methods] or [[None] * len(tables)]
    return viz.plot_cascade(
        steps, panels, suptitle="Cascading model randomisation: blocks randomised from the top block (left) to all "
                                f"blocks (right); 95% t bands over {basis}")


def plot_cascade(run_dir: str, out_path):
    from cocoa_jax import viz

    return viz.save_figure(cascade_figure(run_dir), out_path, dpi=110)


def extra_sections(run_dir: str, gini_absolute: bool = True) -> list[tuple[str, str]]:
    """(title, markdown) sections `write_report` adds for this run: model randomisation (first),
    size sensitivity, Gini (of |a|, or the official raw-value formula with gini_absolute=False)."""
    config, _, _, _ = collect(run_dir)
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
    config, _, _, _ = collect(run_dir)
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
