"""Fixtures of the attribution-method tests: one explicand and one baseline of the toy shape."""
import jax.numpy as jnp
import pytest

from tests.support.toy_attribution import RNG, SHAPE


@pytest.fixture
def x():
    return jnp.asarray(RNG.uniform(size=SHAPE), jnp.float32)


@pytest.fixture
def baseline():
    return jnp.asarray(RNG.uniform(size=SHAPE) * 0.3, jnp.float32)
