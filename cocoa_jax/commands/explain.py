"""`cocoa-jax explain`: the main demo. Explain the embedded digits encoder with COCOA.

Loads the shipped SimCLR digits encoder (`cocoa_jax.models.load("digits")`) and the
scikit-learn digits, picks explicands (test images), a corpus (training images of one class)
and a random foil (other training images), builds the paper's targets by name
(`cocoa_jax.targets.build`; COCOA, corpus, label-free, contrastive label-free; cosine
similarity by default), stacks them into ONE target so all of them share every encoder pass,
and runs attribution methods by name (`cocoa_jax.methods`; IG, GradientSHAP and RISE by
default, with the library's defaults) with the blurred explicand as baseline (paper
Appendix H). Everything is jitted with the parameters and the targets as traced arguments
and vmapped over explicands (per-explicand targets included).

Every argument is checked before any work; a mistake is one line on stderr, exit status 2.
Writes to --out (default runs/explain) all three files together at the end, or none of them
(Ctrl-C or an error before that leaves --out as it was), refusing to replace an earlier run's
files unless --overwrite:
  figure.png        explicands, then one row of overlays per (target, method)
  attributions.npz  raw attributions, one array per method (axis orders in settings.json)
  settings.json     the settings used, the axis order of every array, timings and versions
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from cocoa_jax.cli import UsageError
from cocoa_jax.files import Outputs

# The demo's default selection; names, titles and option defaults come from the library tables.
DEFAULT_TARGETS = ("cocoa", "corpus", "label_free", "contrastive_label_free")
DEFAULT_METHODS = ("integrated_gradients", "gradient_shap", "rise")
N_CLASSES = 10
DEFAULT_OUT = os.path.join("runs", "explain")
OUTPUT_FILES = ("figure.png", "attributions.npz", "settings.json")
# Command-line flag -> method option it sets (for every selected method that has the option).
OPTION_FLAGS = {"n_steps": "--n-steps", "n_samples": "--n-samples", "stdev": "--stdev",
                "n_masks": "--n-masks", "grid_size": "--grid-size"}


def _target_names() -> tuple[str, ...]:
    from cocoa_jax import targets

    return tuple(targets.TARGETS)


def _method_names() -> tuple[str, ...]:
    from cocoa_jax import methods

    return tuple(methods.ATTRIBUTION_METHODS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cocoa_jax import methods

    d = {name: methods.defaults(name) for name in _method_names()}
    parser.add_argument("--corpus-class", type=int, default=3, help="digit class of the corpus (0-9; default 3)")
    parser.add_argument("--explicand-class", type=int, default=None,
                        help="class of the explicands (default: the corpus class, the paper's same-class setting)")
    parser.add_argument("--explicands", type=int, default=4, help="number of explicands (test images; default 4)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help=f"comma-separated targets, from {', '.join(_target_names())} (default: all)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated methods, from {', '.join(_method_names())} "
                             f"(default: {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--similarity", default="cosine", help="cosine (paper) or dot")
    parser.add_argument("--n-steps", type=int, default=None,
                        help=f"IG steps (default {d['integrated_gradients']['n_steps']})")
    parser.add_argument("--n-samples", type=int, default=None,
                        help=f"GradientSHAP / SmoothGrad samples (defaults {d['gradient_shap']['n_samples']} "
                             f"/ {d['smoothgrad']['n_samples']})")
    parser.add_argument("--stdev", type=float, default=None,
                        help=f"GradientSHAP / SmoothGrad noise std (defaults {d['gradient_shap']['stdev']} "
                             f"/ {d['smoothgrad']['stdev']})")
    parser.add_argument("--n-masks", type=int, default=None, help=f"RISE masks (default {d['rise']['n_masks']})")
    parser.add_argument("--grid-size", type=int, default=None,
                        help="RISE grid cells per side, at most the image size 32 (default: the paper's "
                             "grid for the image size, 4 at 32 px)")
    parser.add_argument("--corpus-size", type=int, default=100, help="corpus images (default 100)")
    parser.add_argument("--foil-size", type=int, default=None,
                        help="foil images (default: foil_size(0.01, 0.05, nonnegative=True) = 1060, "
                             "capped by the training images outside the corpus)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--weights", default=None,
                        help="digits encoder directory (default: the shipped one; or one written by "
                             "`cocoa-jax train-digits --out DIR`)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace figure.png / attributions.npz / settings.json of an earlier run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------------------------
# Argument checks (all run before any work)

def parse_names(option: str, value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against `allowed`; duplicates removed, order kept."""
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    if not names:
        raise UsageError(f"{option} is empty; choose from {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise UsageError(f"{option}: unknown name(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(names))


def _positive(option: str, value) -> int:
    if value is None or int(value) <= 0:
        raise UsageError(f"{option} must be a positive integer, got {value}")
    return int(value)


def _class(option: str, value) -> int:
    if not 0 <= int(value) < N_CLASSES:
        raise UsageError(f"{option} must be a digit class in 0..{N_CLASSES - 1}, got {value}")
    return int(value)


def method_options(args, method_names, image_size) -> dict[str, dict]:
    """{method: options it runs with} from the flags (library defaults for unset ones), checked."""
    from cocoa_jax import methods

    shape = tuple(image_size) if len(image_size) == 3 else (*image_size, 1)  # (H, W, C) or (H, W)
    image_size = shape[:2]
    given = {"n_steps": args.n_steps, "n_samples": args.n_samples, "stdev": args.stdev,
             "n_masks": args.n_masks, "grid_size": args.grid_size}
    for key in ("n_steps", "n_samples", "n_masks", "grid_size"):
        if given[key] is not None:
            _positive(OPTION_FLAGS[key], given[key])
    if given["stdev"] is not None and not (np.isfinite(given["stdev"]) and given["stdev"] >= 0):
        raise UsageError(f"--stdev must be a finite number >= 0, got {given['stdev']}")
    if given["grid_size"] is not None:
        if given["grid_size"] > min(image_size):
            raise UsageError(f"--grid-size must be at most the image size {min(image_size)}, got {given['grid_size']}")
        given["grid_size"] = (given["grid_size"], given["grid_size"])
    for key, value in given.items():
        if value is not None and not any(key in methods.defaults(m) for m in method_names):
            raise UsageError(f"{OPTION_FLAGS[key]} is an option of no selected method "
                             f"({', '.join(method_names)}); it would have no effect")
    out = {}
    for name in method_names:
        known = methods.defaults(name)
        options = {k: v for k, v in given.items() if v is not None and k in known}
        try:
            out[name] = methods.resolved_options(name, options)
        except (TypeError, ValueError) as err:
            raise UsageError(str(err)) from None
        if out[name].get("grid_size", 0) is None:  # the paper's grid for this image size
            from cocoa_jax.attribution import paper_grid_size

            out[name]["grid_size"] = tuple(paper_grid_size(image_size))
        # Every value, by the method's own checks on the real image shape (milliseconds).
        try:
            methods.check_values(name, out[name], shape, names=OPTION_FLAGS)
        except (TypeError, ValueError) as err:
            raise UsageError(f"{err} (method {name})") from None
    return out


def check_out_dir(out: str, overwrite: bool) -> str:
    """Absolute output folder; refuse a file, or an earlier run's outputs unless `overwrite`."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} exists and is not a directory")
    existing = [name for name in OUTPUT_FILES if os.path.exists(os.path.join(out, name))]
    if existing and not overwrite:
        raise UsageError(f"--out {out!r} already holds {', '.join(existing)} from an earlier run; "
                         f"choose another --out or pass --overwrite")
    return out


def select(labels_train: np.ndarray, labels_test: np.ndarray, *, corpus_class: int, explicand_class: int,
           n_explicands: int, corpus_size: int, foil_size: int | None, seed: int):
    """Seeded choice of explicand (test), corpus and foil (train) indices.

    The corpus is `corpus_size` training images of `corpus_class`; the foil is drawn uniformly
    from the remaining training images (any class), without replacement. Returns sorted int
    arrays (explicands, corpus, foil) and whether the foil size was capped.
    """
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(labels_test == explicand_class)
    if n_explicands > len(pool):
        raise UsageError(f"--explicands={n_explicands} exceeds the {len(pool)} test images of class {explicand_class}")
    explicands = np.sort(rng.choice(pool, n_explicands, replace=False))
    pool = np.flatnonzero(labels_train == corpus_class)
    if corpus_size > len(pool):
        raise UsageError(f"--corpus-size={corpus_size} exceeds the {len(pool)} training images of class {corpus_class}")
    corpus = np.sort(rng.choice(pool, corpus_size, replace=False))
    rest = np.setdiff1d(np.arange(len(labels_train)), corpus)
    capped = False
    if foil_size is None:
        from cocoa_jax.targets import foil_size as required_foil_size

        foil_size = required_foil_size(0.01, 0.05, nonnegative=True)  # eq. C.3: ReLU reps are >= 0
        if foil_size > len(rest):
            foil_size, capped = len(rest), True
    elif foil_size > len(rest):
        raise UsageError(f"--foil-size={foil_size} exceeds the {len(rest)} training images outside the corpus")
    foil = np.sort(rng.choice(rest, foil_size, replace=False))
    return explicands, corpus, foil, capped


# ---------------------------------------------------------------------------------------------
# Computation

def make_explainer(encode_fn, method: str, options: dict):
    """jit-compiled, explicand-vmapped `methods.attribute(method, ...)` for `encode_fn(variables, x)`.

    Returns fn(variables, xs (N, H, W, C), baselines (N, H, W, C), target with direction
    (N, K, D), keys (N,)) -> (N, K, H, W, C) (gradient methods) or (N, K, H, W) (RISE).
    Parameters and targets are traced arguments, so nothing big is baked in as a constant.
    """
    import jax

    from cocoa_jax import methods, targets

    @jax.jit
    def explain(variables, xs, baselines, target, keys):
        def one(x, b, t, k):
            f = targets.explain_fn(lambda xb: encode_fn(variables, xb), t)
            return methods.attribute(method, f, x, b, k, **options)

        return jax.vmap(one)(xs, baselines, target, keys)

    return explain


def encode_in_chunks(encode, params, x, chunk: int = 256) -> np.ndarray:
    """(M, H, W, C) -> (M, D) in fixed-size zero-padded chunks (one compilation for every M)."""
    import jax.numpy as jnp

    x = np.asarray(x, np.float32)
    padded = np.zeros((-(-len(x) // chunk) * chunk, *x.shape[1:]), np.float32)
    padded[:len(x)] = x
    out = [np.asarray(encode(params, jnp.asarray(padded[i:i + chunk]))) for i in range(0, len(padded), chunk)]
    return np.concatenate(out)[:len(x)]


def array_axes(method_names) -> dict[str, str]:
    """Axis order of every array in attributions.npz (N explicands, K targets)."""
    from cocoa_jax import methods

    axes = {name: "(N, K, H, W, C)" if methods.get(name).per_channel else "(N, K, H, W)"
            for name in method_names}
    axes.update({
        "explicands": "(N, H, W, C)", "baselines": "(N, H, W, C) the blurred explicands",
        "scores": "(N, K) target value at each explicand",
        "baseline_scores": "(N, K) target value at each baseline",
        "completeness_gaps": "{method}_completeness_gap (N, K): sum of attributions - (score - baseline_score)",
        "explicand_indices": "(N,) into the digits test split", "explicand_labels": "(N,)",
        "corpus_indices": "(corpus_size,) into the digits training split",
        "foil_indices": "(foil_size,) into the digits training split",
        "target_names": "(K,) the K axis", "method_names": "the methods run",
    })
    return axes


def run(args: argparse.Namespace) -> int:
    # Validate everything before any heavy import or computation.
    corpus_class = _class("--corpus-class", args.corpus_class)
    explicand_class = corpus_class if args.explicand_class is None else _class("--explicand-class", args.explicand_class)
    n_explicands = _positive("--explicands", args.explicands)
    target_names = parse_names("--targets", args.targets, _target_names())
    method_names = parse_names("--methods", args.methods, _method_names())
    from cocoa_jax.targets import SIMILARITIES

    if args.similarity not in SIMILARITIES:
        raise UsageError(f"--similarity must be one of {', '.join(SIMILARITIES)}, got {args.similarity!r}")
    corpus_size = _positive("--corpus-size", args.corpus_size)
    foil_arg = None if args.foil_size is None else _positive("--foil-size", args.foil_size)
    if int(args.seed) < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    from cocoa_jax.models import registry

    image_shape = registry.ARCHITECTURES[registry.DIGITS].input_shape(registry.DIGITS_CONFIG)
    options = method_options(args, method_names, image_shape)
    if args.weights is not None and not os.path.isdir(args.weights):
        raise UsageError(f"--weights {args.weights!r} is not a directory")
    out = check_out_dir(args.out, args.overwrite)
    from cocoa_jax.data.digits import load_digits_split

    data = load_digits_split(seed=0)  # the split the encoder was trained on (train images only)
    expl_idx, corpus_idx, foil_idx, capped = select(
        data.y_train, data.y_test, corpus_class=corpus_class, explicand_class=explicand_class,
        n_explicands=n_explicands, corpus_size=corpus_size, foil_size=foil_arg, seed=args.seed)

    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import cocoa_jax
    from cocoa_jax import baselines as B
    from cocoa_jax import methods
    from cocoa_jax import targets as T
    from cocoa_jax.models import load
    from cocoa_jax import viz

    t_start = time.perf_counter()
    steps = ["load", "targets", *method_names, "write"]
    bar = tqdm(total=len(steps), desc="cocoa-jax explain", unit="step", disable=args.quiet)
    timings = {}

    def advance(name, t0):
        timings[name] = round(time.perf_counter() - t0, 3)
        bar.set_postfix_str(f"{name} {timings[name]:.1f}s")
        bar.update(1)

    t0 = time.perf_counter()
    try:
        model = load("digits", args.weights)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--weights: {err}") from None
    xs = jnp.asarray(data.x_test[expl_idx])
    blurred = B.gaussian_blur(xs, 21, 5.0)  # the paper's baseline: the explicand, blurred
    advance("load", t0)

    t0 = time.perf_counter()
    encode, params = jax.jit(model.encode_fn), model.params
    corpus_reps = encode_in_chunks(encode, params, data.x_train[corpus_idx])
    foil_reps = encode_in_chunks(encode, params, data.x_train[foil_idx])
    expl_reps = encode_in_chunks(encode, params, xs)
    base_reps = encode_in_chunks(encode, params, blurred)
    target = T.build_stacked(target_names, explicand_reps=expl_reps, corpus_reps=corpus_reps,
                             foil_reps=foil_reps, similarity=args.similarity)
    # Shared targets have direction (K, D), per-explicand ones (N, K, D): give every target an
    # explicand axis so one vmap handles both.
    k = len(target_names)
    target = T.Target(jnp.broadcast_to(target.direction, (n_explicands, k, model.representation_dim)),
                      target.normalize)
    score = jax.vmap(lambda r, t: t(r))
    scores = np.asarray(score(jnp.asarray(expl_reps), target))           # (N, K)
    baseline_scores = np.asarray(score(jnp.asarray(base_reps), target))  # (N, K)
    advance("targets", t0)

    key = jax.random.key(args.seed)
    results, extras = {}, {}
    for name in method_names:
        t0 = time.perf_counter()
        keys = jax.random.split(jax.random.fold_in(key, methods.stream_id(name)), n_explicands)
        explain = make_explainer(model.encode_fn, name, options[name])
        attr = np.asarray(jax.block_until_ready(explain(params, xs, blurred, target, keys)))
        results[name] = attr
        if name == "integrated_gradients":  # completeness: attributions sum to f(x) - f(baseline)
            sums = attr.reshape(*attr.shape[:2], -1).sum(-1)
            extras[f"{name}_completeness_gap"] = sums - (scores - baseline_scores)
        advance(name, t0)

    t0 = time.perf_counter()
    # All three files are committed together at the end: Ctrl-C before that leaves none of them.
    outputs = Outputs()
    arrays = dict(**results, **extras, explicands=np.asarray(xs), baselines=np.asarray(blurred),
                  scores=scores, baseline_scores=baseline_scores,
                  explicand_indices=expl_idx, explicand_labels=data.y_test[expl_idx],
                  corpus_indices=corpus_idx, foil_indices=foil_idx,
                  target_names=np.array(target_names), method_names=np.array(method_names))
    outputs.add_npz(os.path.join(out, "attributions.npz"), arrays)
    # Rows: target x method, each row on one shared colour scale (numbers on its colour bar);
    # RISE rows minus their mean (methods' `centred` flag, applied by viz).
    row_keys = [(t, m) for t in target_names for m in method_names]
    row_titles = [f"{T.TARGET_TITLES[t]}\n{methods.get(m).title}".replace("Contrastive ", "Contrastive\n")
                  for t, m in row_keys]
    row_maps = [results[m][:, target_names.index(t)] for t, m in row_keys]
    titles = [f"test #{i} (digit {data.y_test[i]})" for i in expl_idx]
    weights = "shipped weights" if args.weights is None else f"weights {args.weights}"
    suptitle = (f"Explaining the digits SimCLR encoder ({weights})\n"
                f"corpus: {corpus_size} training images of digit {corpus_class}; foil: {len(foil_idx)} random "
                f"training images outside the corpus; baseline: blurred explicand")
    outputs.add_rendered(os.path.join(out, "figure.png"), lambda f: viz.plot_attributions(
        np.asarray(xs), row_maps, method=[m for _, m in row_keys], titles=titles, row_titles=row_titles,
        scale="row", suptitle=suptitle, image_label="explicand", path=f))
    advance("write", t0)
    bar.close()
    timings["total"] = round(time.perf_counter() - t_start, 3)

    gaps = [np.max(np.abs(v)) for v in extras.values()]
    settings = {
        "corpus_class": corpus_class, "explicand_class": explicand_class, "explicands": n_explicands,
        "targets": list(target_names), "methods": list(method_names), "similarity": args.similarity,
        "method_options": {m: {k2: list(v) if isinstance(v, tuple) else v for k2, v in o.items()}
                           for m, o in options.items()},
        "corpus_size": corpus_size, "foil_size": int(len(foil_idx)), "foil_size_capped": capped,
        "baseline": "gaussian_blur(kernel_size=21, sigma=5.0)", "seed": args.seed, "data_split_seed": 0,
        "weights": args.weights or "shipped",
        "arrays": {"file": "attributions.npz", "axes": array_axes(method_names),
                   "note": "indices of explicands, corpus and foil are stored in the npz, not here"},
        "figure": "red = supports the target (positive attribution), blue = opposes it; rows are "
                  "target x method, each row on one shared symmetric colour scale (+-max |value| of the "
                  "row, numbers on its colour bar); gradient maps are averaged over channels; RISE maps "
                  "are shown minus their mean (RISE carries the mean score as a constant offset)",
        "max_abs_ig_completeness_gap": float(max(gaps)) if gaps else None,
        "timings_s": timings,
        "versions": {"cocoa_jax": getattr(cocoa_jax, "__version__", "?"), "jax": jax.__version__,
                     "numpy": np.__version__, "python": platform.python_version(),
                     "backend": jax.default_backend()},
    }

    outputs.add_json(os.path.join(out, "settings.json"), settings)
    outputs.commit()
    print(f"wrote {os.path.join(out, 'figure.png')}, attributions.npz and settings.json "
          f"in {timings['total']:.1f} s")
    return 0
