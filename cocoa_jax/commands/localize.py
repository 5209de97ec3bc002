"""`cocoa-jax localize`: where in an image is a text query? (paper Section 4.3)

Default (no arguments, offline): the shipped digits dual encoder (`cocoa_jax.models.digits_clip`)
on 2x2 grids of four held-out digits of different classes (64x64). Each grid's query names one
of its digits ("This is a photo of a seven"); COCOA's foil is the captions of the other nine
digits. The image tower is explained with IG, GradientSHAP and RISE for three stacked targets:
COCOA (query vs foil captions), corpus only (the query caption) and label-free (the image's own
embedding). `--query 7` (or `seven`) fixes the query digit; `--foil` then lists foil digits.

CLIP: `--model clip_vit_b32 --weights DIR --image PATH --query dog [--foil cat ...]` loads a
converted CLIP ViT-B/32 (`cocoa-jax convert clip_vit_b32 ...`); the foil defaults to the
CIFAR-100 class names other than the query, as in the official COCOA code. Any architecture whose
captions live in its image space (`ArchSpec.joint_text`: clip_vit, siglip, siglip2_naflex) is taken the same way.

Writes to --out (default runs/localize; existing outputs are refused unless --overwrite) all
three files together at the end, or none of them (Ctrl-C or an error before that):
  figure.png        images (query tile boxed), then one row per (target, method); colour legend
  attributions.npz  raw attributions per method (N, K, H, W[, C]), images, queries, target scores,
                    and for grids the tile labels and pointing-game hits (N, K, 2) [max, mass]
  settings.json     every setting, captions, pointing-game scores, timings and versions
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cocoa_jax.commands.checks import image_encoder, positive
from cocoa_jax.records import environment_record

COMMAND = "localize"
SHIPPED = "digits_clip"  # the shipped digits dual encoder (generated 2x2 digit grids; not a table architecture)


def models_offered() -> tuple:
    """digits_clip, then every architecture whose text tower maps into its image space
    (`ArchSpec.joint_text`: CLIP, SigLIP): the table's capability, never a list of names here."""
    from cocoa_jax.models import ARCHITECTURES

    return (SHIPPED,) + tuple(name for name, spec in ARCHITECTURES.items() if spec.joint_text)
DEFAULT_METHODS = ("integrated_gradients", "gradient_shap", "rise")
DEFAULT_OUT = os.path.join("runs", "localize")
OUTPUTS = ("figure.png", "attributions.npz", "settings.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=SHIPPED, help=f"one of {', '.join(models_offered())} (default "
                                                         f"{SHIPPED}, shipped)")
    parser.add_argument("--weights", default=None,
                        help="checkpoint dir: the converted model's out_dir (required but for digits_clip), or a "
                             "digits dual-encoder checkpoint (default: the shipped one)")
    parser.add_argument("--image", default=None, help="image file to explain (converted image-text models only)")
    parser.add_argument("--images", nargs="+", action="extend", default=None, metavar="PATH",
                        help="the same as --image, written as elsewhere (files, folders or globs; localize "
                             "explains one image per run). The number of digit grids is --explicands")
    parser.add_argument("--query", default=None,
                        help="the queried name: a CLIP caption word such as 'dog', or for digits a digit "
                             "(7 or seven; default: a random digit of each grid)")
    parser.add_argument("--foil", nargs="+", action="extend", default=None,
                        help="foil names (default: CIFAR-100 classes other than the query for CLIP, the "
                             "other nine digits for digits)")
    parser.add_argument("--explicands", type=int, default=4, metavar="N",
                        help="digits: number of 2x2 digit grids to explain (default 4)")
    from cocoa_jax.commands import method_flags

    # Method flags and defaults from the method table (the paper used RISE with 20000 masks for
    # CLIP: --n-masks 20000; on 64 px digit grids --grid-size 8 gives the paper's 8 px cells).
    method_flags.add_arguments(parser, default_methods=DEFAULT_METHODS)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="perturbed inputs per encoder call (default: all at once; set for CLIP on small memory)")
    parser.add_argument("--seed", type=int, default=0, help="seed of grids, queries and random methods (default 0)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --out")
    from cocoa_jax.commands import quiet

    quiet.add_argument(parser)


