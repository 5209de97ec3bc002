"""`cocoa-jax report`: print and write the paper-layout tables of a sweep run."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a directory written by `cocoa-jax sweep`")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    parser.add_argument("--measures", default="ccs,corpus_majority_prob",
                        help="measures of the printed table, comma-separated")


def run(args) -> int:
    from cocoa_jax.sweep import report

    try:
        paths = report.write_report(args.run_dir, args.out)
        print(report.markdown_table(args.run_dir, tuple(m for m in args.measures.split(",") if m)))
    except (FileNotFoundError, ValueError) as err:
        print(f"cocoa-jax report: error: {err}")
        return 2
    print("\nwritten:", ", ".join(paths.values()))
    return 0
