"""`cocoa-jax explain --text ... | --text-file F`: token attributions of sentences (`cocoa_jax.text`).

    cocoa-jax explain --text "this is a photo of a seven" --corpus-text "a handwritten seven" \
        --foil-text "a handwritten one" "the number two"
    cocoa-jax explain --model clip_vit --weights converted/clip --text-file captions.txt \
        --corpus dogs/ --foil random_images/

The model: the shipped digits dual encoder's text tower by default (`--model digits` or `digits_clip`),
or any architecture of the table with a text tower (`ArchSpec.text_tower`: CLIP, SigLIP, sentence_bert;
`--model ARCH --weights DIR`). Corpus and foil: sentences (`--corpus-text`, `--foil-text`) or, for an
image-text model (`ArchSpec.joint_text`), images (`--corpus`, `--foil`: cross-modal COCOA). Writes tokens.html (coloured tokens, one row per sentence x target x method, each row on its own
scale, shown), tokens.png (the same, matplotlib) and attributions.npz, plus settings.json, all together at
the end (none on an error or Ctrl-C); every argument checked first.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cocoa_jax.commands.errors import UsageError, flag_errors
from cocoa_jax.commands import method_flags
from cocoa_jax.commands.checks import note_zero_maps, output_folder, parse_names, positive, read_images
from cocoa_jax.files import Outputs

TEXT_OUTPUT_FILES = ("tokens.html", "tokens.png", "attributions.npz", "settings.json")
# The default --model (digits) and digits_clip name the shipped digits dual encoder in text mode: it is
# not an architecture of the table (its image tower is not the digits SimCLR encoder's).
SHIPPED_DUAL_ENCODER = ("digits", "digits_clip")


def _text_models() -> tuple:
    from cocoa_jax.models import ARCHITECTURES

    return SHIPPED_DUAL_ENCODER + tuple(n for n, spec in ARCHITECTURES.items() if spec.text_tower)


def _read_text_file(path: str) -> list:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--text-file {path!r} cannot be read: {err}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise UsageError(f"--text-file {path!r} holds no non-empty line")
    return lines


def check(args: argparse.Namespace) -> dict:
    """Every argument of text mode, before any work."""
    from cocoa_jax import targets

    from cocoa_jax.models import ARCHITECTURES

    if args.model not in _text_models():
        raise UsageError(f"--text needs a model with a text tower: {', '.join(_text_models())}; "
                         f"got --model {args.model}")
    shipped = args.model in SHIPPED_DUAL_ENCODER
    if not shipped and args.weights is None:
        raise UsageError(f"--model {args.model} needs --weights DIR (the out_dir of `cocoa-jax convert`)")
    for what in ("corpus", "foil"):
        if getattr(args, what) is not None and not (shipped or ARCHITECTURES[args.model].joint_text):
            raise UsageError(f"--{what} images need an image-text encoder with --text; --model {args.model} "
                             f"encodes text only: give --{what}-text")
    if args.weights is not None and not os.path.isdir(os.path.expanduser(args.weights)):
        raise UsageError(f"--weights {args.weights!r} is not a directory")
    for flag, value in (("--images", args.images), ("--corpus-class", args.corpus_class),
                        ("--explicand-class", args.explicand_class), ("--explicands", args.explicands),
                        ("--corpus-size", args.corpus_size)):
        if value is not None:
            raise UsageError(f"{flag} does not apply with --text/--text-file (the sentences are the explicands)")
    texts = list(args.text or []) + (_read_text_file(args.text_file) if args.text_file else [])
    for i, text in enumerate(texts):
        if not text.strip():
            raise UsageError(f"--text: sentence {i + 1} is empty")
    for what in ("corpus", "foil"):
        if getattr(args, what) is not None and getattr(args, f"{what}_text") is not None:
            raise UsageError(f"give the {what} as images (--{what}) or as text (--{what}-text), not both")
    target_names = parse_names("--targets", args.targets, tuple(targets.TARGETS))
    needs = {need for name in target_names for need in targets.TARGETS[name][1]}
    if "corpus_reps" in needs and args.corpus is None and args.corpus_text is None:
        raise UsageError(f"--targets {','.join(target_names)} need a corpus: --corpus-text TEXT (or --corpus PATH)")
    if "foil_reps" in needs and args.foil is None and args.foil_text is None:
        raise UsageError(f"--targets {','.join(target_names)} need a foil: --foil-text TEXT (or --foil PATH)")
    if args.similarity not in targets.SIMILARITIES:
        raise UsageError(f"--similarity must be one of {', '.join(targets.SIMILARITIES)}, got {args.similarity!r}")
    if int(args.seed) < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    batch_size = None if args.batch_size is None else positive("--batch-size", args.batch_size)
    from cocoa_jax.text.pipeline import DEFAULT_TEXT_METHODS

    if args.methods == getattr(args, "_image_methods", None):  # --methods not given: the text mode's default
        args.methods = ",".join(DEFAULT_TEXT_METHODS)
    method_names = method_flags.selected(args)
    if getattr(args, "estimators", None) is not None:  # the profiles' counts were measured on images
        raise UsageError(f"--estimators {args.estimators} is for images; with --text the token methods take "
                         f"their own defaults and option flags (docs/text.md)")
    # Checked as on a 64 x 64 image: the per-token defaults (RISE's grid, Occlusion's window: one cell
    # per token, `text.attribution.token_options`) replace the image defaults only at run time.
    options = method_flags.options(args, method_names, (64, 64, 1), batch_size=batch_size)
    out = output_folder(args.out, TEXT_OUTPUT_FILES, args.overwrite)
    files = {}
    if args.corpus is not None or args.foil is not None:
        from cocoa_jax.data import files as data_files
        for what in ("corpus", "foil"):
            if getattr(args, what) is not None:
                with flag_errors(f"--{what}"):
                    files[what] = data_files.expand(getattr(args, what))
    return dict(texts=texts, targets=target_names, methods=method_names, options=options, batch_size=batch_size,
                out=out, files=files)


def _load(args):
    if args.model in SHIPPED_DUAL_ENCODER:
        from cocoa_jax.models.digits_clip import load_digits_clip
        with flag_errors("--weights", FileNotFoundError, ValueError):
            return load_digits_clip(args.weights)
    from cocoa_jax.models import load
    with flag_errors("--weights", FileNotFoundError, ValueError):
        return load(args.model, args.weights)


def _image_reps(model, flag, paths):
    return np.asarray(model.encode(read_images("explain", flag, paths, model)))


def run(args: argparse.Namespace) -> int:
    checked = check(args)
    note_zero_maps("explain", checked["methods"], checked["targets"], args.similarity, args.quiet)
    import jax

    from cocoa_jax import methods, viz
    from cocoa_jax.targets import TARGET_TITLES
    from cocoa_jax.text import html, pipeline

    t_start = time.perf_counter()
    model = _load(args)
    with flag_errors(None):
        encoder_texts = {w: getattr(args, f"{w}_text") for w in ("corpus", "foil")}
        reps = {w: (_image_reps(model, f"--{w}", checked["files"][w]) if w in checked["files"] else None)
                for w in ("corpus", "foil")}
        done = lambda name, seconds: None if args.quiet else print(f"{name}: {seconds:.1f} s", flush=True)
        result = pipeline.explain_texts(
            model, checked["texts"], corpus=encoder_texts["corpus"], foil=encoder_texts["foil"],
            corpus_reps=reps["corpus"], foil_reps=reps["foil"], targets=checked["targets"],
            methods=checked["methods"], options=checked["options"], key=jax.random.key(args.seed),
            similarity=args.similarity, batch_size=checked["batch_size"], on_method=done)
    out = checked["out"]
    outputs = Outputs()
    outputs.add_bytes(os.path.join(out, "tokens.html"), html.token_page(result, "cocoa-jax explain --text").encode())
    rows = [(f"{i + 1}: {TARGET_TITLES.get(t, t)} / {methods.get(m).title}", result.tokens[i],
             result.scores_by_method[m][i][k])
            for i in range(len(result.tokens)) for k, t in enumerate(result.target_names) for m in result.method_names]
    outputs.add_rendered(os.path.join(out, "tokens.png"), lambda f: viz.save_figure(viz.plot_token_attributions(
        rows, suptitle="red = raises the target, blue = lowers it; each row on its own scale"), f))
    arrays = {f"{m}_{i}": result.scores_by_method[m][i] for m in result.method_names for i in range(len(result.tokens))}
    arrays.update(ids=result.ids, scores=result.scores, baseline_scores=result.baseline_scores,
                  target_names=np.array(result.target_names), method_names=np.array(result.method_names))
    arrays.update({f"{m}_completeness_gap": g for m, g in result.completeness_gaps.items()})
    outputs.add_npz(os.path.join(out, "attributions.npz"), arrays)
    settings = {"model": args.model, "weights": args.weights or "shipped", "texts": checked["texts"],
                "tokens": result.tokens, "corpus": args.corpus_text or checked["files"].get("corpus"),
                "foil": args.foil_text or checked["files"].get("foil"), "targets": list(result.target_names),
                "methods": list(result.method_names),
                "method_options": {m: {k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}
                                   for m, o in checked["options"].items()},
                "baseline": "default ([MASK] where the vocabulary has one, else the zero embedding), positions kept",
                "strategy": "drop (perturbation methods remove tokens through the attention mask)",
                "arrays": {"{method}_{i}": "(K, C_i) scores of sentence i's content tokens",
                           "ids": "(N, T) token ids", "scores": "(N, K)", "baseline_scores": "(N, K)"},
                "seed": args.seed, "timings_s": {k: round(v, 3) for k, v in result.seconds.items()}}
    outputs.add_json(os.path.join(out, "settings.json"), settings)
    outputs.commit()
    print(f"wrote {os.path.join(out, 'tokens.html')}, tokens.png, attributions.npz and settings.json "
          f"in {time.perf_counter() - t_start:.1f} s")
    return 0
