"""Writing model directories so that a failure never leaves a partial one (`cocoa_jax.files`)."""
from __future__ import annotations

from cocoa_jax.files import atomic_directory

__all__ = ["atomic_directory"]
