"""Measure the speedup of sharing passes across the K targets of a unit.

Shared: one stacked `Target` (K directions) per explicand: RISE's masked forward passes and
IG/GradientSHAP's forward passes are shared (K backward passes through `jacrev`), and the
evaluation encodes the K attributions' ablated inputs in one batch. Separate: the same work
one target at a time (a scalar target, K jitted calls). Compile time is excluded (each
function is run once before timing).

    python -m cocoa_jax.sweep.bench            # the embedded digits encoder
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import baselines
from cocoa_jax.sweep.config import SweepConfig, digits_reduced
from cocoa_jax.sweep.runner import (Encoder, _make_attribute_fn, _make_evaluate_fn, resolve_datasets,
                                    resolve_encoder, stacked_directions)


def _best_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def sharing_speedup(config: SweepConfig | None = None, *, n_explicands: int = 4, repeats: int = 2,
                    encoder=None, datasets=None, methods=None) -> dict:
    """Seconds for K targets shared vs one at a time, per method and for the evaluation.

    Returns {name: {"shared_s", "separate_s", "speedup"}} for each attribution method and
    "evaluation" (insertion + deletion of K attributions, all measures).
    """
    config = config or digits_reduced()
    spec = resolve_encoder(config, encoder)
    corpus_source, explicand_source = resolve_datasets(config, spec, datasets)
    encode = Encoder(spec, config.eval_batch)
    rng = np.random.default_rng(0)
    xs_np = explicand_source.images(rng.choice(len(explicand_source), n_explicands, replace=False))
    corpus_np = corpus_source.images(np.flatnonzero(corpus_source.labels == corpus_source.labels[0])[: config.corpus_size])
    foil_np = corpus_source.images(rng.choice(len(corpus_source), min(config.foil_size, len(corpus_source)),
                                              replace=False))
    explicand_reps, corpus_reps, foil_reps = encode(xs_np), encode(corpus_np), encode(foil_np)
    directions = jnp.asarray(stacked_directions(config.targets, config.similarity, explicand_reps, corpus_reps,
                                                foil_reps))  # (N, K, D)
    k = directions.shape[1]
    cosine = config.similarity == "cosine"
    xs = jnp.asarray(xs_np)
    base = baselines.gaussian_blur(xs, config.blur_kernel_size, config.blur_sigma)
    keys = jax.random.split(jax.random.key(0), n_explicands)
    shape = tuple(spec.input_shape)
    results = {}
    last_attr = None
    for method in methods or tuple(config.methods):
        settings = config.methods[method]
        shared_fn = _make_attribute_fn(method, settings, spec.encode_fn, tuple([cosine] * k), shape,
                                       config.attribution_batch)
        single_fn = _make_attribute_fn(method, settings, spec.encode_fn, cosine, shape, config.attribution_batch)
        shared = _best_time(lambda: shared_fn(spec.params, xs, base, directions, keys), repeats)
        separate = _best_time(lambda: [single_fn(spec.params, xs, base, directions[:, j], keys) for j in range(k)],
                              repeats)
        results[method] = {"shared_s": shared, "separate_s": separate, "speedup": separate / shared}
        last_attr = shared_fn(spec.params, xs, base, directions, keys)
    if last_attr is not None:
        from cocoa_jax.probe import LinearProbe

        attr = last_attr.mean(axis=-1) if last_attr.ndim == 5 else last_attr  # (N, K, H, W)
        d = explicand_reps.shape[1]
        probe = LinearProbe(jnp.zeros((d, 10)), jnp.zeros(10))
        evaluate = _make_evaluate_fn(spec.encode_fn, config, shape)
        ccs = jnp.stack([directions[0, -1], directions[0, -1]])
        args = (ccs, probe, jnp.asarray(0), jnp.zeros(n_explicands, jnp.int32), jnp.asarray(explicand_reps))
        shared = _best_time(lambda: evaluate(spec.params, xs, base, attr, *args), repeats)
        separate = _best_time(lambda: [evaluate(spec.params, xs, base, attr[:, j:j + 1], *args) for j in range(k)],
                              repeats)
        results["evaluation"] = {"shared_s": shared, "separate_s": separate, "speedup": separate / shared}
    return results


def main() -> None:
    results = sharing_speedup()
    print(f"{'step':<22}{'4 targets shared (s)':>22}{'one at a time (s)':>20}{'speedup':>10}")
    for name, r in results.items():
        print(f"{name:<22}{r['shared_s']:>22.3f}{r['separate_s']:>20.3f}{r['speedup']:>9.2f}x")


if __name__ == "__main__":
    main()
