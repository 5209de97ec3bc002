"""Ctrl-C (SIGINT) and SIGTERM for the `cocoa-jax` console command: one line, no partial outputs.

`install(command)` runs first thing in the console entry point. It blocks SIGINT and SIGTERM in
the main thread, so every thread started later (XLA's, orbax's, tqdm's) inherits the block and
none of them is ever interrupted inside native code, and starts a daemon thread that waits for
them with `sigwait`. A thread that already existed (OpenBLAS's, started when numpy loads) can
still receive one; Python's own handler then writes to a wakeup pipe that a second daemon
thread watches. Either thread then: takes the write lock of `cocoa_jax.files` (a commit in
progress completes, one not started never starts), deletes the registered temporaries,
prints `cocoa-jax CMD: interrupted (Ctrl-C)` (plus the command's detail, see `set_detail`) and
leaves with `os._exit(130)` (143 for SIGTERM): no KeyboardInterrupt unwinding through JAX, no
interpreter teardown, no XLA finalisers. Child processes start with the signals unblocked
and their default handlers.

Only the standard library is imported here: it must run before JAX is loaded.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from cocoa_jax import files

SIGNALS = (signal.SIGINT, signal.SIGTERM)
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, what shells report
WHAT = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}

_state = {"prog": "cocoa-jax", "detail": None, "installed": False}
_once = threading.Lock()


def set_command(command: str | None) -> None:
    """Name the command in the interrupt line (`cocoa-jax CMD: interrupted ...`)."""
    _state["prog"] = f"cocoa-jax {command}" if command else "cocoa-jax"


def set_detail(build) -> None:
    """`build()` -> text appended to the interrupt line (e.g. what is finished), or None."""
    _state["detail"] = build


def detail() -> str | None:
    """The command's detail now (what `set_detail` builds), or None; never raises."""
    build = _state["detail"]
    if build is None:
        return None
    try:
        return build() or None
    except Exception:  # the line must come out even if the detail cannot be built
        return None


def installed() -> bool:
    return bool(_state["installed"])


def message(signum: int = signal.SIGINT) -> str:
    """The one line printed for `signum`."""
    line = f"{_state['prog']}: {WHAT.get(signum, f'signal {signum}')}"
    text = detail()
    return f"{line}: {text}" if text else line


def _shut_down(signum: int) -> None:
    if not _once.acquire(blocking=False):
        return  # the other watcher thread is already at it
    # Wait for a commit in progress (renames, or a directory being written); bounded, so a
    # stuck writer cannot make Ctrl-C hang forever.
    files._PAUSE_ENDS.set()  # a test's pause inside the commit ends now
    files._LOCK.acquire(timeout=120)
    files.remove_temporaries()
    line = message(signum)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    lead = "\n" if _isatty(2) else ""  # end a progress bar's line on a terminal
    try:
        os.write(2, f"{lead}{line}\n".encode())
        # Whatever the main thread prints in the last microseconds goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    except OSError:
        pass
    os._exit(STATUS.get(signum, 128 + signum))


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _wait_signals() -> None:
    while True:
        _shut_down(signal.sigwait(set(SIGNALS)))


def _watch_wakeup(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        for signum in data:
            if signum in STATUS:
                _shut_down(signum)


def _ignore(signum, frame) -> None:
    """Python-level handler: the watcher threads act; the main thread must not raise."""


def _restore_in_child() -> None:
    for signum in SIGNALS:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass


def _unblock_for_children() -> None:
    """Processes started by `subprocess` inherit the calling thread's signal mask across exec:
    unblock around their creation (a signal that lands meanwhile goes through the wakeup pipe)."""
    import subprocess

    original = subprocess.Popen._execute_child
    if getattr(original, "_cocoa_jax_unblocks", False):
        return

    def _execute_child(self, *args, **kwargs):
        previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        try:
            return original(self, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    _execute_child._cocoa_jax_unblocks = True
    subprocess.Popen._execute_child = _execute_child
    os.register_at_fork(after_in_child=_restore_in_child)


def finish() -> None:
    """Call in the main thread when the command has returned, before the interpreter ends.

    A watcher that took a signal moments earlier may still be waiting for the GIL or for a
    commit to finish; give it the chance to act (it exits the process with 130) instead of
    letting the interpreter end under it, which would drop the signal.
    """
    if not _state["installed"]:
        return
    import time

    time.sleep(0.1)
    if _once.locked():
        threading.Event().wait()  # the watcher ends the process with os._exit


def install(command: str | None = None) -> None:
    """Take over SIGINT and SIGTERM for this process (call in the main thread, before JAX loads)."""
    set_command(command)
    if _state["installed"] or not hasattr(signal, "pthread_sigmask"):
        return  # (no POSIX signal masks: `main` still turns Ctrl-C into one line and 130)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for signum in SIGNALS:
        signal.signal(signum, _ignore)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    threading.Thread(target=_wait_signals, name="cocoa-jax-signals", daemon=True).start()
    threading.Thread(target=_watch_wakeup, args=(read_fd,), name="cocoa-jax-signal-wakeup", daemon=True).start()
    _unblock_for_children()
    _state["installed"] = True
