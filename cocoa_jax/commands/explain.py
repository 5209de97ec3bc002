"""`cocoa-jax explain`: the main demo. Explain the embedded digits encoder with COCOA.

Loads the shipped SimCLR digits encoder and the scikit-learn digits, picks explicands
(test images), a corpus (training images of one class) and a random foil (other training
images), builds the four targets of the paper (COCOA, corpus, label-free, contrastive
label-free; cosine similarity by default), stacks them into ONE target so all of them share
every encoder pass, and runs Integrated Gradients, GradientSHAP and RISE with the blurred
explicand as baseline (paper Appendix H). Everything is jitted with the parameters and the
targets as traced arguments and vmapped over explicands (per-explicand targets included).

Writes to --out (default runs/explain):
  figure.png        explicands, then one row of overlays per (target, method)
  attributions.npz  raw attributions: ig / gradient_shap (N, K, 32, 32, 1), rise (N, K, 32, 32),
                    plus explicands, baselines, indices, labels, target scores, IG completeness gaps
  settings.json     every setting, the chosen indices, timings and library versions
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

TARGETS = ("cocoa", "corpus", "label_free", "contrastive_label_free")
METHODS = ("ig", "gradient_shap", "rise")
TARGET_LABELS = {"cocoa": "COCOA", "corpus": "corpus", "label_free": "label-free",
                 "contrastive_label_free": "contrastive\nlabel-free"}
METHOD_LABELS = {"ig": "IG", "gradient_shap": "GradientSHAP", "rise": "RISE"}
N_CLASSES = 10
DEFAULT_OUT = os.path.join("runs", "explain")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus-class", type=int, default=3, help="digit class of the corpus (0-9; default 3)")
    parser.add_argument("--explicand-class", type=int, default=None,
                        help="class of the explicands (default: the corpus class, the paper's same-class setting)")
    parser.add_argument("--explicands", type=int, default=4, help="number of explicands (test images; default 4)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated targets, from {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated methods, from {', '.join(METHODS)} (default: all)")
    parser.add_argument("--similarity", default="cosine", help="cosine (paper) or dot")
    parser.add_argument("--n-masks", type=int, default=5000, help="RISE masks (default 5000, as the paper)")
    parser.add_argument("--grid-size", type=int, default=4, help="RISE grid cells per side (default 4, paper at 32 px)")
    parser.add_argument("--n-steps", type=int, default=50, help="IG steps (default 50)")
    parser.add_argument("--n-samples", type=int, default=50, help="GradientSHAP samples (default 50)")
    parser.add_argument("--stdev", type=float, default=0.2, help="GradientSHAP noise std (default 0.2)")
    parser.add_argument("--corpus-size", type=int, default=100, help="corpus images (default 100)")
    parser.add_argument("--foil-size", type=int, default=None,
                        help="foil images (default: foil_size(0.01, 0.05, nonnegative=True) = 1060, "
                             "capped by the training images outside the corpus)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--weights", default=None, help="encoder checkpoint dir (default: the shipped one)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_names(option: str, value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against `allowed`; duplicates removed, order kept."""
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    if not names:
        raise ValueError(f"{option} is empty; choose from {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{option}: unknown name(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(names))


def _positive(option: str, value) -> int:
    if value is None or int(value) <= 0:
        raise ValueError(f"{option} must be a positive integer, got {value}")
    return int(value)


def _class(option: str, value) -> int:
    if not 0 <= int(value) < N_CLASSES:
        raise ValueError(f"{option} must be a digit class in 0..{N_CLASSES - 1}, got {value}")
    return int(value)


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
        raise ValueError(f"--explicands={n_explicands} exceeds the {len(pool)} test images of class {explicand_class}")
    explicands = np.sort(rng.choice(pool, n_explicands, replace=False))
    pool = np.flatnonzero(labels_train == corpus_class)
    if corpus_size > len(pool):
        raise ValueError(f"--corpus-size={corpus_size} exceeds the {len(pool)} training images of class {corpus_class}")
    corpus = np.sort(rng.choice(pool, corpus_size, replace=False))
    rest = np.setdiff1d(np.arange(len(labels_train)), corpus)
    capped = False
    if foil_size is None:
        from cocoa_jax.targets import foil_size as required_foil_size

        foil_size = required_foil_size(0.01, 0.05, nonnegative=True)  # eq. C.3: ReLU reps are >= 0
        if foil_size > len(rest):
            foil_size, capped = len(rest), True
    elif foil_size > len(rest):
        raise ValueError(f"--foil-size={foil_size} exceeds the {len(rest)} training images outside the corpus")
    foil = np.sort(rng.choice(rest, foil_size, replace=False))
    return explicands, corpus, foil, capped


def make_explainers(encode_fn):
    """jit-compiled, explicand-vmapped attribution functions for a pure `encode_fn(variables, x)`.

    Each takes (variables, xs (N, H, W, C), baselines (N, H, W, C), target with direction
    (N, K, D), [keys (N,)]) and returns (N, K, H, W, C) (gradient methods) or (N, K, H, W) (RISE).
    Parameters and targets are traced arguments, so nothing big is baked in as a constant.
    """
    import functools

    import jax

    from cocoa_jax import attribution, targets

    def f_for(variables, target):
        return targets.explain_fn(lambda xb: encode_fn(variables, xb), target)

    @functools.partial(jax.jit, static_argnames=("n_steps",))
    def ig(variables, xs, baselines, target, *, n_steps):
        one = lambda x, b, t: attribution.integrated_gradients(f_for(variables, t), x, b, n_steps=n_steps,
                                                               return_delta=True)
        return jax.vmap(one)(xs, baselines, target)

    @functools.partial(jax.jit, static_argnames=("n_samples", "stdev"))
    def gradient_shap(variables, xs, baselines, target, keys, *, n_samples, stdev):
        one = lambda x, b, t, k: attribution.gradient_shap(f_for(variables, t), x, b[None], k,
                                                           n_samples=n_samples, stdev=stdev)
        return jax.vmap(one)(xs, baselines, target, keys)

    @functools.partial(jax.jit, static_argnames=("n_masks", "grid_size"))
    def rise(variables, xs, baselines, target, keys, *, n_masks, grid_size):
        one = lambda x, b, t, k: attribution.rise(f_for(variables, t), x, b, k, n_masks=n_masks,
                                                  grid_size=grid_size)
        return jax.vmap(one)(xs, baselines, target, keys)

    return {"ig": ig, "gradient_shap": gradient_shap, "rise": rise}


def run(args: argparse.Namespace) -> int:
    # Validate everything before any heavy import or computation.
    corpus_class = _class("--corpus-class", args.corpus_class)
    explicand_class = corpus_class if args.explicand_class is None else _class("--explicand-class", args.explicand_class)
    n_explicands = _positive("--explicands", args.explicands)
    target_names = parse_names("--targets", args.targets, TARGETS)
    method_names = parse_names("--methods", args.methods, METHODS)
    if args.similarity not in ("cosine", "dot"):
        raise ValueError(f"--similarity must be 'cosine' or 'dot', got {args.similarity!r}")
    n_masks = _positive("--n-masks", args.n_masks)
    grid = _positive("--grid-size", args.grid_size)
    n_steps = _positive("--n-steps", args.n_steps)
    n_samples = _positive("--n-samples", args.n_samples)
    corpus_size = _positive("--corpus-size", args.corpus_size)
    foil_arg = None if args.foil_size is None else _positive("--foil-size", args.foil_size)
    if int(args.seed) < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not (np.isfinite(args.stdev) and args.stdev >= 0):
        raise ValueError(f"--stdev must be a finite number >= 0, got {args.stdev}")

    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import cocoa_jax
    from cocoa_jax import baselines as B
    from cocoa_jax import targets as T
    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.models.small_resnet import load_digits_encoder
    from cocoa_jax.viz import attribution_grid

    t_start = time.perf_counter()
    steps = ["load", "targets", *method_names, "write"]
    bar = tqdm(total=len(steps), desc="cocoa-jax explain", unit="step", disable=args.quiet)
    timings = {}

    def advance(name, t0):
        timings[name] = round(time.perf_counter() - t0, 3)
        bar.set_postfix_str(f"{name} {timings[name]:.1f}s")
        bar.update(1)

    t0 = time.perf_counter()
    model = load_digits_encoder(args.weights)
    data = load_digits_split(seed=0)  # the split the encoder was trained on (train images only)
    expl_idx, corpus_idx, foil_idx, capped = select(
        data.y_train, data.y_test, corpus_class=corpus_class, explicand_class=explicand_class,
        n_explicands=n_explicands, corpus_size=corpus_size, foil_size=foil_arg, seed=args.seed)
    xs = jnp.asarray(data.x_test[expl_idx])
    blurred = B.gaussian_blur(xs, 21, 5.0)  # the paper's baseline: the explicand, blurred
    advance("load", t0)

    t0 = time.perf_counter()
    encode = jax.jit(model.encode_fn)
    params = model.params

    def reps(x, chunk=256):
        # Fixed-size, zero-padded chunks: one compilation for corpus, foil and explicands.
        x = np.asarray(x)
        padded = np.zeros((-(-len(x) // chunk) * chunk, *x.shape[1:]), np.float32)
        padded[:len(x)] = x
        out = [np.asarray(encode(params, jnp.asarray(padded[i:i + chunk]))) for i in range(0, len(padded), chunk)]
        return np.concatenate(out)[:len(x)]

    corpus_reps, foil_reps, expl_reps = reps(data.x_train[corpus_idx]), reps(data.x_train[foil_idx]), reps(xs)
    build = {
        "cocoa": lambda: T.cocoa(corpus_reps, foil_reps, args.similarity),
        "corpus": lambda: T.corpus(corpus_reps, args.similarity),
        "label_free": lambda: T.label_free(expl_reps, args.similarity),
        "contrastive_label_free": lambda: T.contrastive_label_free(expl_reps, foil_reps, args.similarity),
    }
    target = T.stack([build[name]() for name in target_names])
    # Shared targets have direction (K, D), per-explicand ones (N, K, D): give every target an
    # explicand axis so one vmap handles both.
    k = len(target_names)
    target = T.Target(jnp.broadcast_to(target.direction, (n_explicands, k, model.representation_dim)),
                      target.normalize)
    scores = np.asarray(jax.vmap(lambda r, t: t(r))(jnp.asarray(expl_reps), target))  # (N, K)
    advance("targets", t0)

    explainers = make_explainers(model.encode_fn)
    key = jax.random.key(args.seed)
    results, extras = {}, {}
    for i, name in enumerate(method_names):
        t0 = time.perf_counter()
        keys = jax.random.split(jax.random.fold_in(key, i), n_explicands)
        if name == "ig":
            attr, delta = explainers["ig"](params, xs, blurred, target, n_steps=n_steps)
            extras["ig_delta"] = np.asarray(delta)  # (N, K) completeness gaps
        elif name == "gradient_shap":
            attr = explainers["gradient_shap"](params, xs, blurred, target, keys, n_samples=n_samples,
                                               stdev=float(args.stdev))
        else:
            attr = explainers["rise"](params, xs, blurred, target, keys, n_masks=n_masks, grid_size=(grid, grid))
        results[name] = np.asarray(jax.block_until_ready(attr))
        advance(name, t0)

    t0 = time.perf_counter()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "attributions.npz"), **results, **extras,
             explicands=np.asarray(xs), baselines=np.asarray(blurred), scores=scores,
             explicand_indices=expl_idx, explicand_labels=data.y_test[expl_idx],
             corpus_indices=corpus_idx, foil_indices=foil_idx,
             target_names=np.array(target_names), method_names=np.array(method_names))
    rows = [(f"{TARGET_LABELS[t]}\n{METHOD_LABELS[m]}",
             results[m][:, j], m == "rise")  # RISE maps carry the mean score as an offset
            for j, t in enumerate(target_names) for m in method_names]
    titles = [f"test #{i} (digit {data.y_test[i]})" for i in expl_idx]
    attribution_grid(os.path.join(out, "figure.png"), np.asarray(xs), rows, column_titles=titles,
                     title=f"corpus: {corpus_size} training '{corpus_class}'s, foil: {len(foil_idx)} random training images")
    advance("write", t0)
    bar.close()
    timings["total"] = round(time.perf_counter() - t_start, 3)

    settings = {
        "corpus_class": corpus_class, "explicand_class": explicand_class, "explicands": n_explicands,
        "targets": list(target_names), "methods": list(method_names), "similarity": args.similarity,
        "n_masks": n_masks, "grid_size": [grid, grid], "keep_prob": 0.5, "n_steps": n_steps,
        "ig_method": "gausslegendre", "n_samples": n_samples, "stdev": float(args.stdev),
        "corpus_size": corpus_size, "foil_size": int(len(foil_idx)), "foil_size_capped": capped,
        "baseline": "gaussian_blur(kernel_size=21, sigma=5.0)", "seed": args.seed, "data_split_seed": 0,
        "weights": args.weights or "shipped", "explicand_indices": expl_idx.tolist(),
        "corpus_indices": corpus_idx.tolist(), "foil_indices": foil_idx.tolist(),
        "scores": {t: scores[:, j].tolist() for j, t in enumerate(target_names)},
        "max_abs_ig_delta": float(np.max(np.abs(extras["ig_delta"]))) if "ig_delta" in extras else None,
        "timings_s": timings,
        "versions": {"cocoa_jax": getattr(cocoa_jax, "__version__", "?"), "jax": jax.__version__,
                     "numpy": np.__version__, "python": platform.python_version(),
                     "backend": jax.default_backend()},
    }
    with open(os.path.join(out, "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
    print(f"wrote {os.path.join(out, 'figure.png')}, attributions.npz and settings.json "
          f"in {timings['total']:.1f} s")
    return 0
