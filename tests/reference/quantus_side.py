"""The Quantus 0.6 side of the faithfulness checks (tests/evaluation/test_faithfulness_quantus.py).

One small random network twice, with the same weights: `TargetNet` in PyTorch (what Quantus
calls) and `jax_encode` + a cosine target (what cocoa-jax scores). Quantus scores a class output;
`TargetNet` outputs two "logits", [target(x), threshold]: with softmax=False and label 0, the
value Quantus reads IS the embedding target cocoa-jax scores, and ROAD's accuracy (argmax == 0)
is whether the target exceeds the threshold. Randomness is pinned by feeding cocoa-jax's draws to
Quantus (`replayed_choice`). Imports torch and quantus: import this module lazily.
"""
from __future__ import annotations

import contextlib

import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

HEIGHT = WIDTH = 16
CHANNELS = 1
HIDDEN, DIM = 16, 8


def weights(seed: int = 0) -> dict:
    """Random weights: w1 (H*W*C, HIDDEN), b1, w2 (HIDDEN, DIM), a unit direction (DIM,)."""
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 1 / np.sqrt(HEIGHT * WIDTH * CHANNELS), (HEIGHT * WIDTH * CHANNELS, HIDDEN)),
            "b1": rng.normal(0, 0.1, HIDDEN), "w2": rng.normal(0, 1 / np.sqrt(HIDDEN), (HIDDEN, DIM)),
            "direction": unit_vector(rng.normal(0, 1, DIM))}


def unit_vector(v):
    """v / |v|: cocoa-jax's cosine target is <r / |r|, direction> (the direction as given), torch's
    cosine_similarity normalises both sides; with a unit direction they are the same function."""
    return v / np.linalg.norm(v)


def jax_encode(w: dict):
    """(B, H, W, C) -> (B, DIM): tanh(flatten(x) w1 + b1) w2 (row-major H, W, C flatten)."""
    w1, b1, w2 = (jnp.asarray(w[k], jnp.float32) for k in ("w1", "b1", "w2"))
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2


class TargetNet(nn.Module):
    """NCHW images -> (B, 2) = [cos(encode(x), direction), threshold]."""

    def __init__(self, w: dict, threshold: float = 0.0):
        super().__init__()
        for name in ("w1", "b1", "w2", "direction"):
            self.register_buffer(name, torch.tensor(np.asarray(w[name], np.float32)))
        self.threshold = float(threshold)

    def forward(self, x):
        flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # the JAX side's H, W, C order
        reps = torch.tanh(flat @ self.w1 + self.b1) @ self.w2
        target = torch.nn.functional.cosine_similarity(reps, self.direction[None], dim=-1, eps=1e-12)
        return torch.stack([target, torch.full_like(target, self.threshold)], dim=-1)


def run(metric, w: dict, images_nhwc, maps_nhw, *, threshold: float = 0.0, **call) -> np.ndarray:
    """A Quantus metric instance called on the torch twin: x NCHW, label 0, maps (N, 1, H, W);
    `call`: more arguments of the metric's __call__ (e.g. batch_size)."""
    model = TargetNet(w, threshold).eval()
    x = np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2))
    a = np.asarray(maps_nhw, np.float32)[:, None]
    with numpy_trapz():
        return metric(model=model, x_batch=x, y_batch=np.zeros(len(x), int), a_batch=a, device="cpu",
                      softmax=False, channel_first=True, **call)


@contextlib.contextmanager
def numpy_trapz():
    """Quantus 0.6 calls `np.trapz`, which NumPy 2.4 removed; within the block it is `np.trapezoid`
    (the same trapezoid rule under its new name)."""
    missing = not hasattr(np, "trapz")
    if missing:
        np.trapz = np.trapezoid
    try:
        yield
    finally:
        if missing:
            del np.trapz


@contextlib.contextmanager
def replayed_choice(module, draws):
    """Within the block, `module.np.random.choice(...)` returns the next row of `draws` (the subsets
    cocoa-jax drew), so Quantus perturbs exactly the same pixels."""
    rows = iter(np.asarray(draws))
    original = module.np.random.choice
    module.np.random.choice = lambda *args, **kwargs: next(rows)
    try:
        yield
    finally:
        module.np.random.choice = original
