"""`cocoa-jax explain`: explain an encoder's representations of images with COCOA.

With no arguments, the main demo: the shipped SimCLR digits encoder on the scikit-learn digits
(explicands: test images of one digit; corpus: training images of a digit; foil: random other
training images). With your own encoder and data:

    cocoa-jax explain --model resnet50 --weights converted/mocov3 --images dogs/ \
        --corpus corpus_dogs/ --foil random_images/ --methods rise,integrated_gradients
    cocoa-jax explain --model clip_vit --weights converted/clip --images photo.jpg \
        --corpus-text "a photo of a dog" --foil-text "a photo of a cat" "a photo of a car"

Images (files, folders or globs) are read at the model's input size through its own resize and
crop, attributed as [0, 1] pixels (every model normalises inside its encode_fn), against the blurred
image (GaussianBlur(21, 5), paper Appendix H). The targets (COCOA, corpus, label-free,
contrastive label-free) are stacked into ONE target, so every encoder pass serves all of them;
methods and their option flags come from the method table (`cocoa_jax.methods`). The work is
`cocoa_jax.pipeline.explain_images`, the same call the API offers.

Every argument is checked before any work; a mistake is one line on stderr, exit status 2.
Writes to --out (default runs/explain) all three files together at the end, or none of them
(Ctrl-C or an error before that leaves --out as it was), refusing to replace an earlier run's
files unless --overwrite:
  figure.png        explicands, then one row of overlays per (target, method)
  attributions.npz  raw attributions, one array per method (axis orders in settings.json)
  settings.json     the settings used, the data, the axis order of every array, timings, versions
"""
from __future__ import annotations

import argparse
import os
import time
from typing import NamedTuple

import numpy as np

from cocoa_jax.commands.errors import UsageError, flag_errors
from cocoa_jax.records import environment_record
from cocoa_jax.commands import method_flags
from cocoa_jax.commands.checks import image_encoder, note_zero_maps, output_folder, parse_names, positive, read_images
from cocoa_jax.files import Outputs

DEFAULT_TARGETS = ("cocoa", "corpus", "label_free", "contrastive_label_free")
DEFAULT_METHODS = ("integrated_gradients", "gradient_shap", "rise")
N_CLASSES = 10
DEFAULT_OUT = os.path.join("runs", "explain")
OUTPUT_FILES = ("figure.png", "attributions.npz", "settings.json")
DEMO_DEFAULTS = {"corpus_class": 3, "explicands": 4, "corpus_size": 100}


def joint_text_encoders() -> tuple[str, ...]:
    """The architectures whose captions can contrast images (`ArchSpec.joint_text`)."""
    from cocoa_jax.models import ARCHITECTURES

    return tuple(name for name, spec in ARCHITECTURES.items() if spec.joint_text)


