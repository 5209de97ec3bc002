"""`cocoa-jax explain`'s built-in digits demo runs for any encoder of the 32x32 grey digits (the shipped
`digits_vit` as well as `digits`), decided by the architecture's input shape; others need --images.
Only the argument check runs here (no model is loaded)."""
from __future__ import annotations

import pytest

from cocoa_jax import cli
from cocoa_jax.commands import explain
from cocoa_jax.commands.errors import UsageError


def _setup(*flags):
    args = cli.parse(["explain", *flags])
    return explain._check_data_arguments(args, ("cocoa",))


def test_the_demo_follows_the_input_shape():
    assert _setup("--model", "digits_vit")["demo"] is True
    assert _setup()["demo"] is True  # digits, the default
    with pytest.raises(UsageError, match="the built-in demo is for encoders of 32x32 grey digits"):
        _setup("--model", "dinov2_vit", "--weights", ".")
