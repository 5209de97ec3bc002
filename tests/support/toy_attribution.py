"""Toy targets of the attribution-method tests, with float64 NumPy gradients: a separable sin (IG
is exact per pixel), a non-separable tanh, and a K = 3 vector output."""
import jax.numpy as jnp
import numpy as np

SHAPE = (5, 6, 2)
RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, int(np.prod(SHAPE)))) / 4  # 3 hidden units
FREQ = RNG.uniform(0.5, 2.0, size=SHAPE)


def f_sin(x):
    """Separable: IG attribution of pixel i is exactly sin(w_i x_i) - sin(w_i b_i)."""
    return jnp.sum(jnp.sin(jnp.asarray(FREQ, x.dtype) * x))


def f_tanh(x):
    """Non-separable scalar: sum tanh(W x)."""
    return jnp.sum(jnp.tanh(jnp.asarray(W, x.dtype) @ x.reshape(-1)))


def grad_tanh_np(x):
    """float64 gradient of f_tanh."""
    hidden = W @ np.asarray(x, np.float64).reshape(-1)
    return (W.T @ (1 - np.tanh(hidden) ** 2)).reshape(SHAPE)


def f_vec(x):
    """K = 3 outputs: tanh(W x)."""
    return jnp.tanh(jnp.asarray(W, x.dtype) @ x.reshape(-1))


def jac_vec_np(x):
    hidden = W @ np.asarray(x, np.float64).reshape(-1)
    return ((1 - np.tanh(hidden) ** 2)[:, None] * W).reshape((3,) + SHAPE)