def _target_names() -> tuple[str, ...]:
    from cocoa_jax import targets

    return tuple(targets.TARGETS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cocoa_jax.models import list_architectures

    data = parser.add_argument_group("what to explain (default: the digits demo)")
    data.add_argument("--model", default="digits", metavar="ARCH",
                      help=f"architecture, one of {', '.join(list_architectures())} (default digits, shipped)")
    data.add_argument("--weights", default=None, metavar="DIR",
                      help="model directory: the out_dir of `cocoa-jax convert ARCH ...` (required unless the "
                           "model ships with cocoa-jax), or a `cocoa-jax train-digits --out DIR` checkpoint")
    data.add_argument("--images", nargs="+", action="extend", default=None, metavar="PATH",
                      help="explicands: image files, folders or glob patterns (default: digits test images)")
    data.add_argument("--text", nargs="+", action="extend", default=None, metavar="TEXT",
                      help="explain sentences instead of images (token attributions; docs/text.md): digits "
                           "dual encoder by default, or --model ARCH --weights DIR of a model with a text tower "
                           "(CLIP, SigLIP, sentence_bert)")
    data.add_argument("--text-file", default=None, metavar="FILE", help="sentences to explain, one per line")
    data.add_argument("--corpus", nargs="+", action="extend", default=None, metavar="PATH",
                      help="corpus images: files, folders or globs (with --images)")
    data.add_argument("--corpus-text", nargs="+", action="extend", default=None, metavar="TEXT",
                      help=f"corpus captions, for image-text encoders ({', '.join(joint_text_encoders())}): "
                           f"cross-modal COCOA")
    data.add_argument("--foil", nargs="+", action="extend", default=None, metavar="PATH",
                      help="foil images: files, folders or globs; --foil-size of them are drawn at random")
    data.add_argument("--foil-text", nargs="+", action="extend", default=None, metavar="TEXT", help="foil captions (image-text encoders)")
    data.add_argument("--foil-size", type=int, default=None,
                      help="foil images drawn (default: foil_size(0.01, 0.05, nonnegative=True) = 1060, capped by "
                           "what is available)")
    demo = parser.add_argument_group("digits demo")
    demo.add_argument("--corpus-class", type=int, default=None,
                      help=f"digit class of the corpus (0-9; default {DEMO_DEFAULTS['corpus_class']})")
    demo.add_argument("--explicand-class", type=int, default=None,
                      help="class of the explicands (default: the corpus class, the paper's same-class setting)")
    demo.add_argument("--explicands", type=int, default=None,
                      help=f"number of explicands (test images; default {DEMO_DEFAULTS['explicands']})")
    demo.add_argument("--corpus-size", type=int, default=None,
                      help=f"corpus images (default {DEMO_DEFAULTS['corpus_size']})")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help=f"comma-separated targets, from {', '.join(_target_names())} (default: all)")
    parser.add_argument("--similarity", default="cosine", help="cosine (paper) or dot")
    method_flags.add_arguments(parser, default_methods=DEFAULT_METHODS)
    parser.set_defaults(_image_methods=",".join(DEFAULT_METHODS))  # text mode swaps in its own default
    parser.add_argument("--batch-size", type=int, default=None,
                        help="perturbed inputs per encoder call (default: all at once up to 64 px, else the "
                             "largest power of two <= 32 whose programs fit a quarter of the free memory, at "
                             "most 2 GB, from a probe of the model: cocoa_jax.cost)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="time budget in seconds: the methods' counts (masks, samples, steps) are scaled "
                             "down by one factor until the probe-timed estimate fits (never up; compiling is "
                             "not counted); with --tolerance the scaled count is the adaptive mode's pass budget")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace figure.png / attributions.npz / settings.json of an earlier run in --out")
    from cocoa_jax.commands import quiet

    quiet.add_argument(parser)
    from cocoa_jax import compile_cache

    compile_cache.add_argument(parser)


# ---------------------------------------------------------------------------------------------
# Argument checks (all run before any work)

def _class(option: str, value) -> int:
    if not 0 <= int(value) < N_CLASSES:
        raise UsageError(f"{option} must be a digit class in 0..{N_CLASSES - 1}, got {value}")
    return int(value)


def check_out_dir(out: str, overwrite: bool) -> str:
    """Absolute output folder; refuse a file, or an earlier run's outputs unless `overwrite`."""
    return output_folder(out, OUTPUT_FILES, overwrite)


# Library argument names in selection errors -> the flags they come from.
SELECTION_FLAGS = {"n_explicands": "--explicands", "corpus_size": "--corpus-size", "foil_size": "--foil-size"}


# ---------------------------------------------------------------------------------------------
# Inputs: the digits demo, or the user's model and files


