"""`cocoa-jax augmentations`: what an encoder keeps invariant under augmentations (paper Sec. 4.2).

Every original image is augmented (flip, random resized crop, crop + flip, grayscale, colour
jitter, random erasing, 90-degree rotation; `cocoa_jax.usecases.augmentations`), and each view
is explained with COCOA (cosine; corpus: the un-augmented original, a corpus of one; foil:
random training images) side by side with the view's label-free target, by IG, GradientSHAP
and RISE with the blurred view as baseline.

Default (no arguments): the embedded digits encoder, 3 random test digits, a foil of 1060
random training digits. Digits have 1 channel, so the colour augmentations are skipped (and
the output says so). `--model ARCH --weights DIR --images A.png B.png --foil F1.png ...` runs
any converted encoder (`cocoa-jax convert`) on image files, prepared with the model's own
resize/crop; augmentations act on [0, 1] pixels and the model's normalisation follows them.

Writes to --out (default runs/augmentations); refuses to replace earlier outputs without
--overwrite; all three files are written together at the end, or none of them (Ctrl-C or an
error before that leaves --out as it was):
  figure.png        per original: its views (row 1), then one overlay row per (target, method)
  attributions.npz  raw arrays (axis orders in settings.json)
  settings.json     every setting, the images used, axis orders, timings and versions
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cocoa_jax.commands.errors import UsageError, flag_errors  # one line, exit 2
from cocoa_jax.records import environment_record
from cocoa_jax.commands.checks import image_encoder, output_folder, parse_names, positive, read_images

COMMAND = "augmentations"
DEFAULT_OUT = os.path.join("runs", "augmentations")
OUTPUTS = ("figure.png", "attributions.npz", "settings.json")
DEFAULT_METHODS = ("integrated_gradients", "gradient_shap", "rise")
TARGET_LABELS = {"cocoa": "COCOA", "label_free": "label-free"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="architecture of a converted encoder (see `cocoa-jax convert`); default: the "
                             "embedded digits encoder")
    parser.add_argument("--weights", default=None, help="the converted model directory (needed with --model)")
    parser.add_argument("--images", nargs="+", action="extend", default=None, metavar="PATH",
                        help="images to augment: files, folders or glob patterns (with --model)")
    parser.add_argument("--foil", nargs="+", action="extend", default=None, metavar="PATH",
                        help="images forming the foil: files, folders or globs (with --model; the digits default uses random "
                             "training digits)")
    parser.add_argument("--explicands", type=int, default=3, help="digits default: number of test digits (3)")
    parser.add_argument("--foil-size", type=int, default=None,
                        help="digits default: foil size (default foil_size(0.01, 0.05, nonnegative=True) = 1060)")
    parser.add_argument("--augmentations", default=None,
                        help="comma-separated views, from original, flip, crop, crop_flip, grayscale, "
                             "color_jitter, erase, rot90 (default: all that apply to the channels)")
    from cocoa_jax.commands import method_flags

    method_flags.add_arguments(parser, default_methods=DEFAULT_METHODS)  # flags and defaults from the table
    parser.add_argument("--batch-size", type=int, default=None,
                        help="perturbed inputs per encoder call and explicand (default: 500 for digits, 16 otherwise)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run in --out")
    from cocoa_jax.commands import quiet

    quiet.add_argument(parser)


# ----------------------------------------------------------------------------- validation


def _files(option, paths):
    """Image files, folders or globs -> the image files (as `explain --images` reads them)."""
    from cocoa_jax.data import files

    with flag_errors(option):
        return files.expand(paths)


def validate(args: argparse.Namespace) -> dict:
    """Every check that needs no heavy import; returns the resolved settings."""
    from cocoa_jax.commands import method_flags
    from cocoa_jax.usecases import augmentations as A

    digits = args.model in (None, "digits")
    if digits:
        if args.images or args.foil:
            raise UsageError("--images/--foil need --model ARCH --weights DIR (a converted 3-channel encoder); "
                             "the digits default draws test and training digits itself")
        channels = 1
    else:
        from cocoa_jax.models import CONVERTIBLE

        image_encoder("--model", args.model, choices=CONVERTIBLE + ("digits",))
        if args.model not in CONVERTIBLE:
            from cocoa_jax.models.architectures import did_you_mean

            raise UsageError(f"--model must be one of {', '.join(CONVERTIBLE)} (or digits), got {args.model!r}"
                             f"{did_you_mean(args.model)}")
        if not args.weights or not os.path.isfile(os.path.join(args.weights, "model.json")):
            raise UsageError(f"--weights must be the directory written by `cocoa-jax convert {args.model} ...` "
                             f"(with model.json), got {args.weights!r}")
        if not args.images:
            raise UsageError("--model needs --images FILE [FILE ...]")
        if not args.foil:
            raise UsageError("--model needs --foil FILE [FILE ...] (random images the explicands are contrasted with)")
        channels = 3
    if args.augmentations is None:
        views = A.applicable_augmentations(channels)
    else:
        views = parse_names("--augmentations", args.augmentations, A.AUGMENTATIONS)
        colour = [v for v in views if v in A.COLOR_AUGMENTATIONS]
        if colour and channels != 3:
            raise UsageError(f"--augmentations: {', '.join(colour)} need 3-channel images; the digits encoder "
                             f"takes 1 channel")
    skipped = [v for v in A.AUGMENTATIONS if v in A.COLOR_AUGMENTATIONS and channels != 3]
    settings = {
        "model": "digits" if digits else args.model, "weights": args.weights or ("shipped" if digits else None),
        "augmentations": list(views), "skipped_augmentations": skipped,
        "methods": list(method_flags.selected(args)),
        "batch_size": positive("--batch-size", args.batch_size) if args.batch_size is not None else None,
        "seed": int(args.seed), "similarity": "cosine",
    }
    if settings["seed"] < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if digits:
        from cocoa_jax.data.digits import N_TEST_DEFAULT

        settings["explicands"] = positive("--explicands", args.explicands)
        if settings["explicands"] > N_TEST_DEFAULT:
            raise UsageError(f"--explicands must be at most {N_TEST_DEFAULT} (the test digits), got {args.explicands}")
        settings["foil_size"] = positive("--foil-size", args.foil_size) if args.foil_size is not None else None
    else:
        settings["images"] = _files("--images", args.images)
        settings["foil_images"] = _files("--foil", args.foil)
    settings["options"] = check_method_values(settings, args)
    settings["out"] = output_folder(args.out, OUTPUTS, args.overwrite)  # before any work
    return settings


def check_method_values(settings: dict, args) -> dict:
    """{method: options given}, every value checked by the method's own checks on the encoder's
    image shape (digits 32x32x1; a converted model's from its model.json), before any data is read."""
    from cocoa_jax.commands import method_flags
    from cocoa_jax.models import input_shape_of

    shape = input_shape_of(settings["model"], None if settings["model"] == "digits" else args.weights)
    if shape is None:
        shape = (224, 224, 3)  # unreadable model.json: loading the model reports it; check as ImageNet size
    settings["image_shape"] = list(shape)
    return method_flags.options(args, settings["methods"], shape, batch_size=settings["batch_size"],
                                estimators=method_flags.profile(args))


# ----------------------------------------------------------------------------- data


def digits_inputs(settings):
    """(model, encode_fn, originals (N, 32, 32, 1), foil images, record) for the default run."""
    from cocoa_jax import models
    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.targets import foil_size as required_foil_size

    model = models.load("digits", None if settings["weights"] == "shipped" else settings["weights"])
    data = load_digits_split(seed=0)  # the split the encoder was trained on
    rng = np.random.default_rng(settings["seed"])
    expl_idx = np.sort(rng.choice(len(data.x_test), settings["explicands"], replace=False))
    size = settings["foil_size"] or min(required_foil_size(0.01, 0.05, nonnegative=True), len(data.x_train))
    if size > len(data.x_train):
        raise UsageError(f"--foil-size must be at most {len(data.x_train)} (the training digits), got {size}")
    foil_idx = np.sort(rng.choice(len(data.x_train), size, replace=False))
    record = {"explicand_indices": expl_idx.tolist(), "explicand_labels": data.y_test[expl_idx].tolist(),
              "foil_indices": foil_idx.tolist(), "foil_size": int(size), "data_split_seed": 0,
              "titles": [f"test #{i} (digit {data.y_test[i]})" for i in expl_idx]}
    return model, model.encode_fn, data.x_test[expl_idx], data.x_train[foil_idx], record


def file_inputs(settings):
    """(model, encode_fn, originals (N, H, W, 3) in [0, 1], foil images, record) from image files,
    read as `explain` reads them (`cocoa_jax.data.files.read`, through the model's resize and crop)."""
    from cocoa_jax import models

    model = models.load(settings["model"], settings["weights"])

    def read(flag, paths):
        return read_images("augmentations", flag, paths, model)

    # Augment [0, 1] pixels: the model's encode_fn normalises inside (the explained function).
    encode_fn = model.encode_fn
    record = {"titles": [os.path.basename(p) for p in settings["images"]], "foil_size": len(settings["foil_images"])}
    return model, encode_fn, read("--images", settings["images"]), read("--foil", settings["foil_images"]), record


# ----------------------------------------------------------------------------- outputs


def draw_figure(path, result, titles, method_names, *, caption=""):
    """One block per original: its views (top row), then one overlay row per (target, method).

    Drawn by `cocoa_jax.viz.plot_attribution_blocks`: every row on one shared symmetric
    colour scale with a numbered colour bar beside it (red raises the target, blue lowers it);
    RISE maps are centred (their constant offset, the mean score, removed). `path`: a file
    name (written atomically) or a binary file object. Returns the Figure.
    """
    from cocoa_jax import methods, viz
    from cocoa_jax.usecases import augmentations as A

    images = np.clip(np.asarray(result.views.image), 0.0, 1.0)  # (N, A, H, W, C)
    rows = [(t, m) for t in range(len(A.TARGET_NAMES)) for m in method_names]
    blocks = []
    for i in range(images.shape[0]):
        blocks.append(viz.Block(
            images[i], [np.asarray(result.attributions[m][i, :, t]) for t, m in rows],
            method=[m for _, m in rows],
            titles=[f"{A.AUGMENTATION_TITLES[name]}\nCOCOA={result.scores[i, j, 0]:.2f}"
                    for j, name in enumerate(result.augmentations)],
            row_titles=[f"{TARGET_LABELS[A.TARGET_NAMES[t]]}\n{methods.get(m).title}" for t, m in rows],
            image_label=f"{titles[i]}\nviews"))
    fig = viz.plot_attribution_blocks(
        blocks, scale="row", caption=caption or None,
        suptitle="What the encoder keeps under augmentations: COCOA (corpus = the original, foil = random "
                 "images) vs label-free of the view")
    viz.save_figure(fig, path)
    return fig


AXES = {
    "originals": "(N, H, W, C) un-augmented images (the corpus of one of each view), [0, 1] pixels",
    "views": "(N, A, H, W, C) view a of original n, axis 1 in `augmentations` order",
    "source": "(N, A, H, W, 2) float (row, col) in the original sampled by each view pixel",
    "valid": "(N, A, H, W) bool, False where a view pixel holds no original content (erased)",
    "integrated_gradients": "(N, A, K, H, W, C) Integrated Gradients, axis 2 in `target_names` order",
    "gradient_shap": "(N, A, K, H, W, C) GradientSHAP",
    "rise": "(N, A, K, H, W) RISE (not centred: includes the mean score)",
    "scores": "(N, A, K) target values at the views",
    "content_share": "(M, N, A, K) share of positive attribution on valid pixels, M in `methods` order "
                     "(RISE centred first); informative for erase only (other views are all-valid)",
}


def run(args: argparse.Namespace) -> int:
    from cocoa_jax.meshes import use_every_core

    use_every_core()  # every core a device (before JAX starts): the views run one per device
    settings = validate(args)
    return _run(args, settings)  # input errors found while reading are UsageErrors too, before any output


def _run(args, settings) -> int:
    import jax

    from cocoa_jax import meshes, methods, phases
    from cocoa_jax.commands import method_flags
    from cocoa_jax.usecases import augmentations as A

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if settings["skipped_augmentations"]:
        say(f"skipped {', '.join(settings['skipped_augmentations'])}: colour operations do not apply to "
            f"1-channel images (the digits encoder takes grey-level digits)")
    t_start = time.perf_counter()
    timings = {}
    model, encode_fn, originals, foil_images, record = (digits_inputs if settings["model"] == "digits"
                                                        else file_inputs)(settings)
    batch_size = settings["batch_size"] or (500 if settings["model"] == "digits" else 16)
    # One view per device per call (the pipeline's CPU default; digits, 18 views: RISE 65.5 s
    # with 8 views vmapped per call, 23.9 s one per call, 19.0 s one per device on 2 devices).
    mesh = meshes.local_explicand_mesh(len(originals) * len(settings["augmentations"]))
    options = settings.pop("options")
    settings.update(batch_size=batch_size, devices=1 if mesh is None else int(mesh.devices.size), **record)
    foil_reps = A.encode_in_chunks(encode_fn, model.params, foil_images, chunk_size=64)
    timings["load"] = round(time.perf_counter() - t_start, 3)
    if not args.quiet:  # the cost before the work (stderr): passes, estimate, peak memory
        import sys

        from cocoa_jax import cost

        plan = cost.plan(encode_fn, model.params, np.shape(originals)[1:], options or
                         {m: {} for m in settings["methods"]}, n_explicands=len(originals) * len(settings["augmentations"]),
                         k=len(A.TARGET_NAMES), lanes=1 if mesh is None else int(mesh.devices.size),
                         batch_size=batch_size, cheaper_profile=None)
        print("\n".join(plan.lines), file=sys.stderr, flush=True)
    say(f"{len(originals)} original(s) x {len(settings['augmentations'])} view(s), methods "
        f"{', '.join(settings['methods'])}, foil of {len(foil_images)}")

    t0 = time.perf_counter()
    phases.reached("compute")
    result = A.explain_augmentations(
        encode_fn, model.params, originals, foil_reps, jax.random.key(settings["seed"]),
        augmentations=settings["augmentations"], methods=settings["methods"], options=options,
        batch_size=batch_size, mesh=mesh)
    timings["explain"] = round(time.perf_counter() - t0, 3)

    shares = A.view_content_shares(result, settings["methods"])  # (M, N, A, K)
    phases.reached("write")

    t0 = time.perf_counter()
    from cocoa_jax.files import Outputs

    out = settings["out"]
    # The three files are committed together at the end: Ctrl-C before that leaves none of them.
    outputs = Outputs()
    arrays = {"originals": originals, "views": result.views.image, "source": result.views.source,
              "valid": result.views.valid, "scores": result.scores, "content_share": shares,
              "augmentations": np.array(result.augmentations), "target_names": np.array(A.TARGET_NAMES),
              "methods": np.array(settings["methods"]), **result.attributions}
    outputs.add_npz(os.path.join(out, "attributions.npz"), arrays)
    resolved = {m: methods.resolved_options(m, options[m], settings["image_shape"]) for m in settings["methods"]}
    caption = (f"foil: {len(foil_images)} random images; "
               + "; ".join(method_flags.describe(m, resolved[m]) for m in settings["methods"]) + "; blurred baseline")
    if settings["skipped_augmentations"]:
        caption += f"; {', '.join(settings['skipped_augmentations'])} skipped (1 channel)"
    outputs.add_rendered(os.path.join(out, "figure.png"),
                         lambda p: draw_figure(p, result, settings["titles"], settings["methods"], caption=caption))
    timings["write"] = round(time.perf_counter() - t0, 3)
    timings["total"] = round(time.perf_counter() - t_start, 3)
    erase = list(result.augmentations).index("erase") if "erase" in result.augmentations else None
    settings.update({
        "target_names": list(A.TARGET_NAMES), "baseline": "gaussian_blur(kernel_size=21, sigma=5.0) of each view",
        "method_options": {m: {k: list(v) if isinstance(v, tuple) else v for k, v in resolved[m].items()
                               if k != "feature_mask"} for m in settings["methods"]}, "estimators": method_flags.profile(args), "array_axes": AXES,
        "augmentation_parameters": {"crop": {"scale": A.CROP_SCALE, "ratio": A.CROP_RATIO},
                                    "erase": {"scale": A.ERASE_SCALE, "ratio": A.ERASE_RATIO, "value": A.ERASE_VALUE},
                                    "color_jitter": dict(zip(("brightness", "contrast", "saturation", "hue"), A.JITTER)),
                                    "rot90": "counter-clockwise (np.rot90)"},
        "key_use": "views: split(fold_in(split(key(seed))[0], AUGMENTATIONS.index(name)), N)[n]; "
                   "methods: split(fold_in(split(key(seed))[1], cocoa_jax.methods.stream_id(method)), N*A)[n*A + a]",
        "erase_content_share": None if erase is None else {
            f"{methods.get(m).title} {TARGET_LABELS[t]}": float(np.nanmean(shares[mi, :, erase, ti]))
            for mi, m in enumerate(settings["methods"]) for ti, t in enumerate(A.TARGET_NAMES)},
        "timings_s": timings,
        **environment_record(),
    })

    outputs.add_json(os.path.join(out, "settings.json"), settings)
    outputs.commit()
    print(f"wrote {os.path.join(out, 'figure.png')}, attributions.npz and settings.json in {timings['total']:.1f} s")
    return 0
