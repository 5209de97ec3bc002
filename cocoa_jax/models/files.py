"""Writing model directories so that a failure never leaves a partial one."""
from __future__ import annotations

import contextlib
import os
import shutil


@contextlib.contextmanager
def atomic_directory(directory: str):
    """Yield a temporary sibling path of `directory` to write into (not created). On success it
    replaces `directory` (the old one is removed only then); on any failure it is removed and
    `directory` is left as it was."""
    tmp = f"{directory}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    try:
        yield tmp
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
