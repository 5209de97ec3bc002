"""The `cocoa-jax` command line: COCOA (contrastive corpus attribution) explanations from the shell.

Each command module (`cocoa_jax.commands.<name>`) defines `add_arguments(parser)` and
`run(args) -> int`; it is imported only when its command runs (`cocoa-jax --help` loads no JAX).

Errors: a command reports a user mistake by raising `UsageError(message)`
(`cocoa_jax.commands.errors`, the commands' side: this module imports it, never the reverse); `main` prints
`cocoa-jax CMD: error: message` on stderr and returns 2, without a traceback. Command-line
mistakes (unknown flag or command, wrong type, missing argument) are answered the same way by
the command's own parser, with a close match suggested, exit status 2.

Faults of the machine: every command checks, before any work, that its output location can be
written (`cocoa_jax.files.check_writable`; refused as a usage error, status 2). A write that
fails DURING the work (a disk that fills up, a file system that turns read-only, a quota) is an
OSError that reaches `main`: `machine_fault` turns it into one line,
`cocoa-jax CMD: error: No space left on device (PATH)...`, exit status 1 (the machine failed,
not the command line), after the temporaries are removed; a sweep keeps its finished units.

Ctrl-C: `console_main` (the installed `cocoa-jax`) hands SIGINT/SIGTERM to
`cocoa_jax.interrupt` before JAX loads: one line, exit 130 (143), temporaries removed,
outputs all-or-none. `main(argv)` (in-process) catches KeyboardInterrupt: one line, 130.
"""
from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import sys

from cocoa_jax.commands.errors import USAGE_ERROR_STATUS, UsageError, error_line, fail, flag_errors

# command name -> (module, one-line help)
COMMANDS = {
    "explain": ("cocoa_jax.commands.explain",
                "explain an encoder with COCOA: the digits demo, or --model/--images for yours"),
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
    "evaluate": ("cocoa_jax.commands.evaluate",
                 "score attribution maps from any library with the metric table (faithfulness, ...)"),
    "text-sweep": ("cocoa_jax.commands.text_sweep",
                   "the small offline text sweep: token insertion/deletion AUCs with confidence intervals on digits captions"),
}

MACHINE_FAULT_STATUS = 1  # the machine failed the work (full disk, read-only file system ...)
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what shells report for Ctrl-C


# errno of an OSError that says the machine (disk, mount, permissions), not the command, failed.
MACHINE_FAULTS = {errno.ENOSPC: "free some space or write elsewhere",
                  errno.EDQUOT: "free some space or write elsewhere",
                  errno.EFBIG: "write elsewhere",
                  errno.EROFS: "write elsewhere",
                  errno.EACCES: None, errno.EPERM: None, errno.EIO: None}


def _fault_of(err: BaseException) -> OSError | None:
    """The machine-fault OSError that `err` is or wraps (a library may re-raise it as another type)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in MACHINE_FAULTS:
            return err
        err = err.__cause__ or err.__context__
    return None


def machine_fault(err: BaseException) -> str | None:
    """The one-line message of a machine fault met during the work, or None for other errors:
    `No space left on device (PATH): HINT; the command's detail (e.g. the sweep units kept)`."""
    fault = _fault_of(err)
    if fault is None:
        return None
    from cocoa_jax import interrupt

    text = fault.strerror or str(fault)
    if fault.filename is not None:
        text += f" ({fault.filename})"
    hint = MACHINE_FAULTS[fault.errno]
    text += "; the outputs in progress were removed" + (f": {hint}" if hint else "")
    detail = interrupt.detail()
    return f"{text}; {detail}" if detail else text


class _DropReportedWriteErrors:
    """A logging filter: orbax's background threads log, with tracebacks, the OS error of a failed
    checkpoint write that the main thread then raises; `machine_fault` reports that in one line."""

    @staticmethod
    def filter(record) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return "os_error_code=" not in f"{record.getMessage()} {error}"


def _quiet_reported_write_errors() -> None:
    import logging

    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropReportedWriteErrors) for f in logger.filters):
        logger.addFilter(_DropReportedWriteErrors())


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


DESCRIPTION = """\
Explain what an image encoder's representations respond to, with COCOA (contrastive corpus
attribution, Lin et al., ICLR 2023): which pixels make an image similar to a corpus of
examples and dissimilar to a foil. Runs on the embedded digits models out of the box, or on
checkpoints converted from PyTorch.
"""

EPILOG = """\
Run `cocoa-jax COMMAND --help` for a command's options. Outputs are written whole or not at
all: Ctrl-C stops any command with one line and exit status 130, leaving no partial outputs
(a sweep keeps the units it finished; re-run it to resume).
"""


def _suggestion(word: str, choices) -> str:
    """` (did you mean X?)` for the closest choice, compared without leading dashes."""
    bare = {c.lstrip("-"): c for c in choices}
    close = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1, cutoff=0.6)
    return f" (did you mean {bare[close[0]]}?)" if close else ""


def _choice_hint(message: str) -> str:
    """For argparse's `invalid choice: 'X' (choose from ...)`, the closest choice as a hint."""
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not found:
        return ""
    return _suggestion(found.group(1), re.findall(r"'([^']*)'", found.group(2)))


