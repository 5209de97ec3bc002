"""Atomic outputs: every file or directory a command writes appears whole, or not at all.

`Outputs` collects several outputs (files held in memory, directories written to a temporary
sibling) and `commit()`s them together under one process-wide lock; `atomic_write_bytes`,
`atomic_write_json` and `atomic_directory` are one-output shortcuts. The Ctrl-C handler of the
command line (`cocoa_jax.interrupt`) takes the same lock, so a commit in progress completes
and one not started never starts; it then deletes the registered temporaries and exits.
Temporary names are `<final path>.tmp-<pid>[-<n>]`, next to the final path (same file
system, so the final rename is atomic on POSIX).

Faults of the machine: `check_writable(directory)` proves, before any work, that files can be
created there (the directory and its missing parents are created when the outputs are written);
a write that fails later (a full disk, a read-only or lost mount) raises an `OSError` naming the
FINAL path, with every temporary of the commit and any folder it created removed: nothing
half-written. `cocoa_jax.cli` turns such an OSError into one line, exit status 1.

This module imports only the standard library (the interrupt handler loads it before JAX).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shutil
import socket
import threading

# Tests only: seconds to pause inside a commit after its first file is in place, so a signal
# can be sent mid-commit (the commit must still complete, then the command exits 130). The
# pause ends early when a signal arrives (`cocoa_jax.interrupt` sets `_PAUSE_ENDS`).
COMMIT_PAUSE_ENV = "COCOA_JAX_TEST_COMMIT_PAUSE"
_PAUSE_ENDS = threading.Event()
# Directories being written into their temporary: commits inside one (a library's own, e.g. a
# checkpoint saved with `atomic_directory` into it) do not pause; the outer commit does.
_INSIDE_TEMPORARY = [0]

_LOCK = threading.RLock()
_TEMPORARIES: dict[str, None] = {}  # insertion-ordered set of paths to delete on interrupt
_COUNTER = itertools.count()


@contextlib.contextmanager
def write_lock():
    """Hold the lock that commits and the interrupt handler take (re-entrant)."""
    with _LOCK:
        yield


def register_temporary(path: str) -> None:
    with _LOCK:
        _TEMPORARIES[os.path.abspath(path)] = None


def unregister_temporary(path: str) -> None:
    with _LOCK:
        _TEMPORARIES.pop(os.path.abspath(path), None)


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


def _remove_with_debris(path: str) -> None:
    """`path` and the siblings named `<path>.*` that a writer of it left (orbax writes a
    checkpoint to `<dir>.orbax-checkpoint-tmp...` first, and leaves it when it fails)."""
    _remove(path)
    folder, name = os.path.split(path)
    try:
        debris = [n for n in os.listdir(folder or ".") if n.startswith(name + ".")]
    except OSError:
        return
    for leftover in debris:
        _remove(os.path.join(folder, leftover))


def remove_temporaries() -> list[str]:
    """Delete every registered temporary (newest first), with its writers' debris; returns their paths."""
    with _LOCK:
        paths = list(_TEMPORARIES)[::-1]
        for path in paths:
            _remove_with_debris(path)
        _TEMPORARIES.clear()
    return paths


# An OS error a library (tensorstore, under orbax) reports inside another exception's text.
_OS_ERROR_IN_TEXT = re.compile(r"os_error_code='?(\d+)")


def as_os_error(err: BaseException, path: str) -> OSError | None:
    """The OSError that `err` is or reports (e.g. orbax's "ValueError: RESOURCE_EXHAUSTED ...
    [os_error_code='28']"), naming `path`; None when it reports none."""
    if isinstance(err, OSError):
        return err
    found = _OS_ERROR_IN_TEXT.search(str(err))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), path)


def temporary_name(path: str) -> str:
    """A free sibling name for a temporary of `path`: `<path>.tmp-<pid>[-<n>]`."""
    base = f"{os.path.abspath(path)}.tmp-{os.getpid()}"
    candidate = base
    while os.path.lexists(candidate) or candidate in _TEMPORARIES:
        candidate = f"{base}-{next(_COUNTER)}"
    return candidate


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class UnwritableLocation(ValueError):
    """An output location where files cannot be created; the message completes "--out PATH ..."."""


