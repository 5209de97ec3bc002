"""What every record a command writes says about the software and machine that made it."""
from __future__ import annotations

import platform
import time


def environment_record() -> dict:
    """{"versions": {cocoa_jax, jax, flax, optax, numpy, python, backend, machine}, "created": ...}."""
    import flax
    import jax
    import numpy as np
    import optax

    import cocoa_jax

    return {"versions": {"cocoa_jax": getattr(cocoa_jax, "__version__", "?"), "jax": jax.__version__,
                         "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
                         "python": platform.python_version(), "backend": jax.default_backend(),
                         "machine": platform.machine()},
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
