"""`cocoa-jax evaluate`: score attribution maps from any library with the metric table.

    cocoa-jax evaluate --model resnet50 --weights converted/mocov3 --images dogs/ --maps maps.npz \
        --corpus corpus_dogs/ --foil random_images/ --metrics deletion,road_morf,irof
    cocoa-jax evaluate --maps runs/explain/attributions.npz --images dogs/ --corpus ... --foil ...

--maps is an .npz file holding either
  * `maps`: one array (N, H, W[, C]) (one map per explicand, scored against every target) or
    (N, K, H, W[, C]) (one per target), from any library; or
  * the arrays `cocoa-jax explain` writes (attributions.npz): one (N, K, H, W[, C]) array per method
    named in `method_names`, with `target_names` (the K axis; --targets defaults to them),
    `explicands` (used when --images is not given) and `baselines` (used unless --baseline).
--maps-key picks arrays of the file by name.

Every argument is checked before any work; a mistake is one line on stderr, exit status 2. Writes
to --out (default runs/evaluate), all together at the end or none (`files.Outputs`):
  scores.csv  one row per (maps, target): each metric's mean over explicands and 95% CI half-width
  scores.md   the same table with each metric's direction (↑ higher is better, ↓ lower is better)
  scores.npz  the per-explicand scores, `<maps>/<metric>` (N, K), with `target_names`
  scores.png  per metric, a dot at each row's mean with its 95% CI, the direction on the x-axis
--masks (an .npz with `masks` (N, H, W)) gives the localisation metrics their masks.
The work is `cocoa_jax.evaluation.evaluate`, the same call the API offers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from cocoa_jax.commands.checks import image_encoder, output_folder, parse_names, positive, read_images
from cocoa_jax.commands.errors import UsageError, flag_errors

DEFAULT_OUT = os.path.join("runs", "evaluate")
DEFAULT_METRICS = ("insertion", "deletion")
OUTPUT_FILES = ("scores.csv", "scores.md", "scores.npz", "scores.png")
MAPS_KEY = "maps"  # the documented key of a plain array of maps
MASKS_KEY = "masks"  # the documented key of the localisation masks of --masks


def _metric_names() -> tuple[str, ...]:
    from cocoa_jax import evaluation

    return tuple(evaluation.METRICS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cocoa_jax.models import list_architectures

    parser.add_argument("--maps", default=None, metavar="FILE.npz",
                        help=f"(required) maps to score: an .npz with `{MAPS_KEY}` (N, H, W[, C]) or "
                             "(N, K, H, W[, C]), or `cocoa-jax explain`'s attributions.npz")
    parser.add_argument("--maps-key", default=None, metavar="NAMES",
                        help="comma-separated arrays of --maps to score (default: `maps`, else every method of "
                             "an explain file)")
    parser.add_argument("--masks", default=None, metavar="FILE.npz",
                        help=f"localisation masks for pointing_game / relevance_*_accuracy: an .npz with `{MASKS_KEY}` "
                             "(N, H, W) booleans (or 0/1), one per explicand in the maps' order, none empty")
    parser.add_argument("--model", default="digits", metavar="ARCH",
                        help=f"architecture, one of {', '.join(list_architectures())} (default digits, shipped)")
    parser.add_argument("--weights", default=None, metavar="DIR", help="model directory (as for explain)")
    parser.add_argument("--images", nargs="+", action="extend", default=None, metavar="PATH",
                        help="explicands: image files, folders or globs, in the maps' order (default: the "
                             "`explicands` array of --maps)")
    parser.add_argument("--corpus", nargs="+", action="extend", default=None, metavar="PATH",
                        help="corpus images (targets cocoa, corpus)")
    parser.add_argument("--foil", nargs="+", action="extend", default=None, metavar="PATH",
                        help="foil images (targets cocoa, contrastive_label_free), all of them")
    parser.add_argument("--targets", default=None,
                        help="comma-separated targets of cocoa_jax.targets (default: --maps' target_names, "
                             "else cocoa)")
    parser.add_argument("--similarity", default="cosine", choices=("cosine", "dot"), help="cosine (paper) or dot")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help="comma-separated metrics of cocoa_jax.evaluation.METRICS (docs/metrics.md; default "
                             f"{','.join(DEFAULT_METRICS)})")
    parser.add_argument("--metric-options", default=None, metavar="JSON",
                        help='options over the defaults, e.g. \'{"pixel_flipping": {"features_in_step": 16}}\'')
    parser.add_argument("--baseline", default=None, choices=("blur", "black", "zeros"),
                        help="what removed pixels take: blur (the paper's GaussianBlur(21, 5); default, or the "
                             "`baselines` of an explain file), black (each image's minimum, Quantus's default), zeros")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="perturbed images per encoder call per explicand (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random metrics (default 0)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    from cocoa_jax.commands import quiet

    quiet.add_argument(parser)


# ---------------------------------------------------------------------------------------------
# Checks (before any work)


def read_maps_file(path: str, keys=None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({name: maps array}, {extra arrays: target_names, explicands, baselines}) of a --maps file."""
    if not os.path.isfile(path):
        raise UsageError(f"--maps {path!r} is not a file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise UsageError(f"--maps {path!r} is not a readable .npz file ({err})") from None
    if keys is None:
        if MAPS_KEY in arrays:
            keys = (MAPS_KEY,)
        elif "method_names" in arrays:
            keys = tuple(str(name) for name in arrays["method_names"])
        else:
            raise UsageError(f"--maps {path!r} has no `{MAPS_KEY}` array and no `method_names` (arrays: "
                             f"{', '.join(sorted(arrays)) or 'none'}); pass --maps-key")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise UsageError(f"--maps {path!r} has no array {', '.join(map(repr, missing))} (arrays: "
                         f"{', '.join(sorted(arrays))})")
    extras = {k: arrays[k] for k in ("target_names", "explicands", "baselines") if k in arrays}
    return {k: arrays[k] for k in keys}, extras


def read_masks_file(path: str) -> np.ndarray:
    """The `masks` array of a --masks file (its values are checked against the explicands later)."""
    if not os.path.isfile(path):
        raise UsageError(f"--masks {path!r} is not a file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if MASKS_KEY not in data.files:
                raise UsageError(f"--masks {path!r} has no `{MASKS_KEY}` array (arrays: "
                                 f"{', '.join(sorted(data.files)) or 'none'})")
            return data[MASKS_KEY]
    except (OSError, ValueError) as err:
        raise UsageError(f"--masks {path!r} is not a readable .npz file ({err})") from None


def check_arguments(args) -> dict:
    """Every flag checked and resolved; raises UsageError naming the flag."""
    from cocoa_jax import evaluation, models, targets
    from cocoa_jax.data import files

    # The output location first: nothing is read before it is known to be writable.
    out = output_folder(args.out, OUTPUT_FILES, args.overwrite)
    image_encoder("--model", args.model)
    if args.maps is None:
        raise UsageError("--maps is required: an .npz of the maps to score")
    keys = None if args.maps_key is None else tuple(k.strip() for k in args.maps_key.split(",") if k.strip())
    if keys is not None and not keys:
        raise UsageError("--maps-key is empty")
    maps, extras = read_maps_file(args.maps, keys)
    if args.model not in models.ARCHITECTURES:
        raise UsageError(f"--model must be one of {', '.join(models.list_architectures())}, got {args.model!r}")
    default_targets = ",".join(str(t) for t in extras["target_names"]) if "target_names" in extras else "cocoa"
    target_names = parse_names("--targets", args.targets or default_targets, targets.TARGETS)
    metrics = parse_names("--metrics", args.metrics, _metric_names())
    options = {}
    if args.metric_options is not None:
        try:
            options = json.loads(args.metric_options)
        except json.JSONDecodeError as err:
            raise UsageError(f"--metric-options is not JSON ({err})") from None
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise UsageError('--metric-options must be {"metric": {"option": value}}')
    with flag_errors("--metric-options"):
        evaluation.check_metrics(metrics, options)
    needs = {"corpus": ("cocoa", "corpus"), "foil": ("cocoa", "contrastive_label_free")}
    found = {}
    for name in ("images", "corpus", "foil"):
        value = getattr(args, name)
        with flag_errors(f"--{name}"):
            found[name] = None if value is None else files.expand(value)
    for name, users in needs.items():
        if found[name] is None and any(t in users for t in target_names):
            raise UsageError(f"--{name} is required by the target(s) "
                             f"{', '.join(t for t in target_names if t in users)}")
    if found["images"] is None and "explicands" not in extras:
        raise UsageError("--images is required: --maps holds no `explicands` array")
    # The maps' shape against the model's input and the explicand count, before anything is loaded.
    image_shape = models.input_shape_of(args.model, args.weights)
    n = len(found["images"]) if found["images"] is not None else len(extras["explicands"])
    if image_shape is not None:
        for name, array in maps.items():
            with flag_errors(f"--maps {name}"):
                evaluation.maps_with_target_axis(array, (n,) + tuple(image_shape), len(target_names))
    for flag, record in (("--metrics", r) for r in map(evaluation.get, metrics)):
        for need, what in (("needs_explainer", "an explainer"), ("needs_randomized_model", "randomised models"),
                           ("needs_alternative_target", "an alternative target")):
            if getattr(record, need):
                raise UsageError(f"{flag}: {record.name!r} needs {what}, which this command does not take yet; "
                                 f"use cocoa_jax.evaluation.evaluate")
    masks = _checked_masks(args.masks, metrics, n, image_shape)
    batch_size = None if args.batch_size is None else positive("--batch-size", args.batch_size)
    return dict(maps=maps, extras=extras, targets=target_names, metrics=metrics, options=options, files=found,
                batch_size=batch_size, out=out, masks=masks)


def _checked_masks(path, metrics, n, image_shape):
    """--masks read and checked (shape against the explicands and the model's input, 0/1 values,
    none empty) when a metric reads masks; required by those metrics, refused by the others."""
    from cocoa_jax import evaluation

    readers = [m for m in metrics if evaluation.get(m).needs_mask]
    if path is None:
        if readers:
            raise UsageError(f"--metrics: {', '.join(map(repr, readers))} need(s) localisation masks: pass "
                             f"--masks FILE.npz (`{MASKS_KEY}` (N, H, W), one per explicand)")
        return None
    if not readers:
        mask_metrics = ", ".join(m for m, record in evaluation.METRICS.items() if record.needs_mask)
        raise UsageError(f"--masks is read only by {mask_metrics}; --metrics has none of them")
    masks = read_masks_file(path)
    # Without a known input shape the height and width are checked against the images once read.
    shape = image_shape if image_shape is not None else (tuple(np.shape(masks)[1:3]) + (0, 0))[:2]
    with flag_errors("--masks"):
        return evaluation.localisation.check_masks(masks, shape, n)


# ---------------------------------------------------------------------------------------------
# The table


def summary_rows(scores: dict, target_names, metrics) -> list[dict]:
    """One row per (maps, target): each metric's mean over explicands, 95% CI half-width and n."""
    from cocoa_jax.sweep.tables import ci95_halfwidth

    rows = []
    for maps_name, by_metric in scores.items():
        for k, target in enumerate(target_names):
            row = {"maps": maps_name, "target": target}
            for metric in metrics:
                values = by_metric[metric][:, k].astype(np.float64)
                row[metric] = (float(np.mean(values)), ci95_halfwidth(values), len(values))
            rows.append(row)
    return rows


def csv_text(rows, metrics) -> str:
    header = ["maps", "target"] + [f"{m}{suffix}" for m in metrics for suffix in ("", "_ci95", "_n")]
    lines = [",".join(header)]
    for row in rows:
        cells = [row["maps"], row["target"]]
        for m in metrics:
            mean, ci, n = row[m]
            cells += [repr(mean), repr(ci), str(n)]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def markdown_text(rows, metrics) -> str:
    from cocoa_jax import evaluation

    records = [evaluation.get(m) for m in metrics]
    header = ["Maps", "Target"] + [f"{r.title} ({r.arrow})" for r in records]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["maps"], row["target"]] + [f"{row[m][0]:.4g} ({row[m][1]:.2g})" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    n = rows[0][metrics[0]][2] if rows else 0
    lines += ["", f"Mean over {n} explicands (95% CI half-width, t). ↑: higher is better, ↓: lower is better "
                  "(`cocoa_jax.evaluation.METRICS`, docs/metrics.md)."]
    return "\n".join(lines) + "\n"


def figure_panels(rows, metrics) -> list[tuple[str, str, list[tuple[str, float, float]]]]:
    """The data of scores.png (`viz.plot_metric_scores`), read from the table's rows: per metric
    (title, x-label with its direction, [(row label, mean, 95% CI half-width), ...]) in row order.
    A row's label names what varies: the maps, the target, or both."""
    from cocoa_jax import evaluation

    several_maps = len({row["maps"] for row in rows}) > 1
    several_targets = len({row["target"] for row in rows}) > 1
    both = several_maps == several_targets

    def label(row):
        if both:
            return f"{row['maps']} · {row['target']}"
        return row["maps"] if several_maps else row["target"]

    panels = []
    for metric in metrics:
        record = evaluation.get(metric)
        xlabel = f"{record.title} ({record.arrow} {record.direction} is better)"
        panels.append((record.title, xlabel, [(label(row), row[metric][0], row[metric][1]) for row in rows]))
    return panels


# ---------------------------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace) -> int:
    checked = check_arguments(args)

    import jax

    from cocoa_jax import evaluation
    from cocoa_jax.files import Outputs
    from cocoa_jax.models import load

    with flag_errors("--weights", FileNotFoundError, ValueError):
        model = load(args.model, args.weights)
    found, extras = checked["files"], checked["extras"]
    images = (read_images("evaluate", "--images", found["images"], model) if found["images"] is not None
              else np.asarray(extras["explicands"], np.float32))
    corpus = None if found["corpus"] is None else read_images("evaluate", "--corpus", found["corpus"], model)
    foil = None if found["foil"] is None else read_images("evaluate", "--foil", found["foil"], model)
    baseline = args.baseline or ("given" if "baselines" in extras and found["images"] is None else "blur")
    if baseline == "given":
        baseline = np.asarray(extras["baselines"], np.float32)
    for name, maps in checked["maps"].items():  # shapes checked before the first evaluation
        with flag_errors(f"--maps {name}"):
            evaluation.maps_with_target_axis(maps, images.shape, len(checked["targets"]))
    if checked["masks"] is not None:
        with flag_errors("--masks"):
            evaluation.localisation.check_masks(checked["masks"], images.shape[1:3], len(images))
    scores = {}
    for name, maps in checked["maps"].items():
        if not args.quiet:
            print(f"cocoa-jax evaluate: scoring {name} ({', '.join(checked['metrics'])})", file=sys.stderr)
        with flag_errors(f"--maps {name}"):
            scores[name] = evaluation.evaluate(model, images, maps, metrics=checked["metrics"],
                                               targets=checked["targets"], corpus=corpus, foil=foil,
                                               similarity=args.similarity, key=jax.random.key(args.seed),
                                               baseline=baseline, options=checked["options"],
                                               batch_size=checked["batch_size"], masks=checked["masks"])
    rows = summary_rows(scores, checked["targets"], checked["metrics"])
    outputs, out = Outputs(), checked["out"]
    outputs.add_text(os.path.join(out, "scores.csv"), csv_text(rows, checked["metrics"]))
    outputs.add_text(os.path.join(out, "scores.md"), markdown_text(rows, checked["metrics"]))
    arrays = {f"{name}/{metric}": values for name, by in scores.items() for metric, values in by.items()}
    outputs.add_npz(os.path.join(out, "scores.npz"), {**arrays, "target_names": np.array(checked["targets"])})
    from cocoa_jax import viz

    n = len(images)
    figure = viz.plot_metric_scores(figure_panels(rows, checked["metrics"]),
                                    suptitle=f"Mean over {n} explicands, 95% CI (t)")
    outputs.add_rendered(os.path.join(out, "scores.png"), lambda f: viz.save_figure(figure, f))
    outputs.commit()
    print(markdown_text(rows, checked["metrics"]), end="")
    print(f"wrote {os.path.join(out, 'scores.csv')}, scores.md, scores.npz and scores.png")
    return 0
