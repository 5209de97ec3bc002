"""Rates of the embedded digits encoder: `python -m benchmarks.suites.digits [--quick]`.

RISE masks/s and IG gradient steps/s for one explicand, K=1 and K=4 targets (COCOA, corpus,
label-free, contrastive label-free). Reference in the same run: our own slower path, the K=4
targets run one at a time (4 scalar targets, as the official code does). Roofline fraction:
XLA cost-analysis FLOPs of one unit x rate / float32 matmul peak measured in the same run.
Appends its table to benchmarks/results/RESULTS_digits.md (or --out).
"""
from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__" and "jax" not in sys.modules:  # before JAX starts: one device per core
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={os.cpu_count() or 1}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import RESULTS  # noqa: E402
from benchmarks.harness.roofline import measure_peak  # noqa: E402
from benchmarks.harness.timing import time_call  # noqa: E402
from cocoa_jax import explicand_program, meshes, models, targets  # noqa: E402
from cocoa_jax.data.digits import load_digits_split  # noqa: E402


def _targets(model, data, x):
    encode = jax.jit(model.encode_fn)
    corpus = encode(model.params, data.x_train[data.y_train == 3][:100])
    foil = encode(model.params, data.x_train[-500:])
    own = encode(model.params, x[None])[0]
    return [targets.cocoa(corpus, foil), targets.corpus(corpus), targets.label_free(own),
            targets.contrastive_label_free(own, foil)]


def _program(model, method, options, mesh):
    """jitted (params, x, key, target) -> attributions for one explicand: the explicand step
    (`explicand_program.attribute_one`) against the paper's baseline."""
    def run(params, x, key, target):
        return explicand_program.attribute_one(lambda xb: model.encode_fn(params, xb), target, method, x,
                                               explicand_program.PAPER_BASELINE(x), key, mesh=mesh, **options)
    return jax.jit(run)


def _unit_flops(model, method, k):
    """FLOPs of one mask (forward of 1 image) or one IG step (forward + K backward)."""
    params, x = model.params, jnp.zeros((1,) + model.input_shape)
    direction = jnp.ones((k, model.representation_dim)) if k > 1 else jnp.ones(model.representation_dim)
    target = targets.Target(direction, (True,) * k if k > 1 else True)
    f = lambda p, xb: target(model.encode_fn(p, xb))
    fn = f if method == "rise" else (jax.grad(lambda p, xb: f(p, xb).sum(), argnums=1) if k == 1
                                     else jax.jacrev(lambda p, xb: f(p, xb)[0], argnums=1))
    cost = jax.jit(fn).lower(params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites.digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "RESULTS_digits.md"))
    args = parser.parse_args(argv)
    sizes = {"masks": 200, "steps": 8} if args.quick else {"masks": 2000, "steps": 50}
    repeats = 1 if args.quick else 3
    model, data = models.load("digits"), load_digits_split(seed=0)
    x = jnp.asarray(data.x_test[0])
    parts = _targets(model, data, x)
    mesh = meshes.make_mesh()
    # Inputs of a program whose batches are split over the mesh must live on all its devices.
    params, x, parts = jax.device_put((model.params, x, parts), meshes.replicated_sharding(mesh))
    peak = measure_peak(512 if args.quick else 4096, repeats)["peak"]
    key = jax.random.key(0)
    rows = []
    cells = (("rise", "masks/s", sizes["masks"], {"n_masks": sizes["masks"], "grid_size": (4, 4), "batch_size": 100}),
             ("integrated_gradients", "steps/s", sizes["steps"], {"n_steps": sizes["steps"]}))
    for method, unit, count, options in cells:
        program = _program(model, method, options, mesh)
        call = lambda t: program(params, x, key, t)
        one = time_call(lambda: call(parts[0]), repeats)
        stacked = targets.stack(parts)
        shared = time_call(lambda: call(stacked), repeats)
        separate = time_call(lambda: [call(t) for t in parts], repeats)
        for k, seconds, ref in ((1, one, None), (4, shared, separate)):
            rate = count / seconds
            roofline = _unit_flops(model, method, k) * rate / (peak * 1e9)
            rows.append(f"| {method} | {k} | {rate:.1f} {unit} | "
                        + (f"{count / ref:.1f} | {ref / seconds:.2f}x" if ref else "- | -")
                        + f" | {roofline:.0%} |")
    header = (f"## Embedded digits encoder (32x32x1), one explicand, {jax.device_count()} x "
              f"{jax.devices()[0].platform}, matmul peak {peak:.0f} GFLOP/s\n\n"
              "| method | K | cocoa-jax | K targets one at a time (same units) | speed-up of sharing | roofline |\n"
              "|---|---|---|---|---|---|\n")
    text = header + "\n".join(rows) + "\n"
    print(text)
    with open(args.out, "w") as fh:
        fh.write(f"Written by `python -m benchmarks.suites.digits`; jax {jax.__version__}.\n\n" + text)
    return text


if __name__ == "__main__":
    main()