class CommandParser(argparse.ArgumentParser):
    """argparse, with every mistake as one line: `cocoa-jax CMD: error: ...`, exit status 2."""

    def error(self, message: str):
        self.exit(USAGE_ERROR_STATUS, f"{self.prog}: error: {message}{_choice_hint(message)}\n")

    def option_strings(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings]

    def unrecognized(self, extras: list[str]):
        """Report the first unrecognized argument, with the closest option as a hint."""
        options = [e for e in extras if e.startswith("-") and e != "-"]
        if options:
            word = options[0].split("=", 1)[0]
            hint = _suggestion(word, [s for s in self.option_strings() if s.startswith("--")])
        else:
            word, hint = extras[0], ""
        if not hint:
            hint = f" (see {self.prog} --help)"
        self.error(f"unrecognized argument {word}{hint}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = CommandParser(prog="cocoa-jax", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    parser._command_parsers = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        parser._command_parsers[name] = p
        # Only the chosen command's module is imported (its arguments are needed to parse).
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; a mistake exits with status 2 and one line from the right parser."""
    parser = build_parser(argv)
    first = argv[0] if argv else None
    if first is None:
        parser.error(f"missing COMMAND, one of {', '.join(COMMANDS)} (see cocoa-jax --help)")
    if not first.startswith("-") and first not in COMMANDS:
        parser.error(f"unknown command {first!r}{_suggestion(first, COMMANDS)}; "
                     f"commands: {', '.join(COMMANDS)}")
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser._command_parsers.get(args.command, parser).unrecognized(extras)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    from cocoa_jax import interrupt, phases

    interrupt.set_command(command)
    interrupt.set_detail(None)
    _quiet_reported_write_errors()
    phases.reached("start")
    try:
        args = parse(argv)  # a bad command line exits 2 (SystemExit), like argparse
        module = importlib.import_module(COMMANDS[args.command][0])
        # The persistent compilation cache, for every command (no JAX import of its own).
        from cocoa_jax import compile_cache

        with flag_errors(None):
            compile_cache.configure(args.command, getattr(args, "compile_cache", None))
        phases.reached("run")
        return int(module.run(args) or 0)
    except UsageError as err:
        _quiet_aborted_io()
        return fail(command, str(err))
    except Exception as err:  # a fault of the machine during the work: one line, exit status 1
        line = machine_fault(err)
        if line is None:
            raise
        from cocoa_jax import files

        files.remove_temporaries()
        _quiet_aborted_io()
        print(error_line(command, line), file=sys.stderr)
        return MACHINE_FAULT_STATUS
    except KeyboardInterrupt:
        from cocoa_jax import files

        files.remove_temporaries()
        print(interrupt.message(), file=sys.stderr)
        return INTERRUPTED_STATUS


def console_main() -> int:
    """The installed `cocoa-jax`: Ctrl-C/SIGTERM handled by `cocoa_jax.interrupt` (set up
    before anything loads JAX), then `main`."""
    from cocoa_jax import interrupt

    argv = sys.argv[1:]
    interrupt.install(argv[0] if argv and argv[0] in COMMANDS else None)
    status = main(argv)
    sys.stdout.flush()
    interrupt.finish()  # a signal taken while the command ended still gets its line and 130
    return status


if __name__ == "__main__":
    sys.exit(console_main())