# ---------------------------------------------------------------------------------------------
# Argument checks (all before any heavy work)

def digit_index(option: str, name: str) -> int:
    """'7' or 'seven' (any case) -> 7."""
    from cocoa_jax.models.digits_clip import DIGIT_WORDS

    text = str(name).strip().lower()
    if text.isdigit() and len(text) == 1:
        return int(text)
    if text in DIGIT_WORDS:
        return DIGIT_WORDS.index(text)
    raise ValueError(f"{option}: {name!r} is not a digit; use 0-9 or zero..nine")


def _one_image(args) -> str:
    """The one image file `--images PATH...` names (ValueError otherwise): localize explains one."""
    if args.image is not None:
        raise ValueError("give the image once: --image PATH or --images PATH, not both")
    if args.model == SHIPPED:
        count = " ".join(args.images)
        hint = f"; the number of digit grids is --explicands {count}" if count.isdigit() else ""
        raise ValueError(f"--images names an image file, for a converted image-text --model only "
                         f"({', '.join(models_offered()[1:])}){hint}")
    from cocoa_jax.data import files

    try:
        found = files.expand(args.images)
    except ValueError as err:
        if " ".join(args.images).isdigit():
            raise ValueError(f"--images takes image files; the number of digit grids is --explicands "
                             f"{' '.join(args.images)}") from None
        raise ValueError(f"--images: {err}") from None
    if len(found) != 1:
        raise ValueError(f"--images names {len(found)} images; localize explains one per run")
    return found[0]


def check_args(args) -> dict:
    """Validate every argument; returns the resolved settings. Raises ValueError (one line)."""
    offered = models_offered()
    image_encoder("--model", args.model, choices=offered)
    if args.model not in offered:
        import difflib

        close = difflib.get_close_matches(str(args.model).lower(), offered, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"--model must be one of {', '.join(offered)}, got {args.model!r}{hint}")
    from cocoa_jax.commands import method_flags

    s = {"model": args.model, "methods": method_flags.selected(args),
         "batch_size": None if args.batch_size is None else positive("--batch-size", args.batch_size)}
    if int(args.seed) < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.weights is not None and not os.path.isdir(args.weights):
        raise ValueError(f"--weights {args.weights!r} is not a directory")
    if args.images is not None:
        args.image = _one_image(args)
    if args.model != SHIPPED:  # a converted image-text model on the user's image
        if args.weights is None:
            raise ValueError(f"--weights DIR is required with --model {args.model} (the out_dir of "
                             f"`cocoa-jax convert {args.model} CHECKPOINT DIR`)")
        if args.image is None or not os.path.isfile(args.image):
            raise ValueError(f"--image must name an image file with --model {args.model}, got {args.image!r}")
        if args.query is None or not str(args.query).strip():
            raise ValueError(f"--query NAME is required with --model {args.model} (e.g. --query dog)")
        s["query"] = str(args.query).strip()
        foil = [f.strip() for f in args.foil] if args.foil else None
        if foil is not None and (not all(foil) or s["query"] in foil):
            raise ValueError("--foil names must be non-empty and must not include the query")
        s["foil"] = foil
        s["image"] = os.path.abspath(args.image)
    else:
        if args.image is not None:
            raise ValueError(f"--image is only for a converted image-text --model ({', '.join(models_offered()[1:])}; "
                             f"digits grids are generated)")
        s["images"] = positive("--explicands", args.explicands)
        s["query"] = None if args.query is None else digit_index("--query", args.query)
        if args.foil is not None:
            if s["query"] is None:
                raise ValueError("--foil with digits needs a fixed --query digit")
            foil = sorted({digit_index("--foil", f) for f in args.foil})
            if s["query"] in foil:
                raise ValueError(f"--foil must not include the query digit {s['query']}")
            s["foil"] = foil
        else:
            s["foil"] = None
    s["options"] = check_method_values(s, args)
    from cocoa_jax.commands.checks import output_folder

    s["out"] = output_folder(args.out, OUTPUTS, args.overwrite)
    return s


