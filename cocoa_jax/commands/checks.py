"""Argument checks the commands share; each mistake is a `UsageError` naming the flag."""
from __future__ import annotations

from cocoa_jax.cli import UsageError


def parse_names(option: str, value, allowed) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against `allowed`; duplicates removed, order kept."""
    allowed = tuple(allowed)
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    if not names:
        raise UsageError(f"{option} is empty; choose from {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise UsageError(f"{option}: unknown name(s) {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(names))


def positive(option: str, value) -> int:
    """A positive integer flag value."""
    if value is None or isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise UsageError(f"{option} must be a positive integer, got {value}")
    return int(value)
