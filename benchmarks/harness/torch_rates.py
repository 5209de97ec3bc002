"""The rates of the official way in PyTorch (`tests.reference.torch_side`), timed as the suites
time cocoa-jax: the reference does the work, this file only measures it."""
from __future__ import annotations

import numpy as np

from benchmarks.harness import models as M
from benchmarks.harness.jax_side import units
from benchmarks.harness.timing import time_call
from tests.reference import torch_side as T


def torch_measure(spec, method: str, k: int, n_explicands: int, sz: dict, channels_last: bool,
                  repeats: int, cache: dict, device: str = "cpu") -> dict:
    """Rate (units/s) of the official way on E explicands, model `spec` (`benchmarks.harness.models`) in the
    given layout on `device`; `cache` keeps each (model, layout) built and primed once."""
    import torch

    key = (spec.name, channels_last)
    if key not in cache:
        cache[key] = M.init_torch(spec, channels_last=channels_last).to(device)
        prime = torch.zeros(2, 3, spec.image_size, spec.image_size, requires_grad=True, device=device)
        cache[key](prime.contiguous(memory_format=torch.channels_last) if channels_last else prime).sum().backward()
    model = cache[key]
    rng = np.random.default_rng(1)
    size = spec.image_size
    xs = torch.as_tensor(rng.uniform(-1, 1, (n_explicands, 3, size, size)).astype(np.float32), device=device)
    base = T.blur(xs)
    dirs = np.random.default_rng(3).standard_normal((k, spec.rep_dim)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    target = T.TorchTarget(dirs, single=(k == 1))
    if channels_last:
        xs, base = xs.contiguous(memory_format=torch.channels_last), base.contiguous(memory_format=torch.channels_last)

    def run():
        if method == "rise":  # the official code: one explicand at a time
            return [T.rise(model, target, xs[e:e + 1], base[e:e + 1], sz["rise_masks"], sz["rise_batch"], sz["grid"],
                         channels_last=channels_last) for e in range(n_explicands)]
        if method == "integrated_gradients":  # Captum batches the explicands itself
            return T.integrated_gradients(model, target, xs, base, sz["ig_steps"], sz["ig_batch"] * n_explicands, k,
                                        channels_last)
        if method == "gradient_shap":
            return [T.gradient_shap(model, target, xs[e:e + 1], base[e:e + 1], sz["gs_samples"], k, channels_last)
                    for e in range(n_explicands)]
        if method == "insdel":
            attrs = [rng.uniform(size=(size, size)).astype(np.float32) for _ in range(k)]
            return [T.insertion_deletion(model, target, xs[e:e + 1], base[e:e + 1], attrs, sz["insdel_steps"],
                                       sz["insdel_batch"], channels_last) for e in range(n_explicands)]
        raise ValueError(method)

    def run_synced():
        out = run()
        if device != "cpu":
            torch.cuda.synchronize()
        return out

    with torch.inference_mode(mode=method in ("rise", "insdel")):
        seconds = time_call(run_synced, repeats, warmup=device != "cpu")  # model primed above (CPU)
    return {"rate": units(method, k, sz) * n_explicands / seconds, "seconds": seconds}