def check_method_values(s: dict, args) -> dict:
    """{method: options given}, every value checked by the method's own checks on the shape of the
    images that will be explained (224 px CLIP or 64 px 2x2 digit grids)."""
    from cocoa_jax.commands import method_flags
    from cocoa_jax.models.digits_clip import INPUT_SHAPE
    from cocoa_jax.models import input_shape_of
    from cocoa_jax.usecases.localize import GRID

    if s["model"] != SHIPPED:
        shape = input_shape_of(s["model"], args.weights) or (224, 224, 3)
    else:  # 2x2 grids of digit tiles
        shape = (GRID[0] * INPUT_SHAPE[0], GRID[1] * INPUT_SHAPE[1], INPUT_SHAPE[2])
    s["image_shape"] = list(shape)
    return method_flags.options(args, s["methods"], shape, batch_size=s["batch_size"],
                                estimators=method_flags.profile(args))


# ---------------------------------------------------------------------------------------------
# Figure

def plot(path, images: np.ndarray, rows, *, column_titles, boxes=None, title: str, dpi: int = 100):
    """Images, then one row per (label, maps (N, H, W[, C]), centre); a box on each queried tile.

    boxes: per image (row0, col0, height, width) in pixels, or None. Drawn by
    `cocoa_jax.viz.plot_attributions`: each row on one shared symmetric colour scale with a
    numbered colour bar (red raises the target score, blue lowers it); centre=True rows minus
    each map's mean. `path`: a file name (written atomically) or a binary file object.
    """
    from matplotlib.patches import Rectangle

    from cocoa_jax import viz

    rows = list(rows)
    fig = viz.plot_attributions(
        images, [np.asarray(maps) for _, maps, _ in rows], centre=[bool(c) for _, _, c in rows],
        row_titles=[label for label, _, _ in rows], titles=column_titles, suptitle=title, scale="row",
        caption="Green box: the queried tile." if boxes is not None else None)
    if boxes is not None:
        for ax in fig.axes:
            kind, *index = ax.get_label().split(" ")
            if kind in ("image", "map") and boxes[int(index[-1])] is not None:
                r, c, h, w = boxes[int(index[-1])]
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, edgecolor="lime", linewidth=1.5))
    return viz.save_figure(fig, path, dpi=dpi)


# ---------------------------------------------------------------------------------------------
# Runs