def array_axes(method_names, *, demo: bool) -> dict[str, str]:
    """Axis order of every array in attributions.npz (N explicands, K targets)."""
    from cocoa_jax import methods

    axes = {name: "(N, K, H, W, C)" if methods.get(name).per_channel else "(N, K, H, W)"
            for name in method_names}
    axes.update({
        "explicands": "(N, H, W, C) pixels in [0, 1]", "baselines": "(N, H, W, C) the blurred explicands",
        "scores": "(N, K) target value at each explicand",
        "baseline_scores": "(N, K) target value at each baseline",
        "completeness_gaps": "{method}_completeness_gap (N, K): sum of attributions - (score - baseline_score)",
        "target_names": "(K,) the K axis", "method_names": "the methods run",
    })
    if demo:
        axes.update({"explicand_indices": "(N,) into the digits test split", "explicand_labels": "(N,)",
                     "corpus_indices": "(corpus_size,) into the digits training split",
                     "foil_indices": "(foil_size,) into the digits training split"})
    else:
        axes.update({"explicand_files": "(N,) the explicands' files", "corpus_files": "the corpus files",
                     "foil_files": "the foil files drawn"})
    return axes


def _check_data_arguments(args, target_names) -> dict:
    """Which mode (demo or files) and everything about the data that can be checked before loading."""
    from cocoa_jax import targets
    from cocoa_jax.data import files
    from cocoa_jax import models

    if args.model not in models.ARCHITECTURES:
        from cocoa_jax.models.architectures import did_you_mean

        raise UsageError(f"--model must be one of {', '.join(models.list_architectures())}, got {args.model!r}"
                         f"{did_you_mean(args.model)}")
    image_encoder("--model", args.model, instead="explain its sentences with --text/--text-file")
    spec = models.ARCHITECTURES[args.model]
    if args.weights is None and spec.default_dir is None:
        raise UsageError(f"--model {args.model} needs --weights DIR (the out_dir of `cocoa-jax convert "
                         f"{args.model} CHECKPOINT DIR`)")
    if args.weights is not None and not os.path.isdir(os.path.expanduser(args.weights)):
        raise UsageError(f"--weights {args.weights!r} is not a directory")
    own = [flag for flag, value in (("--images", args.images), ("--corpus", args.corpus),
                                    ("--corpus-text", args.corpus_text), ("--foil", args.foil),
                                    ("--foil-text", args.foil_text)) if value is not None]
    demo_flags = [flag for flag, value in (("--corpus-class", args.corpus_class),
                                           ("--explicand-class", args.explicand_class),
                                           ("--explicands", args.explicands), ("--corpus-size", args.corpus_size))
                  if value is not None]
    demo = not own
    if demo:
        # The demo's data are the 32x32 grey digits: any encoder of that input runs it (digits, digits_vit).
        if models.input_shape_of(args.model, args.weights) != models.ARCHITECTURES[models.DIGITS].input_shape({}):
            raise UsageError(f"--model {args.model} needs --images PATH (and --corpus/--foil or their text forms); "
                             f"the built-in demo is for encoders of 32x32 grey digits (digits, digits_vit)")
        return {"demo": True, "corpus_class": _class("--corpus-class", DEMO_DEFAULTS["corpus_class"]
                                                      if args.corpus_class is None else args.corpus_class),
                "explicands": positive("--explicands", DEMO_DEFAULTS["explicands"]
                                        if args.explicands is None else args.explicands),
                "corpus_size": positive("--corpus-size", DEMO_DEFAULTS["corpus_size"]
                                         if args.corpus_size is None else args.corpus_size),
                "explicand_class": None if args.explicand_class is None
                else _class("--explicand-class", args.explicand_class)}
    if demo_flags:
        raise UsageError(f"{', '.join(demo_flags)} belong to the digits demo; with {own[0]}, name the images "
                         f"themselves (--images, --corpus, --foil)")
    if args.images is None:
        raise UsageError(f"{own[0]} needs --images PATH (the explicands)")
    for image_flag, text_flag, what in (("--corpus", "--corpus_text", "corpus"), ("--foil", "--foil_text", "foil")):
        if getattr(args, image_flag[2:]) is not None and getattr(args, text_flag[2:]) is not None:
            raise UsageError(f"give the {what} as images ({image_flag}) or as text ({text_flag.replace('_', '-')}), "
                             f"not both")
    text = args.corpus_text is not None or args.foil_text is not None
    if text and not spec.joint_text:  # the table's capability flag, not a list of names
        raise UsageError(f"--corpus-text/--foil-text need an image-text encoder ({', '.join(joint_text_encoders())}); "
                         f"--model {args.model} has no text tower in its image space")
    needs = {need for name in target_names for need in targets.TARGETS[name][1]}
    if "corpus_reps" in needs and args.corpus is None and args.corpus_text is None:
        raise UsageError(f"--targets {','.join(target_names)} need a corpus: --corpus PATH (or --corpus-text)")
    if "foil_reps" in needs and args.foil is None and args.foil_text is None:
        raise UsageError(f"--targets {','.join(target_names)} need a foil: --foil PATH (or --foil-text)")
    found = {}
    for name in ("images", "corpus", "foil"):
        with flag_errors(f"--{name}"):
            found[name] = None if getattr(args, name) is None else files.expand(getattr(args, name))
    return {"demo": False, **{f"{k}_files": v for k, v in found.items()},
            "corpus_text": args.corpus_text, "foil_text": args.foil_text}


