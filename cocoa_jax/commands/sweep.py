"""`cocoa-jax sweep`: run (or resume) the paper's Section 4.1 protocol."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="output directory; re-running with the same config resumes")
    parser.add_argument("--config", help="JSON file of SweepConfig fields (default: the reduced digits protocol)")
    parser.add_argument("--paper", action="store_true",
                        help="start from the paper's full defaults instead of the reduced digits protocol")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help='override a config field, e.g. --set seeds=[0,1] --set encoder=\\"digits\\"')
    parser.add_argument("--max-units", type=int, default=None, help="stop after this many units")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report", action="store_true", help="write the report when done")


def build_config(args):
    from cocoa_jax.sweep.config import SweepConfig, digits_reduced

    if args.config:
        with open(args.config) as fh:
            base = json.load(fh)
    else:
        base = (SweepConfig() if args.paper else digits_reduced()).to_dict()
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=JSON, got {item!r}")
        try:
            base[field] = json.loads(value)
        except json.JSONDecodeError:
            base[field] = value  # bare strings
    return SweepConfig.from_dict(base)


def run(args) -> int:
    from cocoa_jax.sweep import run_sweep
    from cocoa_jax.sweep.store import RunDirMismatch

    try:
        config = build_config(args)
        result = run_sweep(config, args.run_dir, progress=not args.no_progress, max_units=args.max_units)
    except (ValueError, TypeError, FileNotFoundError) as err:  # RunDirMismatch is a ValueError
        kind = "run directory mismatch" if isinstance(err, RunDirMismatch) else "error"
        print(f"cocoa-jax sweep: {kind}: {err}")
        return 2
    print(f"run {result.config_hash}: computed {len(result.computed)} unit(s), "
          f"{len(result.skipped)} already finished, {result.seconds:.1f} s -> {result.run_dir}")
    if result.probe_accuracy is not None:
        print(f"linear probe accuracy (held-out split): {result.probe_accuracy:.4f}")
    if args.report:
        from cocoa_jax.sweep.report import write_report
        paths = write_report(args.run_dir)
        print("report:", ", ".join(paths.values()))
    return 0
