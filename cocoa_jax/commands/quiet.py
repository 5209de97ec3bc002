"""`--quiet`, with one meaning in every command that has it.

Quiet drops what reports progress: progress bars, per-step logs and notes about what is being
done. It keeps what the user must see: errors (one line on stderr) and the final summary (what
was written, and the headline numbers of the run).
"""
from __future__ import annotations

import argparse

HELP = ("no progress bars, per-step logs or notes; errors and the final summary (what was written, "
        "headline numbers) are still printed")


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help=HELP)
