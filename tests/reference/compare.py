"""Helpers comparing a converted Flax model with its PyTorch reference."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch


def rel_err(actual, expected) -> float:
    """||actual - expected|| / ||expected|| over the whole array."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def network_reps(model, x) -> np.ndarray:
    """The raw network of a `LoadedModel` (`network_fn`: input as the torch module takes it, no
    normalisation inside), jitted: what a parity test compares with the torch reference."""
    return np.asarray(jax.jit(model.network_fn)(model.params, jnp.asarray(x)))


def flax_reps_and_cosine_grad(encode_fn, params, x, direction):
    """reps = encode_fn(params, x) and d/dx sum_n <reps_n/|reps_n|, direction> (one jit)."""
    def target(inputs):
        reps = encode_fn(params, inputs)
        unit = reps / jnp.linalg.norm(reps, axis=-1, keepdims=True)
        return jnp.sum(unit @ direction), reps

    (_, reps), grad = jax.jit(jax.value_and_grad(target, has_aux=True))(jnp.asarray(x))
    return np.asarray(reps), np.asarray(grad)


def torch_reps_and_cosine_grad(encode, x_nhwc: np.ndarray, direction: np.ndarray):
    """Same quantities from a torch encoder taking NCHW; gradient returned as NHWC."""
    x = torch.tensor(np.transpose(x_nhwc, (0, 3, 1, 2)), requires_grad=True)
    reps = encode(x)
    unit = reps / reps.norm(dim=-1, keepdim=True)
    (unit @ torch.from_numpy(direction)).sum().backward()
    return reps.detach().numpy(), np.transpose(x.grad.numpy(), (0, 2, 3, 1))