def _digits(s: dict, args, log, mesh):
    import jax
    import jax.numpy as jnp

    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.models import digits_clip
    from cocoa_jax.training.clip_digits import class_text_embeddings
    from cocoa_jax.usecases import localize as L

    model = digits_clip.load_digits_clip(args.weights)
    data = load_digits_split(seed=0)  # held-out digits: the split the encoder never trained on
    key = jax.random.key(int(args.seed))
    grid_key, method_key = jax.random.split(key)
    grids = L.sample_grids(grid_key, data.x_test, data.y_test, s["images"], query_class=s["query"])
    class_reps = class_text_embeddings(model)  # (10, D) "This is a photo of a {digit}"
    options = s["options"]
    if not args.quiet:  # the cost before the work (stderr): passes, estimate, peak memory
        import sys

        from cocoa_jax import cost

        plan = cost.plan(model.encode_fn, model.params, grids.images.shape[1:], options, n_explicands=s["images"],
                         k=len(L.TARGET_NAMES), lanes=1 if mesh is None else int(mesh.devices.size),
                         batch_size=s["batch_size"], cheaper_profile=None)
        print("\n".join(plan.lines), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    target = None  # the default: each grid's query against the other nine digits' captions
    foil_captions = "the other nine digits"
    if s["foil"] is not None:  # the query against the captions of the digits named
        corpus, foil = class_reps[s["query"]][None], class_reps[np.asarray(s["foil"])]
        target = jax.vmap(lambda r: L.localization_target(r, corpus, foil))(model.encode(grids.images))
        foil_captions = ", ".join(digits_clip.DIGIT_WORDS[d] for d in s["foil"])
    attributions, hits, target = L.localize_grids(model.encode_fn, model.params, class_reps, grids, method_key,
                                                  options, batch_size=s["batch_size"], mesh=mesh, target=target)
    jax.block_until_ready(attributions)
    seconds = time.perf_counter() - t0
    images = np.asarray(grids.images)
    scores = np.asarray(jax.vmap(lambda r, t: t(r))(model.encode(jnp.asarray(images)), target))
    tile = images.shape[1] // L.GRID[0]
    q = np.asarray(grids.query_tiles)
    boxes = [((t // L.GRID[1]) * tile, (t % L.GRID[1]) * tile, tile, tile) for t in q]
    words = [digits_clip.DIGIT_WORDS[int(d)] for d in np.asarray(grids.query_labels)]
    titles = [f"query: {w}" for w in words]
    info = {"captions": [L.query_caption(w) for w in words], "foil": foil_captions,
            "tile_labels": np.asarray(grids.tile_labels).tolist(), "query_tiles": q.tolist(),
            "query_labels": np.asarray(grids.query_labels).tolist(),
            "test_indices": np.asarray(grids.tile_indices).tolist()}
    extra = {"tile_labels": np.asarray(grids.tile_labels), "query_tiles": q,
             "query_labels": np.asarray(grids.query_labels), "test_indices": np.asarray(grids.tile_indices)}
    hits = {m: np.asarray(h) for m, h in hits.items()}
    title = (f"Where is the query? Image encoder of the digits CLIP dual encoder, {len(images)} grids of "
             f"held-out digits\nCOCOA: query caption vs captions of {foil_captions} (foil); corpus only: "
             f"query caption; label-free: the image's own embedding")
    return model, images, attributions, scores, hits, boxes, titles, title, info, extra, seconds


def _clip(s: dict, args, log, mesh):
    import jax
    import jax.numpy as jnp
    from PIL import Image

    from cocoa_jax import models
    from cocoa_jax.data.class_names import CIFAR100, caption_name
    from cocoa_jax.usecases import localize as L

    model = models.load(s["model"], args.weights)
    with Image.open(s["image"]) as im:
        pixels = model.preprocess.resize_crop(im)          # (224, 224, 3) in [0, 1], any PIL mode
    # Section 4.3 attributes CLIP's normalised input (the official script explains CLIP's preprocessed
    # tensors): the raw network, network_fn, so GradientSHAP's noise keeps that scale.
    x = jnp.asarray(model.preprocess.normalize(pixels))[None]
    foil_names = s["foil"] or [caption_name(c) for c in CIFAR100 if caption_name(c) != s["query"]]
    corpus = model.encode_text([L.query_caption(s["query"])])
    foil = model.encode_text([L.query_caption(f) for f in foil_names])
    image_rep = jax.jit(model.network_fn)(model.params, x)
    target = jax.vmap(lambda r: L.localization_target(r, corpus, foil))(image_rep)
    options = s["options"]
    key = jax.random.key(int(args.seed))
    t0 = time.perf_counter()
    attributions = {}
    for m in s["methods"]:
        explain = L.make_explainer(model.network_fn, m, options[m], batch_size=s["batch_size"], mesh=mesh)
        attributions[m] = explain(model.params, x, target, L.method_keys(key, m, 1))
    jax.block_until_ready(attributions)
    seconds = time.perf_counter() - t0
    scores = np.asarray(jax.vmap(lambda r, t: t(r))(image_rep, target))
    foil_text = (f"{len(foil_names)} CIFAR-100 class captions" if s["foil"] is None
                 else ", ".join(foil_names))
    title = (f"'{L.query_caption(s['query'])}' in {os.path.basename(s['image'])}: COCOA (foil: {foil_text}), "
             f"corpus only, label-free ({s['model']} image encoder)")
    info = {"captions": [L.query_caption(s["query"])], "foil": foil_names}
    return (model, pixels[None], attributions, scores, {}, None, [f"query: {s['query']}"], title, info, {}, seconds)


def run(args: argparse.Namespace) -> int:
    from cocoa_jax.commands import method_flags
    from cocoa_jax.commands.errors import flag_errors
    from cocoa_jax.meshes import use_every_core

    use_every_core()  # every core a device (before JAX starts): the grids run one per device
    with flag_errors(None):
        s = check_args(args)
    log = (lambda *a: None) if args.quiet else print
    t_start = time.perf_counter()

    import jax

    from cocoa_jax import meshes
    from cocoa_jax.usecases import localize as L

    from cocoa_jax import phases

    clip = s["model"] != SHIPPED  # a converted image-text model (CLIP, SigLIP) on the user's image
    phases.reached("compute")
    mesh = meshes.local_explicand_mesh(1 if clip else s["images"])  # one grid per device
    (model, images, attributions, scores, hits, boxes, titles, title, info, extra,
     attribution_seconds) = (_clip if clip else _digits)(s, args, log, mesh)
    attributions = {m: np.asarray(a) for m, a in attributions.items()}
    phases.reached("write")

    from cocoa_jax.files import Outputs

    out = s["out"]
    # The three files are committed together at the end: Ctrl-C before that leaves none of them.
    outputs = Outputs()
    from cocoa_jax import methods

    rows = [(f"{L.TARGET_TITLES[t]}\n{methods.get(m).title}", attributions[m][:, k], methods.get(m).centred)
            for k, t in enumerate(L.TARGET_NAMES) for m in s["methods"]]
    outputs.add_rendered(os.path.join(out, "figure.png"),
                         lambda f: plot(f, images, rows, column_titles=titles, boxes=boxes, title=title))
    outputs.add_npz(os.path.join(out, "attributions.npz"), dict(
        **attributions, images=images, scores=scores, target_names=np.array(L.TARGET_NAMES),
        method_names=np.array(s["methods"]), **{f"hits_{m}": h for m, h in hits.items()}, **extra))

    pointing = {m: {t: {"max": float(h[:, k, 0].mean()), "mass": float(h[:, k, 1].mean())}
                    for k, t in enumerate(L.TARGET_NAMES)} for m, h in hits.items()}
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items() if k != "options"}
    settings.update({
        "method_options": {m: {k: list(v) if isinstance(v, tuple) else v
                               for k, v in methods.resolved_options(m, s["options"][m], s["image_shape"]).items()
                               if k != "feature_mask"} for m in s["methods"]},
        "estimators": method_flags.profile(args), "targets": list(L.TARGET_NAMES), "similarity": "cosine",
        "baseline": "gaussian_blur(kernel_size=21, sigma=5.0)", "weights": args.weights or "shipped",
        "seed": int(args.seed), "devices": 1 if mesh is None else int(mesh.devices.size), **info,
        "scores": {t: scores[:, k].tolist() for k, t in enumerate(L.TARGET_NAMES)},
        "pointing_game": pointing or None,
        "pointing_game_chance": 1.0 / (L.GRID[0] * L.GRID[1]) if hits else None,
        "timings_s": {"attributions": round(attribution_seconds, 3), "total": round(time.perf_counter() - t_start, 3)},
        **environment_record(),
    })
    outputs.add_json(os.path.join(out, "settings.json"), settings)
    outputs.commit()
    print(f"wrote {os.path.join(out, 'figure.png')}, attributions.npz and settings.json in "
        f"{settings['timings_s']['total']:.1f} s")
    for m, per_target in pointing.items():
        print(f"  pointing game ({methods.get(m).title}, {len(images)} grids, chance 0.25): " +
            ", ".join(f"{L.TARGET_TITLES[t]} max {v['max']:.2f} mass {v['mass']:.2f}" for t, v in per_target.items()))
    return 0