PROBE_NAME = ".cocoa-jax-write-check"


def _nearest_existing(path: str) -> str:
    """`path`, or its closest ancestor that exists (what a later `makedirs` starts from)."""
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _probe(directory: str) -> None:
    """Create, write one byte to, fsync and delete a file in `directory` (OSError if it cannot).

    The name carries host, pid and a random part: processes of a multi-host sweep may probe one
    shared run directory at the same moment."""
    for _ in range(8):
        name = f"{PROBE_NAME}.{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        path = os.path.join(directory, name)
        register_temporary(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            unregister_temporary(path)
            continue
        try:
            try:
                os.write(fd, b"\0")  # a full file system refuses the first byte
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            _remove(path)
            unregister_temporary(path)
        return


def check_writable(directory: str) -> str:
    """Prove that files can be written in `directory` before any work; returns its absolute path.

    A missing `directory` (and missing parents) is fine when its closest existing ancestor is a
    writable folder: the outputs' commit creates them (nothing is created here). Raises
    `UnwritableLocation` when `directory` or an ancestor is a file, or a probe file cannot be
    created, written and synced there (read-only file system, no permission, a full disk).
    """
    directory = os.path.abspath(directory)
    existing = _nearest_existing(directory)
    if not os.path.isdir(existing):
        if existing == directory:
            raise UnwritableLocation("exists and is not a directory")
        raise UnwritableLocation(f"cannot be created: {existing} is a file, not a directory")
    try:
        _probe(existing)
    except OSError as err:
        raise UnwritableLocation(f"cannot be written: {err.strerror or err} ({existing})") from None
    return directory


def missing_folders(paths) -> list[str]:
    """The folders `makedirs` will create for `paths`, deepest first (removed again on failure)."""
    missing = set()
    for path in paths:
        folder = os.path.abspath(path)
        while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
            missing.add(folder)
            folder = os.path.dirname(folder)
    return sorted(missing, key=lambda p: -p.count(os.sep))


def remove_empty_folders(folders) -> None:
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def _write_file(path: str, tmp: str, data: bytes, mode: int) -> None:
    """`data` into the temporary `tmp`, fsynced; an OSError names the final `path`."""
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from None


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def npz_bytes(arrays: dict) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def json_bytes(obj, **kwargs) -> bytes:
    kwargs.setdefault("indent", 2)
    return json.dumps(obj, **kwargs).encode()


def rendered(write) -> bytes:
    """`write(file_object)` into memory (e.g. `fig.savefig`, `np.savez`); returns the bytes."""
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def _after_rename(count: int) -> int:
    if count == 0 and os.environ.get(COMMIT_PAUSE_ENV) and not _INSIDE_TEMPORARY[0]:
        _PAUSE_ENDS.wait(float(os.environ[COMMIT_PAUSE_ENV]))
    return count + 1


class Outputs:
    """Outputs written together: after `commit()` all of them are in place, before it none.

    Files are kept in memory until the commit (nothing touches the disk before it, so an
    interrupt or an error earlier leaves nothing behind). Directories are written inside
    `with outputs.directory(path) as tmp:` to a registered temporary sibling, with the lock
    held (an interrupt waits for the write, then deletes it). `commit()` creates missing
    parent folders, writes and fsyncs the files' temporaries, then moves everything into
    place, all under the lock. An existing output is replaced (callers decide if allowed).
    """

    def __init__(self):
        self._files: dict[str, bytes] = {}
        self._dirs: dict[str, str] = {}

    # -- staging -------------------------------------------------------------------------------

    def add_bytes(self, path: str, data: bytes) -> str:
        self._files[os.path.abspath(path)] = bytes(data)
        return path

    def add_text(self, path: str, text: str) -> str:
        return self.add_bytes(path, text.encode())

    def add_json(self, path: str, obj, **kwargs) -> str:
        return self.add_bytes(path, json_bytes(obj, **kwargs))

    def add_npz(self, path: str, arrays: dict) -> str:
        return self.add_bytes(path, npz_bytes(arrays))

    def add_rendered(self, path: str, write) -> str:
        """`write(file_object)` (a figure's savefig, np.savez, ...) rendered in memory."""
        return self.add_bytes(path, rendered(write))

    @contextlib.contextmanager
    def directory(self, path: str):
        """Yield a temporary sibling path (not created) to write the directory `path` into."""
        path = os.path.abspath(path)
        with _LOCK:
            tmp = temporary_name(path)
            register_temporary(tmp)
            try:
                _INSIDE_TEMPORARY[0] += 1
                try:
                    yield tmp
                finally:
                    _INSIDE_TEMPORARY[0] -= 1
                if not os.path.isdir(tmp):
                    raise FileNotFoundError(f"nothing was written to {tmp!r} for {path!r}")
            except BaseException as err:
                # Removed now, and again by `remove_temporaries` (kept registered): a library's
                # background writer (orbax) may still create folders in it after its error.
                _remove_with_debris(tmp)
                fault = as_os_error(err, path) if isinstance(err, Exception) else None
                if fault is not None and (fault is not err or str(fault.filename or "").startswith(tmp)):
                    # named by the final path (not the temporary), also under a library's own type
                    raise OSError(fault.errno, fault.strerror, path) from err
                raise
        self._dirs[path] = tmp

    # -- committing ----------------------------------------------------------------------------

    def discard(self) -> None:
        """Drop everything staged (deletes staged directories)."""
        with _LOCK:
            for tmp in self._dirs.values():
                _remove(tmp)
                unregister_temporary(tmp)
        self._dirs.clear()
        self._files.clear()

    def commit(self) -> list[str]:
        """Move every staged output into place (all, or on an error none of the files)."""
        paths = [*self._dirs, *self._files]
        with _LOCK:
            written = {}
            parents = {os.path.dirname(p) for p in paths}
            created = missing_folders(parents)
            try:
                for parent in sorted(parents):
                    os.makedirs(parent, exist_ok=True)
                mode = _default_mode()
                for path, data in self._files.items():
                    tmp = temporary_name(path)
                    register_temporary(tmp)
                    written[path] = tmp
                    _write_file(path, tmp, data, mode)
            except BaseException:
                for tmp in written.values():
                    _remove(tmp)
                    unregister_temporary(tmp)
                self.discard()
                remove_empty_folders(created)  # nothing half-written: not even an empty folder
                raise
            renamed = 0
            for path, tmp in self._dirs.items():
                old = None
                if os.path.lexists(path):
                    old = temporary_name(path + ".old")
                    register_temporary(old)
                    os.replace(path, old)
                os.replace(tmp, path)
                unregister_temporary(tmp)
                if old is not None:
                    _remove(old)
                    unregister_temporary(old)
                renamed = _after_rename(renamed)
            for path, tmp in written.items():
                os.replace(tmp, path)
                unregister_temporary(tmp)
                renamed = _after_rename(renamed)
            for parent in parents:
                fsync_dir(parent)
        self._dirs.clear()
        self._files.clear()
        return paths

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()
        return False


# ---------------------------------------------------------------------------------------------
# One-output shortcuts

def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path`: readers (and a Ctrl-C) see the old file or the whole new one."""
    outputs = Outputs()
    outputs.add_bytes(path, data)
    outputs.commit()


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str, obj, **kwargs) -> None:
    atomic_write_bytes(path, json_bytes(obj, **kwargs))


def atomic_write_npz(path: str, arrays: dict) -> None:
    atomic_write_bytes(path, npz_bytes(arrays))


def atomic_write_rendered(path: str, write) -> None:
    """`write(file_object)` (e.g. a figure's savefig) rendered in memory, then written atomically."""
    atomic_write_bytes(path, rendered(write))


@contextlib.contextmanager
def atomic_directory(directory: str):
    """Yield a temporary sibling path of `directory` to write into (not created). On success it
    replaces `directory` (the old one is removed only then); on any failure it is removed and
    `directory` is left as it was."""
    outputs = Outputs()
    with outputs.directory(directory) as tmp:
        yield tmp
    outputs.commit()
