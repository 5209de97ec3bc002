"""`cocoa-jax text-sweep`: the small offline text sweep (`cocoa_jax.text.study`).

    cocoa-jax text-sweep                                  # defaults: about a minute on a 2-core CPU
    cocoa-jax text-sweep --seeds 0,1,2,3,4 --corpus captions --methods integrated_gradients,occlusion

Captions generated from the shipped digits dual encoder's vocabulary are explained (which tokens make
a caption of digit c match images, or captions, of digit c and not the other digits) by the method
table's methods for every target, and scored by token insertion / deletion. Writes to --out, all
together at the end: table.md (the image sweep's layout: mean and 95% CI half-width over seeds, best
bold), table.csv (one row per method x target x curve x measure), aucs.npz (per seed and caption) and
settings.json (config, captions, timings). Every argument is checked first.
"""
from __future__ import annotations

import argparse
import os
import time

from cocoa_jax.commands import method_flags
from cocoa_jax.commands.checks import output_folder, parse_names
from cocoa_jax.commands.errors import UsageError, flag_errors
from cocoa_jax.files import Outputs

DEFAULT_OUT = os.path.join("runs", "text-sweep")
OUTPUT_FILES = ("table.md", "table.csv", "aucs.npz", "settings.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cocoa_jax.text.study import CORPUS_MODES, MEASURES, TextStudyConfig

    defaults = TextStudyConfig()
    join = lambda values: ",".join(str(v) for v in values)
    parser.add_argument("--seeds", default=join(defaults.seeds),
                        help=f"comma-separated seeds; intervals are over seeds (default {join(defaults.seeds)})")
    parser.add_argument("--classes", default=join(defaults.classes),
                        help="comma-separated digit classes whose captions are explained (default: all ten)")
    parser.add_argument("--template", action="append", default=None, metavar="TEXT",
                        help="an explicand template with one {digit} slot, words of the digits vocabulary "
                             "(repeatable; default: " + "; ".join(defaults.templates) + ")")
    parser.add_argument("--corpus", default=defaults.corpus, choices=CORPUS_MODES,
                        help="the corpus and foil: digit images (cross-modal, default) or captions")
    parser.add_argument("--corpus-size", type=int, default=defaults.corpus_size,
                        help=f"corpus images per class (default {defaults.corpus_size})")
    parser.add_argument("--foil-size", type=int, default=defaults.foil_size,
                        help=f"foil images (or captions, at most 45) per class (default {defaults.foil_size})")
    parser.add_argument("--targets", default=join(defaults.targets), help=f"comma-separated (default: {join(defaults.targets)})")
    parser.add_argument("--measures", default=join(defaults.measures),
                        help=f"comma-separated, from {join(MEASURES)} (default: all)")
    method_flags.add_arguments(parser, default_methods=defaults.methods)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --out")
    from cocoa_jax import compile_cache
    from cocoa_jax.commands import quiet

    quiet.add_argument(parser)
    compile_cache.add_argument(parser)


def _ints(flag: str, text: str) -> tuple:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"{flag} is empty")
    return values


def check(args: argparse.Namespace):
    """The study's config and the output folder, every argument checked before any work."""
    from cocoa_jax import targets
    from cocoa_jax.text.study import MEASURES, TextStudyConfig

    names = method_flags.selected(args)
    options = method_flags.options(args, names, (8, 1, 1))  # a caption of at most 8 tokens
    fields = dict(seeds=_ints("--seeds", args.seeds), classes=_ints("--classes", args.classes),
                  corpus=args.corpus, corpus_size=args.corpus_size, foil_size=args.foil_size, methods=names,
                  options={m: o for m, o in options.items() if o},
                  targets=parse_names("--targets", args.targets, tuple(targets.TARGETS)),
                  measures=parse_names("--measures", args.measures, MEASURES))
    if args.template:
        fields["templates"] = tuple(args.template)
    flags = {"seeds": "--seeds", "classes": "--classes", "templates": "--template", "corpus_size": "--corpus-size",
             "foil_size": "--foil-size"}
    with flag_errors(None, TypeError, ValueError, names=flags):
        config = TextStudyConfig(**fields)
    return config, output_folder(args.out, OUTPUT_FILES, args.overwrite)


def run(args: argparse.Namespace) -> int:
    config, out = check(args)
    from cocoa_jax.records import environment_record
    from cocoa_jax.text import study

    t0 = time.perf_counter()
    result = study.run_study(config, progress=None if args.quiet else (lambda line: print(line, flush=True)))
    table = study.markdown_table(result)
    outputs = Outputs()
    outputs.add_text(os.path.join(out, "table.md"), table + "\n")
    outputs.add_text(os.path.join(out, "table.csv"), study.csv_table(result))
    arrays = {f"{method}__{target or 'none'}": values for (method, target), values in result.per_caption.items()}
    outputs.add_npz(os.path.join(out, "aucs.npz"), arrays)
    outputs.add_json(os.path.join(out, "settings.json"), {
        "config": config.to_dict(), "captions": result.captions,
        "arrays": {"{method}__{target}": "(seeds, captions, 2 kinds (insertion, deletion), measures) AUCs; "
                                         "random__none is the random reference map"},
        "timings_s": {k: round(v, 3) for k, v in result.seconds.items()}, **environment_record()})
    outputs.commit()
    print(table)
    print(f"wrote {os.path.join(out, 'table.md')}, table.csv, aucs.npz and settings.json in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
