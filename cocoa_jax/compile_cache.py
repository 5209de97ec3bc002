"""JAX's persistent compilation cache, on by default for every `cocoa-jax` command.

A command's second run loads its compiled programs from disk instead of compiling them again.
`cocoa_jax.cli.main` calls `configure(command, flag)` once, after parsing and before the
command runs. Where the cache lives, first match wins:

1. the command's `--compile-cache DIR|none` flag (explain, localize, augmentations, sweep);
2. `$COCOA_JAX_CACHE_DIR` (a directory, or `none` to turn the cache off), for every command;
3. JAX's own `$JAX_COMPILATION_CACHE_DIR`, if the user has set it;
4. `$XDG_CACHE_HOME/cocoa-jax/jax`, else `~/.cache/cocoa-jax/jax`.

`cocoa-jax sweep --compile-cache auto` keeps the run directory's own cache
(RUN_DIR/compile_cache, set up by `cocoa_jax.sweep.runner` once the run directory exists).

Several processes may share one directory: a size limit is set (`MAX_SIZE_BYTES`, least
recently used entries evicted), which makes JAX take a file lock (the `filelock` package)
around every read and write. Without it JAX writes entries in place, unlocked, and two processes
storing the same program can leave a damaged entry that every later run warns about and
recompiles.

The price of that limit: JAX lists and stats EVERY entry of the directory on each write
(measured on the 2-core machine: 9 ms per write at 100 entries, 64 ms at 1 000, 306 ms at 5 000;
a first `explain` writes ~47 programs). So `enable` also bounds the entry count: beyond
`MAX_ENTRIES` the least recently used entries are removed (under JAX's lock) down to
`PRUNE_TO` of it, keeping a first run's write overhead under ~1.5 s however long the cache is used.

No JAX import here: when JAX is not loaded yet (the `sweep` command must set XLA_FLAGS first),
the settings go into the JAX_* environment variables that JAX reads when it loads (child
processes inherit them); when it is loaded, into `jax.config`.
"""
from __future__ import annotations

import importlib.util
import os
import sys

ENV_DIR = "COCOA_JAX_CACHE_DIR"
OFF = "none"
# Programs that compile faster than this are not written. 0 = every program, including the
# dozens of tiny eager-op programs of a command (measured: docs/performance.md).
MIN_COMPILE_TIME_SECS = 0.0
# Least recently used entries beyond this are evicted; setting a limit also turns on JAX's file
# lock, which makes the cache safe for concurrent processes.
MAX_SIZE_BYTES = 2 * 1024 ** 3
# Entries kept (see the module docstring): ~10 explain configurations' worth of programs.
MAX_ENTRIES = 500
PRUNE_TO = 0.8
_CACHE_SUFFIX, _ATIME_SUFFIX, _LOCK_NAME = "-cache", "-atime", ".lockfile"  # JAX's LRU cache layout

_JAX_ENV = {"jax_compilation_cache_dir": "JAX_COMPILATION_CACHE_DIR",
            "jax_persistent_cache_min_compile_time_secs": "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
            "jax_persistent_cache_min_entry_size_bytes": "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
            "jax_compilation_cache_max_size": "JAX_COMPILATION_CACHE_MAX_SIZE",
            "jax_enable_compilation_cache": "JAX_ENABLE_COMPILATION_CACHE"}

_state = {"dir": None}


