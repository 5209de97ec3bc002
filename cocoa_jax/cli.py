"""The `cocoa-jax` command line: a thin dispatcher to `cocoa_jax.commands.<name>`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their command runs, so `cocoa-jax explain` never imports torch and
`cocoa-jax --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS = {
    "explain": ("cocoa_jax.commands.explain", "explain the embedded digits encoder (the main demo)"),
    "train-digits": ("cocoa_jax.commands.train_digits", "re-train the embedded digits encoder (SimCLR)"),
    "convert": ("cocoa_jax.commands.convert", "convert a PyTorch checkpoint to an orbax checkpoint (needs torch)"),
    "sweep": ("cocoa_jax.commands.sweep", "run the paper's Section 4.1 evaluation protocol, resumably"),
    "report": ("cocoa_jax.commands.report", "print and write the tables of a finished sweep"),
    "augmentations": ("cocoa_jax.commands.augmentations",
                      "explain what an encoder keeps invariant under augmentations (paper Sec. 4.2)"),
    "localize": ("cocoa_jax.commands.localize",
                 "localise a text query in an image with a dual image-text encoder (paper Sec. 4.3)"),
    "train-digits-clip": ("cocoa_jax.commands.train_digits_clip",
                          "re-train the embedded digits image-text dual encoder (CLIP loss)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocoa-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        # Only the chosen command's module is imported (its arguments are needed to parse).
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