def _digits_inputs(model, setup, args):
    """Demo: explicand, corpus and foil images from the digits split, with their indices."""
    from cocoa_jax.data import selection
    from cocoa_jax.data.digits import load_digits_split

    data = load_digits_split(seed=0)  # the split the encoder was trained on (train images only)
    corpus_class = setup["corpus_class"]
    explicand_class = corpus_class if setup["explicand_class"] is None else setup["explicand_class"]
    foil_arg = None if args.foil_size is None else positive("--foil-size", args.foil_size)
    with flag_errors(None, names=SELECTION_FLAGS):
        expl_idx, corpus_idx, foil_idx, capped = selection.choose_digits(
            data.y_train, data.y_test, corpus_class=corpus_class, explicand_class=explicand_class,
            n_explicands=setup["explicands"], corpus_size=setup["corpus_size"], foil_size=foil_arg, seed=args.seed)
    weights = "shipped weights" if args.weights is None else f"weights {args.weights}"
    return dict(
        images=data.x_test[expl_idx], corpus=data.x_train[corpus_idx], foil=data.x_train[foil_idx],
        titles=[f"test #{i} (digit {data.y_test[i]})" for i in expl_idx],
        encoder=f"the {model.name} encoder ({weights})",
        corpus_text=f"{len(corpus_idx)} training images of digit {corpus_class}",
        foil_text=f"{len(foil_idx)} random training images outside the corpus",
        arrays=dict(explicand_indices=expl_idx, explicand_labels=data.y_test[expl_idx],
                    corpus_indices=corpus_idx, foil_indices=foil_idx),
        record=dict(corpus_class=corpus_class, explicand_class=explicand_class, explicands=len(expl_idx),
                    corpus_size=len(corpus_idx), foil_size=int(len(foil_idx)), foil_size_capped=capped,
                    data="scikit-learn digits, split seed 0"))