def user_dir(environ=None) -> str:
    """The per-user default: `$XDG_CACHE_HOME/cocoa-jax/jax`, else `~/.cache/cocoa-jax/jax`
    (a relative XDG_CACHE_HOME is ignored, as the XDG specification says)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".cache")
    return os.path.join(base, "cocoa-jax", "jax")


def resolve(flag: str | None = None, environ=None) -> str | None:
    """The cache directory for a `--compile-cache` value (None: the flag was not given), or
    None when the cache is off. See the module docstring for the order."""
    env = os.environ if environ is None else environ
    for value in (flag, env.get(ENV_DIR)):
        if value is not None and str(value).strip():
            value = str(value).strip()
            return None if value.lower() == OFF else os.path.abspath(os.path.expanduser(value))
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return os.path.abspath(os.path.expanduser(env["JAX_COMPILATION_CACHE_DIR"]))
    return user_dir(env)


def settings(path: str | None, *, later: bool = False) -> dict:
    """The JAX options for cache directory `path` (None: off; `later`: on, the directory to be
    set later by whoever knows it, e.g. the sweep runner's RUN_DIR/compile_cache)."""
    if path is None and not later:
        return {"jax_enable_compilation_cache": False, "jax_compilation_cache_dir": None}
    out = {"jax_enable_compilation_cache": True, "jax_compilation_cache_dir": path,
           "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_TIME_SECS,
           "jax_persistent_cache_min_entry_size_bytes": -1}  # -1: no size floor (0 lets JAX pick one)
    if importlib.util.find_spec("filelock") is not None:
        out["jax_compilation_cache_max_size"] = MAX_SIZE_BYTES
    # The user's own JAX_* settings of these thresholds win.
    return {k: v for k, v in out.items()
            if k in ("jax_enable_compilation_cache", "jax_compilation_cache_dir") or _JAX_ENV[k] not in os.environ}


def _env_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def enable(path: str | None, *, later: bool = False) -> str | None:
    """Use cache directory `path` (None: turn the cache off, unless `later`) in this process.
    Returns `path`."""
    values = settings(path, later=later)
    if "jax" in sys.modules:
        import jax

        for name, value in values.items():
            jax.config.update(name, value)
        _reset_if_initialised(jax)
    else:
        for name, value in values.items():
            os.environ[_JAX_ENV[name]] = _env_value(value)
    _state["dir"] = path
    if path is not None and "jax_compilation_cache_max_size" in values:  # the lock exists only then
        prune(path)
    return path


def _last_use(directory: str, key: str, cache_stat) -> int:
    # JAX writes the last use (ns, little-endian) beside each entry; an older layout: the mtime.
    try:
        with open(os.path.join(directory, key + _ATIME_SUFFIX), "rb") as f:
            return int.from_bytes(f.read(), "little")
    except OSError:
        return cache_stat.st_mtime_ns


def prune(path: str, max_entries: int | None = None, *, lock_timeout: float = 2.0) -> int:
    """Remove the least recently used entries of cache directory `path` when it holds more
    than `max_entries` (default `MAX_ENTRIES`), down to `PRUNE_TO` of it. Holds JAX's own file
    lock meanwhile (a process that cannot get it within `lock_timeout` leaves the pruning to a
    later one). Returns the number of entries removed; a missing directory is 0."""
    max_entries = MAX_ENTRIES if max_entries is None else max_entries
    try:
        with os.scandir(path) as it:
            entries = [e for e in it if e.name.endswith(_CACHE_SUFFIX) and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    if len(entries) <= max_entries:
        return 0
    import filelock

    try:
        lock = filelock.FileLock(os.path.join(path, _LOCK_NAME), timeout=lock_timeout)
        lock.acquire()
    except (filelock.Timeout, OSError):
        return 0
    try:
        aged = []
        for entry in entries:
            key = entry.name[:-len(_CACHE_SUFFIX)]
            try:
                aged.append((_last_use(path, key, entry.stat()), key))
            except FileNotFoundError:  # removed meanwhile by another process
                continue
        aged.sort()
        removed = 0
        for _, key in aged[:max(0, len(aged) - int(max_entries * PRUNE_TO))]:
            for suffix in (_CACHE_SUFFIX, _ATIME_SUFFIX):
                try:
                    os.remove(os.path.join(path, key + suffix))
                except FileNotFoundError:
                    pass
            removed += 1
        return removed
    finally:
        lock.release()


def _reset_if_initialised(jax) -> None:
    """JAX opens its cache once per process; a directory set later needs a fresh start."""
    try:
        from jax._src import compilation_cache as cc
    except ImportError:  # pragma: no cover - a future JAX without it
        return
    if cc.is_initialized():
        cc.reset_cache()


def configure(command: str | None, flag: str | None = None) -> str | None:
    """Set the cache up for `command` with its `--compile-cache` value (None if it has no such
    flag or the flag was not given). Returns the directory, or None when off or left to the
    sweep's run directory (`sweep --compile-cache auto`). A flag naming a file is a ValueError."""
    check_flag(flag, allow_auto=command == "sweep")
    if command == "sweep" and flag == "auto":
        return enable(None, later=True)  # the runner sets RUN_DIR/compile_cache once the directory exists
    return enable(resolve(flag))


def current() -> str | None:
    """The directory `configure` / `enable` last set (None: off or never set)."""
    return _state["dir"]


def add_argument(parser, *, auto: str | None = None) -> None:
    """The `--compile-cache DIR|none` flag of a command (`auto`: what `auto` means there)."""
    where = "none" if auto is None else "'auto' (" + auto + "), none"
    parser.add_argument("--compile-cache", default=None, metavar="DIR",
                        help=f"JAX persistent compilation cache: a directory, or {where} (default: "
                             f"${ENV_DIR}, else $XDG_CACHE_HOME/cocoa-jax/jax or ~/.cache/cocoa-jax/jax; "
                             f"a repeated run compiles nothing)")


def check_flag(value: str | None, *, allow_auto: bool = False) -> str | None:
    """A `--compile-cache` value that is not an existing non-directory; raises ValueError."""
    if value is None or value.lower() == OFF or (allow_auto and value == "auto"):
        return value
    path = os.path.expanduser(value)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--compile-cache {value!r} is not a directory")
    return value
