"""Training of the embedded models (SimCLR digits encoder, digits image-text dual encoder)."""
from __future__ import annotations

from cocoa_jax.records import environment_record  # noqa: F401  (re-exported for the trainers)


def atomic_write_json(path: str, record: dict) -> None:
    """Write `record` as JSON so readers see the old file or the whole new one."""
    from cocoa_jax import files

    files.atomic_write_json(path, record)