def _file_inputs(model, setup, args):
    """Own data: the files named on the command line, read at the model's input size."""
    from cocoa_jax.data import selection

    def read(flag, paths):
        return read_images("explain", flag, paths, model)

    out = dict(images=read("--images", setup["images_files"]), corpus=None, foil=None, corpus_reps=None,
               foil_reps=None, titles=[os.path.basename(p) for p in setup["images_files"]],
               encoder=f"{args.model} ({args.weights or 'shipped weights'})", arrays={}, record={})
    out["arrays"]["explicand_files"] = np.array(setup["images_files"])
    if setup["corpus_files"] is not None:
        out["corpus"] = read("--corpus", setup["corpus_files"])
        out["corpus_text"] = f"{len(setup['corpus_files'])} images"
        out["arrays"]["corpus_files"] = np.array(setup["corpus_files"])
    elif setup["corpus_text"] is not None:
        with flag_errors("--corpus-text"):  # e.g. a SigLIP converted without its tokenizer.json
            out["corpus_reps"] = np.asarray(model.encode_text(list(setup["corpus_text"])))
        out["corpus_text"] = "; ".join(repr(t) for t in setup["corpus_text"])
    else:
        out["corpus_text"] = "none"
    if setup["foil_files"] is not None:
        pool = setup["foil_files"]
        with flag_errors(None, names=SELECTION_FLAGS):
            foil_files = [pool[i] for i in selection.draw_foil(len(pool), args.foil_size, args.seed)]
        out["foil"] = read("--foil", foil_files)
        out["foil_text"] = f"{len(foil_files)} of {len(pool)} images drawn at random"
        out["arrays"]["foil_files"] = np.array(foil_files)
    elif setup["foil_text"] is not None:
        with flag_errors("--foil-text"):  # e.g. a SigLIP converted without its tokenizer.json
            out["foil_reps"] = np.asarray(model.encode_text(list(setup["foil_text"])))
        out["foil_text"] = "; ".join(repr(t) for t in setup["foil_text"])
    else:
        out["foil_text"] = "none"
    out["record"] = dict(images=setup["images_files"], corpus=setup["corpus_files"] or setup["corpus_text"],
                         foil=out["arrays"].get("foil_files", setup["foil_text"]))
    if isinstance(out["record"]["foil"], np.ndarray):
        out["record"]["foil"] = out["record"]["foil"].tolist()
    return out


# ---------------------------------------------------------------------------------------------
# The command


class Checked(NamedTuple):
    """Every argument, checked and resolved before any work."""

    targets: tuple[str, ...]
    methods: tuple[str, ...]
    options: dict            # method -> option values (flags over the --estimators profile)
    batch_size: int | None
    setup: dict              # the data: the demo's numbers, or the files and captions
    image_shape: tuple
    out: str                 # absolute --out, proven writable


def check_arguments(args: argparse.Namespace) -> Checked:
    """Every check, before any heavy import or computation: a mistake is a UsageError naming the flag."""
    target_names = parse_names("--targets", args.targets, _target_names())
    method_names = method_flags.selected(args)
    from cocoa_jax.targets import SIMILARITIES

    if args.similarity not in SIMILARITIES:
        raise UsageError(f"--similarity must be one of {', '.join(SIMILARITIES)}, got {args.similarity!r}")
    if int(args.seed) < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    batch_size = None if args.batch_size is None else positive("--batch-size", args.batch_size)
    if args.foil_size is not None:
        positive("--foil-size", args.foil_size)
    setup = _check_data_arguments(args, target_names)
    from cocoa_jax import models

    image_shape = models.input_shape_of(args.model, args.weights)
    if image_shape is None:
        raise UsageError(f"--weights {args.weights!r} holds no readable model.json for --model {args.model}")
    options = method_flags.options(args, method_names, image_shape, batch_size=batch_size,
                                   estimators=method_flags.profile(args))
    out = check_out_dir(args.out, args.overwrite)
    if args.budget is not None and not args.budget > 0:
        raise UsageError(f"--budget must be a number of seconds > 0, got {args.budget}")
    return Checked(target_names, method_names, options, batch_size, setup, image_shape, out)


def cost_preview(args, checked: Checked, model, n_explicands: int, lanes: int):
    """The default batch (ImageNet-size images: from a probe of the model and the free memory)
    and, unless --quiet, the cost preview on stderr (`cocoa_jax.cost.plan`). Returns (checked with
    its batch size and, with --budget, the counts fitted to it; the Estimate, or None when quiet with nothing to decide)."""
    import sys

    from cocoa_jax import cost

    if args.quiet and args.budget is None and not (max(checked.image_shape[:2]) > 64 and checked.batch_size is None):
        return checked, None
    try:
        plan = cost.plan(model.encode_fn, model.params, checked.image_shape,
                         {m: checked.options.get(m, {}) for m in checked.methods}, n_explicands=n_explicands,
                         k=len(checked.targets), lanes=lanes, batch_size=checked.batch_size,
                         cheaper_profile="fast" if method_flags.profile(args) == "paper" else None, budget_s=args.budget,
                         quiet=args.quiet)
    except cost.BudgetError as err:
        raise UsageError(f"--budget {args.budget:g}: {err}") from None
    if plan.lines:
        print("\n".join(plan.lines), file=sys.stderr, flush=True)
    return checked._replace(batch_size=plan.batch_size, options={**checked.options, **plan.options}), plan.estimate


