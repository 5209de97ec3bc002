"""The `cocoa-jax` command line: a thin dispatcher to `cocoa_jax.commands.<name>`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their command runs, so `cocoa-jax explain` never imports torch and
`cocoa-jax --help` stays fast.

Errors: a command reports a user mistake by raising `UsageError(message)` (or a
`ValueError`/`TypeError`/`FileNotFoundError`/`FileExistsError` before any work starts); `main`
prints `cocoa-jax CMD: error: message` on stderr and returns 2, without a traceback. Ctrl-C
prints one line and returns 130; a command that wants to say more (e.g. what is finished)
prints it and re-raises `KeyboardInterrupt`.
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

USAGE_ERROR_STATUS = 2   # argparse's status for a bad command line
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what shells report for Ctrl-C


class UsageError(Exception):
    """A mistake the user can fix (bad argument, missing file, existing output).

    `main` prints it as `cocoa-jax CMD: error: MESSAGE` on stderr and exits with status 2.
    The message should name the argument and what was expected.
    """


def error_line(command: str | None, message: str) -> str:
    """The one-line error format of every command: `cocoa-jax CMD: error: message`."""
    prog = f"cocoa-jax {command}" if command else "cocoa-jax"
    return f"{prog}: error: {message}"


def fail(command: str | None, message: str) -> int:
    """Print `error_line(command, message)` on stderr and return the usage-error status (2)."""
    print(error_line(command, message), file=sys.stderr)
    return USAGE_ERROR_STATUS


def _quiet_aborted_io() -> None:
    """After an error, drop the late "Event loop is closed" reports of aborted background reads.

    When orbax fails to restore a damaged checkpoint, tensorstore callbacks still in flight hit
    the closed asyncio loop and print tracebacks at exit through `sys.unraisablehook`. The
    error has already been reported in one line; everything else still reaches the old hook.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    sys.unraisablehook = hook


def _version() -> str:
    from cocoa_jax import __version__

    return f"cocoa-jax {__version__}"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocoa-jax", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported (its arguments are needed to parse).
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        args = build_parser(argv).parse_args(argv)  # argparse itself exits 2 on a bad command line
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except UsageError as err:
        _quiet_aborted_io()
        return fail(command, str(err))
    except KeyboardInterrupt:
        prog = f"cocoa-jax {command}" if command else "cocoa-jax"
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED_STATUS


if __name__ == "__main__":
    sys.exit(main())
