"""The one error path of every command: a user mistake is a `UsageError`, printed as one line.

`cocoa_jax.cli.main` prints a `UsageError` as `cocoa-jax CMD: error: MESSAGE` on stderr and
returns USAGE_ERROR_STATUS (2), without a traceback. Library functions know nothing of flags: their
errors name the library argument or the file; `flag_errors` is where a command maps one of them to
the flag the user typed. The dispatcher (`cocoa_jax.cli`) imports this module, never the reverse.
"""
from __future__ import annotations

import contextlib
import re
import sys

USAGE_ERROR_STATUS = 2   # argparse's status for a bad command line


class UsageError(Exception):
    """A mistake the user can fix (bad argument, missing file, existing output).

    Printed as `cocoa-jax CMD: error: MESSAGE` on stderr, exit status 2. The message should name
    the argument and what was expected.
    """


def error_line(command: str | None, message: str) -> str:
    """The one-line error format of every command: `cocoa-jax CMD: error: message`."""
    prog = f"cocoa-jax {command}" if command else "cocoa-jax"
    return f"{prog}: error: {message}"


def fail(command: str | None, message: str) -> int:
    """Print `error_line(command, message)` on stderr and return the usage-error status (2)."""
    print(error_line(command, message), file=sys.stderr)
    return USAGE_ERROR_STATUS


@contextlib.contextmanager
def flag_errors(flag: str | None, *errors: type[BaseException], names=None):
    """Inside, a library error (ValueError unless `errors` names others) becomes a UsageError.

    The message is the library's, prefixed `FLAG: ` when `flag` is given (the library named a
    file or a value, the flag says where it came from). `names` maps the library's argument
    names to the command's flags (a dict {name: flag}, whole words, or a function of the text),
    e.g. `n_explicands=5 exceeds ...` -> `--explicands=5 exceeds ...`.
    """
    try:
        yield
    except (errors or (ValueError,)) as err:
        message = str(err)
        if callable(names):
            message = names(message)
        elif names:
            message = re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b",
                             lambda found: names[found.group(1)], message)
        raise UsageError(f"{flag}: {message}" if flag else message) from None


def with_flag(flag: str, lines) -> list[str]:
    """Library notes (one line each, about a file) as the command reports them: `FLAG: note`."""
    return [f"{flag}: {line}" for line in lines]