def load_inputs(args: argparse.Namespace, setup: dict):
    """The model and the images to explain (demo split or the user's files)."""
    from cocoa_jax.models import load

    with flag_errors("--weights", FileNotFoundError, ValueError):
        model = load(args.model, args.weights)
    return model, (_digits_inputs if setup["demo"] else _file_inputs)(model, setup, args)


def figure_rows(result, target_names, method_names):
    """Rows of the figure: target x method, each (method, title, (N, H, W[, C]) maps)."""
    from cocoa_jax import methods
    from cocoa_jax import targets as T

    return [(m, f"{T.TARGET_TITLES[t]}\n{methods.get(m).title}".replace("Contrastive ", "Contrastive\n"),
             result.maps[m][:, target_names.index(t)]) for t in target_names for m in method_names]


FIGURE_NOTE = ("red = supports the target (positive attribution), blue = opposes it; rows are "
               "target x method, each row on one shared symmetric colour scale (+-m, m = the "
               "{clip:g}th percentile of the row's nonzero |values|, larger values saturate; "
               "numbers on its colour "
               "bar); per-channel maps are averaged over channels; maps of "
               "centred methods (RISE) are shown minus their mean (they carry the mean score as an offset)")


def settings_record(args, checked: Checked, inputs, gaps, devices: int, timings) -> dict:
    """settings.json: what was run, on what data, the axes of every array, timings, versions."""
    from cocoa_jax import methods, viz

    return {
        "model": args.model, "weights": args.weights or "shipped", **inputs["record"],
        "targets": list(checked.targets), "methods": list(checked.methods), "similarity": args.similarity,
        "method_options": {m: {k: list(v) if isinstance(v, tuple) else v
                               for k, v in methods.resolved_options(m, o, checked.image_shape).items()
                               if k != "feature_mask"}
                           for m, o in checked.options.items()},
        "estimators": method_flags.profile(args), "budget_s": args.budget,
        "baseline": "gaussian_blur(kernel_size=21, sigma=5.0) of the [0, 1] pixels", "seed": args.seed,
        "batch_size": checked.batch_size,
        "devices": devices,
        "arrays": {"file": "attributions.npz", "axes": array_axes(checked.methods, demo=checked.setup["demo"])},
        "figure": FIGURE_NOTE.format(clip=viz.DEFAULT_CLIP),
        "max_abs_completeness_gap": max(gaps) if gaps else None,
        "timings_s": timings,
        **environment_record(),
    }


