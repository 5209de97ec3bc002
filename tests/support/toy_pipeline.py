"""The pipeline tests' toy encoder (a softplus of a random projection) and its data."""
import jax
import jax.numpy as jnp
import numpy as np

SHAPE = (12, 12, 2)  # the default blur (21, 5) needs > 10 px
RNG = np.random.default_rng(0)
PROJ = jnp.asarray(RNG.normal(size=(int(np.prod(SHAPE)), 6)), jnp.float32)


def encode_fn(params, xb):
    return jax.nn.softplus(xb.reshape(xb.shape[0], -1) @ params["w"])


class Toy:
    params = {"w": PROJ}
    encode_fn = staticmethod(encode_fn)
    input_shape = SHAPE


XS = jnp.asarray(RNG.uniform(size=(5, *SHAPE)), jnp.float32)
CORPUS = jnp.asarray(RNG.uniform(size=(7, *SHAPE)), jnp.float32)
FOIL = jnp.asarray(RNG.uniform(size=(9, *SHAPE)) * 0.5, jnp.float32)
SMALL = {"integrated_gradients": {"n_steps": 8}, "gradient_shap": {"n_samples": 6},
         "rise": {"n_masks": 16, "grid_size": (2, 2)}, "kernel_shap": {"n_samples": 12, "superpixel": 4}}
