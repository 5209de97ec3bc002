"""The reference side: the same work done the official way, in PyTorch with Captum (on the
device of the inputs: CPU, or CUDA for the GPU benchmark).

* RISE like the official COCOA code: masks made per batch (Bernoulli grid, bilinear
  upsampling with `F.interpolate`, random crop per mask), batched masked forward passes,
  saliency accumulated as scores^T @ masks. K targets are read from one pass.
* Captum `IntegratedGradients` (Gauss-Legendre) and `GradientShap`; Captum explains one target
  per call, so K targets are K calls.
* Insertion / deletion: pixels sorted by attribution, keep-masks built per step, batched
  forward passes of the blended inputs.
Layouts: default NCHW (as the official code runs) or channels-last.
"""
from __future__ import annotations

import numpy as np


def _torch():
    import torch
    return torch


class TorchTarget:
    """Cosine similarity of representations with K unit directions: (N, D) -> (N, K) or (N,)."""

    def __init__(self, directions: np.ndarray, single: bool):
        torch = _torch()
        self.directions = torch.as_tensor(np.asarray(directions, np.float32))  # (K, D)
        self.single = single

    def __call__(self, reps):
        if self.directions.device != reps.device:
            self.directions = self.directions.to(reps.device)
        reps = reps / reps.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scores = reps @ self.directions.T
        return scores[:, 0] if self.single else scores


def forward_fn(model, target: TorchTarget, channels_last: bool):
    torch = _torch()

    def f(inputs):
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return target(model(inputs))

    return f


def rise(model, target, x, baseline, n_masks: int, batch_size: int, grid: int, keep_prob: float = 0.5,
         channels_last: bool = False, seed: int = 0):
    """x, baseline: (1, C, H, W). Returns (K, H, W) saliency."""
    torch = _torch()
    F = torch.nn.functional
    device = x.device
    gen = torch.Generator(device=device).manual_seed(seed)
    size = x.shape[-1]
    cell = -(-size // grid)
    up = (grid + 1) * cell
    f = forward_fn(model, target, channels_last)
    total = None
    with torch.no_grad():
        for start in range(0, n_masks, batch_size):
            b = min(batch_size, n_masks - start)
            grids = (torch.rand(b, 1, grid, grid, generator=gen, device=device) < keep_prob).float()
            upsampled = F.interpolate(grids, size=(up, up), mode="bilinear", align_corners=False)
            shifts = torch.randint(0, cell, (b, 2), generator=gen, device=device).tolist()
            masks = torch.stack([upsampled[i, 0, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(shifts)])
            m = masks[:, None]
            scores = f(x * m + baseline * (1 - m))
            scores = scores[:, None] if scores.ndim == 1 else scores
            term = scores.T @ masks.reshape(b, -1)
            total = term if total is None else total + term
    return (total / (n_masks * keep_prob)).reshape(-1, size, size)


def integrated_gradients(model, target, x, baseline, n_steps: int, internal_batch_size: int, k: int,
                         channels_last: bool = False):
    """Captum IG, one call per target. x: (E, C, H, W). Returns list of K attributions."""
    from captum.attr import IntegratedGradients
    ig = IntegratedGradients(forward_fn(model, target, channels_last))
    kw = dict(baselines=baseline, n_steps=n_steps, method="gausslegendre", internal_batch_size=internal_batch_size)
    if k == 1:
        return [ig.attribute(x, **kw)]
    return [ig.attribute(x, target=t, **kw) for t in range(k)]


def gradient_shap(model, target, x, baseline, n_samples: int, k: int, channels_last: bool = False,
                  stdev: float = 0.2):
    """Captum GradientShap, one call per target. baseline: (M, C, H, W)."""
    torch = _torch()
    from captum.attr import GradientShap
    torch.manual_seed(0)
    gs = GradientShap(forward_fn(model, target, channels_last))
    kw = dict(baselines=baseline, n_samples=n_samples, stdevs=stdev)
    if k == 1:
        return [gs.attribute(x, **kw)]
    return [gs.attribute(x, target=t, **kw) for t in range(k)]


def insertion_deletion(model, target, x, baseline, attributions, n_steps: int, batch_size: int,
                       channels_last: bool = False):
    """Insertion and deletion curves of one explicand for each attribution (list of (H, W)).

    Returns (len(attributions), 2, n_steps + 1, K) values; 2 * (n_steps + 1) forward passes each.
    """
    torch = _torch()
    f = forward_fn(model, target, channels_last)
    size = x.shape[-1]
    n_features = size * size
    base, rem = divmod(n_features, n_steps)
    steps = np.full(n_steps + 1, base)
    steps[0] = 0
    steps[1:rem + 1] += 1
    device = x.device
    counts = torch.as_tensor(np.cumsum(steps), device=device)
    out = []
    with torch.no_grad():
        for attribution in attributions:
            order = torch.argsort(-torch.as_tensor(attribution, device=device).reshape(-1), stable=True)
            rank = torch.empty(n_features, dtype=torch.long, device=device)
            rank[order] = torch.arange(n_features, device=device)
            changed = (rank[None, :] < counts[:, None]).float().reshape(-1, 1, size, size)
            curves = []
            for keep in (changed, 1 - changed):  # insertion, deletion
                values = []
                for start in range(0, keep.shape[0], batch_size):
                    m = keep[start:start + batch_size]
                    scores = f(x * m + baseline * (1 - m))
                    values.append(scores[:, None] if scores.ndim == 1 else scores)
                curves.append(torch.cat(values))
            out.append(torch.stack(curves))
    return torch.stack(out)


def blur(x):
    """torchvision-free Gaussian blur (21, sigma 5, reflect), (E, C, H, W)."""
    torch = _torch()
    radius, sigma = 10, 5.0
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device) / sigma) ** 2)
    taps = taps / taps.sum()
    c = x.shape[1]
    padded = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = torch.nn.functional.conv2d(padded, taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(rows, taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