def run(args: argparse.Namespace) -> int:
    from cocoa_jax.meshes import use_every_core

    # Every core as a device (set before JAX's backends start): explicands run one per device.
    use_every_core()
    if args.text is not None or args.text_file is not None:  # sentences: token attributions
        from cocoa_jax.commands import explain_text

        return explain_text.run(args)
    checked = check_arguments(args)
    target_names, method_names, out = checked.targets, checked.methods, checked.out
    note_zero_maps("explain", method_names, target_names, args.similarity, args.quiet)

    import jax
    from tqdm.auto import tqdm

    from cocoa_jax import meshes, phases, pipeline, viz

    t_start = time.perf_counter()
    timings = {}
    t0 = time.perf_counter()
    phases.reached("load")
    model, inputs = load_inputs(args, checked.setup)
    timings["load"] = round(time.perf_counter() - t0, 3)

    # One explicand per device. Measured on the 2-core CPU, 4 explicands: RISE 2.97 s on 2 host
    # devices vs 4.76 s on one, the same bits (docs/performance.md).
    mesh = meshes.local_explicand_mesh(len(inputs["images"]))
    checked, estimate = cost_preview(args, checked, model, len(inputs["images"]),
                                     1 if mesh is None else int(mesh.devices.size))
    # Progress in forward-pass units (a gradient pass weighs what the probe measured), so the
    # remaining time is right from the first method on.
    work = {m: max(int(round(estimate.work(m))), 1) if estimate and m in estimate.passes else 1 for m in method_names}
    bar = tqdm(total=sum(work.values()), desc="cocoa-jax explain", unit="pass", disable=args.quiet)

    def on_method(name, seconds):
        timings[name] = round(seconds, 3)
        phases.reached(f"method {name}")
        passes = estimate.passes[name].total * estimate.n_explicands if estimate and name in estimate.passes else 0
        bar.set_postfix_str(f"{name} {seconds:.1f}s" + (f", {passes / max(seconds, 1e-9):.3g} passes/s" if passes else ""))
        bar.update(work[name])
    preload = viz.preload()  # matplotlib's imports overlap the attributions (joined before the figure)
    phases.reached("compute")
    with flag_errors(None):  # data the model cannot take (range, size): one line
        result = pipeline.explain_images(
            model, inputs["images"], corpus=inputs.get("corpus"), foil=inputs.get("foil"),
            corpus_reps=inputs.get("corpus_reps"), foil_reps=inputs.get("foil_reps"), targets=target_names,
            methods=method_names, options=checked.options, key=jax.random.key(args.seed),
            similarity=args.similarity, batch_size=checked.batch_size, on_method=on_method, mesh=mesh)
    timings["targets"] = round(result.seconds["targets"], 3)
    phases.reached("write")

    t0 = time.perf_counter()
    # All three files are committed together at the end: Ctrl-C before that leaves none of them.
    outputs = Outputs()
    extras = {f"{m}_completeness_gap": gap for m, gap in result.completeness_gaps.items()}
    arrays = dict(**result.maps, **extras, explicands=np.asarray(inputs["images"]), baselines=result.baselines,
                  scores=result.scores, baseline_scores=result.baseline_scores, **inputs["arrays"],
                  target_names=np.array(target_names), method_names=np.array(method_names))
    outputs.add_npz(os.path.join(out, "attributions.npz"), arrays)
    # Each row on one shared colour scale (numbers on its colour bar); centred methods' rows minus
    # their mean (the table's `centred` flag, applied by viz).
    rows = figure_rows(result, target_names, method_names)
    preload.join()
    suptitle = (f"Explaining {inputs['encoder']}\ncorpus: {inputs['corpus_text']}; foil: {inputs['foil_text']}; "
                f"baseline: blurred explicand")
    outputs.add_rendered(os.path.join(out, "figure.png"), lambda f: viz.plot_attributions(
        np.asarray(inputs["images"]), [maps for _, _, maps in rows], method=[m for m, _, _ in rows],
        titles=inputs["titles"], row_titles=[title for _, title, _ in rows], scale="row", clip=viz.DEFAULT_CLIP,
        suptitle=suptitle, image_label="explicand", path=f))
    timings["write"] = round(time.perf_counter() - t0, 3)
    bar.close()
    timings["total"] = round(time.perf_counter() - t_start, 3)

    gaps = [float(np.max(np.abs(v))) for v in extras.values()]
    devices = 1 if mesh is None else int(mesh.devices.size)
    outputs.add_json(os.path.join(out, "settings.json"), settings_record(args, checked, inputs, gaps, devices, timings))
    outputs.commit()
    print(f"wrote {os.path.join(out, 'figure.png')}, attributions.npz and settings.json "
          f"in {timings['total']:.1f} s")
    return 0
