"""Argument checks the commands share; each mistake is a `UsageError` naming the flag."""
from __future__ import annotations

import os
import sys

from cocoa_jax.commands.errors import UsageError, flag_errors, with_flag


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


def output_folder(out, outputs, overwrite: bool, option: str = "--out") -> str:
    """The absolute output folder of flag `option`, checked before any work: not a file, none of an
    earlier run's `outputs` (file names) in it unless `overwrite`, writable or creatable."""
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{option} {out!r} exists and is not a directory")
    existing = [name for name in outputs if os.path.exists(os.path.join(out, name))]
    if existing and not overwrite:
        raise UsageError(f"{option} {out!r} already holds {', '.join(existing)} from an earlier run; "
                         f"choose another {option} or pass --overwrite")
    return output_location(option, out)


def output_location(option: str, path, *, replaced_whole: bool = False) -> str:
    """The absolute output location `path` of flag `option`, proven writable before any work.

    A missing folder (and missing parents) is accepted when the closest existing ancestor is
    writable: the command creates it when it writes its outputs. `replaced_whole`: the output is
    a directory written to a temporary sibling and renamed into place (checkpoints, model
    directories), so its PARENT must be writable. Refused (UsageError naming the flag): a file
    in the way, a read-only file system, no permission, a full disk.
    """
    from cocoa_jax import files

    target = os.path.abspath(os.fspath(path))
    where = os.path.dirname(target) if replaced_whole else target
    try:
        files.check_writable(where)
    except files.UnwritableLocation as err:
        if replaced_whole and str(err).startswith("exists"):  # the parent itself is a file
            err = f"cannot be created: {where} is a file, not a directory"
        raise UsageError(f"{option} {os.fspath(path)!r} {err}") from None
    return target


def read_images(command: str, flag: str, paths, model):
    """Image files of flag `flag` read for `model` (`data.files.read`): library errors become a
    UsageError naming the flag, and each unusual resize or frame is one note line on stderr, never
    silent. Returns (N, H, W, C) [0, 1] pixels."""
    from cocoa_jax.data import files

    with flag_errors(flag):
        pixels, notes = files.read(paths, model.input_shape, model.preprocess)
    for note in with_flag(flag, notes):
        print(f"cocoa-jax {command}: note: {note}", file=sys.stderr)
    return pixels


def note_zero_maps(command: str, method_names, target_names, similarity: str, quiet: bool) -> None:
    """One note line on stderr (none with --quiet) for method x target pairs whose map is all zero
    by construction (`methods.zero_map_note`): printed before the work, nothing refused."""
    from cocoa_jax import methods

    note = None if quiet else methods.zero_map_note(method_names, target_names, similarity)
    if note:
        print(f"cocoa-jax {command}: note: {note}", file=sys.stderr, flush=True)


def image_encoder(option: str, arch, *, choices=None, instead: str = "") -> None:
    """Refuse `arch` where the command encodes images and the architecture takes none (its
    `ArchSpec.images` is False: a sentence encoder), before any weights or files are read.

    UsageError `OPTION ARCH encodes text only; ...` naming the image encoders to choose from
    (`choices`, default every architecture; those without image input left out) and, when given,
    what else to do (`instead`, e.g. explain's text mode). Names not in the table pass: the
    command's own check lists its choices.
    """
    from cocoa_jax.models import ARCHITECTURES

    spec = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if spec is None or spec.images:
        return
    usable = [name for name in (ARCHITECTURES if choices is None else choices)
              if name not in ARCHITECTURES or ARCHITECTURES[name].images]
    raise UsageError(f"{option} {arch} encodes text only; this command takes images: choose an image encoder "
                     f"({', '.join(usable)}){f', or {instead}' if instead else ''}")
