"""Training of the embedded models (SimCLR digits encoder, digits image-text dual encoder)."""
from __future__ import annotations

import platform
import time


def environment_record() -> dict:
    """What a training record states about the software and machine that made it."""
    import flax
    import jax
    import numpy as np
    import optax

    return {"versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                         "numpy": np.__version__, "python": platform.python_version(),
                         "backend": jax.default_backend(), "machine": platform.machine()},
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def atomic_write_json(path: str, record: dict) -> None:
    """Write `record` as JSON so readers see the old file or the whole new one."""
    from cocoa_jax import files

    files.atomic_write_json(path, record)
