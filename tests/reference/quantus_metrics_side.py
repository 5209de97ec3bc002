"""The Quantus 0.6 side of the robustness, complexity, randomisation and localisation checks.

A tiny classifier twice, with the same weights: `TinyNet` in PyTorch (what Quantus randomises
layer by layer) and `jax_logits` (what cocoa-jax explains), linked by `jax_params`. Quantus is
given `explain_func` = the JAX gradient map of the classifier it hands over (converted), so both
sides score the same maps and the checks compare the metrics' arithmetic, their noise and their
randomised models, which are pinned: Quantus's noise and layer states are recorded or replayed and
fed to cocoa-jax. Imports torch and quantus: import this module lazily (tests/evaluation).
"""
from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

HEIGHT = WIDTH = 8
CHANNELS = 3
CLASSES = 5


class TinyNet(nn.Module):
    """conv 3x3 (3 -> 4) + ReLU + linear (4 H W -> 5 logits); NCHW input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(CHANNELS, 4, 3, padding=1)
        self.fc = nn.Linear(4 * HEIGHT * WIDTH, CLASSES)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


def jax_params(model: TinyNet) -> dict:
    """The weights of `model` as {"conv": {w (3,3,Cin,Cout), b}, "fc": {w (F, 5), b}}, float32."""
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    return {"conv": {"w": jnp.asarray(state["conv.weight"].transpose(2, 3, 1, 0)), "b": jnp.asarray(state["conv.bias"])},
            "fc": {"w": jnp.asarray(state["fc.weight"].T), "b": jnp.asarray(state["fc.bias"])}}


def jax_logits(params: dict, images: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, 5) logits, the same function as TinyNet on NCHW input."""
    h = jax.lax.conv_general_dilated(images, params["conv"]["w"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["conv"]["b"]
    h = jnp.transpose(jax.nn.relu(h), (0, 3, 1, 2)).reshape(images.shape[0], -1)  # torch's C, H, W flatten
    return h @ params["fc"]["w"] + params["fc"]["b"]


@jax.jit
def _gradient_maps(params, images, labels):
    def one(image, label):
        return jnp.mean(jax.grad(lambda im: jax_logits(params, im[None])[0, label])(image), axis=-1)

    return jax.vmap(one)(images, labels)


def gradient_maps(params: dict, images_nhwc, labels) -> np.ndarray:
    """Channel-mean input gradients of logit `labels[n]`: (N, H, W) float32 (one compiled program)."""
    return np.asarray(_gradient_maps(params, jnp.asarray(images_nhwc, jnp.float32), jnp.asarray(labels)))


def quantus_explain_func(record: list | None = None):
    """A Quantus `explain_func`: the JAX gradient maps (N, 1, H, W) of the torch model it is given;
    each call's (inputs NCHW, targets) is appended to `record`."""
    def explain(model, inputs, targets, **kwargs):
        inputs = np.asarray(inputs, np.float32)
        if record is not None:
            record.append((inputs.copy(), np.asarray(targets).copy()))
        maps = gradient_maps(jax_params(model), inputs.transpose(0, 2, 3, 1), np.asarray(targets))
        return maps[:, None]

    return explain


def quantus_cascade(model: TinyNet, order: str = "top_down", seed: int = 42) -> list[tuple[str, dict]]:
    """Quantus's own randomised models (its `get_random_layer_generator`), as JAX params per step."""
    from quantus.helpers.model.pytorch_model import PyTorchModel

    wrapped = PyTorchModel(model=copy.deepcopy(model), channel_first=True, softmax=False, device="cpu")
    return [(name, jax_params(layer_model)) for name, layer_model in wrapped.get_random_layer_generator(order, seed)]


def to_nchw(images_nhwc) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2))


def data(n: int = 4, seed: int = 0):
    """n explicands (n, H, W, C) in [0, 1) and labels (n,)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, HEIGHT, WIDTH, CHANNELS)).astype(np.float32), rng.integers(0, CLASSES, n)


def one_hot_targets(labels):
    """Per-explicand stacked Targets (direction (n, 1, 5), dot product): target = logit labels[n]."""
    from cocoa_jax.targets import Target

    return Target(jnp.asarray(np.eye(CLASSES, dtype=np.float32)[np.asarray(labels)][:, None]), (False,))


def pixel_explainer(method: str = "vanilla_gradients", **options):
    """cocoa-jax's explainer of method `method` with channel-mean (K, H, W) maps, like Quantus's maps."""
    from cocoa_jax.evaluation.scoring import method_explainer
    from cocoa_jax.evaluation.table import pixel_scores

    explain = method_explainer(method, **options)
    return lambda encode, target, x, baseline, key: pixel_scores(explain(encode, target, x, baseline, key))


def contexts(params, labels, images, **fields):
    """A batch of Contexts (leading n axis on per-explicand fields), for `jax.vmap(metric.fn)`."""
    from cocoa_jax.evaluation.table import Context

    return Context(target=one_hot_targets(labels), baseline=jnp.zeros_like(jnp.asarray(images)), params=params,
                   encode_fn=jax_logits, **fields)


def run_metric(fn, ctx, images, maps, key, **options):
    """fn (a metric function or a `Metric` record) vmapped over explicands (explicand i with key fold_in(key, i)) and jitted: (n, K) float64.
    ctx's per-explicand fields carry a leading n axis; params and randomized_params are shared."""
    import dataclasses

    from cocoa_jax.evaluation.table import Metric

    if isinstance(fn, Metric):  # a record: its defaults under the given options
        fn, options = fn.fn, fn.resolved_options(options)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(len(images)))

    def one(target, baseline, mask, alternative, x, m, k):
        c = dataclasses.replace(ctx, target=target, baseline=baseline, mask=mask, alternative_target=alternative)
        return fn(c, x, m, k, **options)

    out = jax.jit(jax.vmap(one))(ctx.target, ctx.baseline, ctx.mask, ctx.alternative_target,
                                 jnp.asarray(images), jnp.asarray(maps), keys)
    return np.asarray(out, np.float64)
