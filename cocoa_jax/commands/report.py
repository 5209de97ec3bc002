"""`cocoa-jax report`: print and write the paper-layout tables of a sweep run (every process's units)."""
from __future__ import annotations

import argparse
import os

from cocoa_jax.commands.errors import UsageError, flag_errors
from cocoa_jax.metrics import MEASURE_NAMES
from cocoa_jax.sparsity import GINI_MODES

DEFAULT_MEASURES = "ccs,corpus_majority_prob"


OUTPUT_POLICY = """\
writes report.md (a header saying what ran, where and when, then the tables: arrows and bold
follow each measure's own direction), report.csv and curves.png to --out (default RUN_DIR/report), plus
sensitivity_<corpus|foil>.png and .csv for a size study (a list corpus_size or foil_size),
regenerated from the run each time: they replace the earlier report's files, all together once
all are computed; Ctrl-C or an error before that leaves the earlier report as it was. Other files
in --out are left alone."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = OUTPUT_POLICY
    parser.add_argument("run_dir", help="a directory written by `cocoa-jax sweep`")
    parser.add_argument("--out", default=None,
                        help="output folder (default RUN_DIR/report); its report files are replaced")
    parser.add_argument("--measures", default=DEFAULT_MEASURES,
                        help=f"measures of the printed table, comma-separated, from: {', '.join(MEASURE_NAMES)} "
                             f"(default {DEFAULT_MEASURES})")
    parser.add_argument("--gini", choices=GINI_MODES, default="absolute",
                        help="the Gini sparsity table: 'absolute' (default) the Gini index of |a|, in [0, 1), "
                             "higher is sparser; 'official' the official COCOA compute_gini_index on the raw "
                             "values (for signed maps such as IG it can leave [0, 1] and does not measure sparsity)")


def parse_measures(value: str) -> tuple[str, ...]:
    measures = tuple(m.strip() for m in value.split(",") if m.strip())
    if not measures:
        raise UsageError(f"--measures is empty; choose from {', '.join(MEASURE_NAMES)}")
    unknown = [m for m in measures if m not in MEASURE_NAMES]
    if unknown:
        raise UsageError(f"--measures: unknown {', '.join(unknown)}; choose from {', '.join(MEASURE_NAMES)}")
    return measures


def run(args) -> int:
    measures = parse_measures(args.measures)
    if not os.path.isdir(args.run_dir):
        raise UsageError(f"RUN_DIR {args.run_dir!r} is not a directory")
    if not os.path.exists(os.path.join(args.run_dir, "config.json")):
        raise UsageError(f"RUN_DIR {args.run_dir!r} is not a sweep run directory (no config.json)")
    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out!r} exists and is not a directory")
    from cocoa_jax.commands.checks import output_location

    if args.out is None:  # the default, RUN_DIR/report
        output_location("--out (default RUN_DIR/report)", os.path.join(args.run_dir, "report"))
    else:
        output_location("--out", args.out)

    from cocoa_jax.sweep import report

    with flag_errors(None, FileNotFoundError, ValueError):
        table = report.markdown_table(args.run_dir, measures)
        paths = report.write_report(args.run_dir, args.out, gini=args.gini)
    print(table)
    print("\nwritten:", ", ".join(paths.values()))
    return 0
