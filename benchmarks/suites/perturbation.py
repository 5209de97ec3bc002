"""KernelSHAP coalitions/s and Occlusion windows/s, cocoa-jax vs Captum, same machine, same run.

    python -m benchmarks.suites.perturbation [--quick]

Model pair from benchmarks/models.py (random weights; only speed is compared): --quick uses
the tiny 16 px CIFAR-style ResNet pair, otherwise the CIFAR ResNet-18 pair (32 px). Target:
cosine similarity of the representation with K unit directions (K = 1 and K = 4; cocoa-jax
reads all K from every forward pass, Captum explains one target per call, so K calls).
KernelSHAP on 4 x 4 superpixels with the same n_samples and batch size on both sides;
Occlusion with 4 x 4 windows, stride 2, every channel occluded together. Times exclude
compilation (one warm-up call); the ratio is cocoa-jax throughput / Captum throughput. Roofline:
XLA's FLOPs of one forward pass of one image x cocoa-jax's forward passes/s / the float32 matmul
peak measured in the same run (the regression and mask work are left out: they are small).
Rows go to benchmarks/results/RESULTS_perturbation.json (not with --quick).
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS
from benchmarks.harness import models as M
from benchmarks.harness.machine import cpu_name
from benchmarks.harness.roofline import fraction, measure_peak, program_flops
from benchmarks.harness.timing import time_call
from tests.reference.torch_side import TorchTarget, forward_fn
from cocoa_jax.attribution_methods import kernel_shap, occlusion, superpixel_map
from cocoa_jax import files


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and counts (< 1 minute)")
    args = parser.parse_args(argv)
    import torch
    from captum.attr import KernelShap, Occlusion

    spec = M.tiny_spec() if args.quick else M.SPECS["resnet18_cifar"]
    n_samples, batch, repeats = (128, 64, 1) if args.quick else (1000, 100, 2)
    module, variables = M.init_flax(spec)
    model = M.init_torch(spec)
    size = spec.image_size
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(size, size, 3)).astype(np.float32)
    base = np.zeros_like(x)
    labels = superpixel_map(size, size, 4, 4)
    peak = measure_peak(256 if args.quick else 4096)  # as benchmarks.suites.rates and digits: a small matmul understates the peak
    forward_flops = program_flops(lambda v, xb: module.apply(v, xb), variables, jnp.asarray(x)[None])
    print(f"float32 matmul peak {peak['peak']:.1f} GFLOP/s; one forward pass {forward_flops / 1e6:.1f} MFLOP",
          flush=True)
    xt, bt = (torch.tensor(a).permute(2, 0, 1)[None] for a in (x, base))
    mask_t = torch.tensor(labels)[None, None].expand(1, 3, size, size)
    rows = []
    for k in (1, 4):
        directions = rng.normal(size=(k, spec.rep_dim)).astype(np.float32)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        d = jnp.asarray(directions)

        def f(xi, d=d, k=k):
            rep = module.apply(variables, xi[None])[0]
            scores = d @ (rep / jnp.maximum(jnp.linalg.norm(rep), 1e-12))
            return scores[0] if k == 1 else scores

        ks = jax.jit(lambda xi, f=f: kernel_shap(f, xi, base, jax.random.key(0), n_samples=n_samples,
                                                 superpixel=4, batch_size=batch))
        occ = jax.jit(lambda xi, f=f: occlusion(f, xi, base, window=(4, 4), stride=(2, 2), batch_size=batch))
        n_windows = ((size - 4) // 2 + 1) ** 2
        tf = forward_fn(model, TorchTarget(directions, single=False), channels_last=False)
        captum_ks = KernelShap(tf)
        captum_occ = Occlusion(tf)

        def run_captum_ks():
            with torch.no_grad():
                return [captum_ks.attribute(xt, bt, target=t, feature_mask=mask_t, n_samples=n_samples,
                                            perturbations_per_eval=batch) for t in range(k)]

        def run_captum_occ():
            with torch.no_grad():
                return [captum_occ.attribute(xt, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=bt,
                                             target=t, perturbations_per_eval=batch) for t in range(k)]

        for name, ours, theirs, units in (("KernelSHAP", lambda: ks(x), run_captum_ks, n_samples),
                                          ("Occlusion", lambda: occ(x), run_captum_occ, n_windows)):
            t_ours = time_call(ours, repeats)
            t_captum = time_call(theirs, repeats)
            row = dict(method=name, model=spec.name, k=k, units=units, ours_per_s=units / t_ours,
                       captum_per_s=units / t_captum, ratio=t_captum / t_ours,
                       roofline=fraction(forward_flops, units / t_ours, peak["peak"]))
            rows.append(row)
            unit = "coalitions" if name == "KernelSHAP" else "windows"
            print(f"{name:10s} {spec.name} K={k}: cocoa-jax {row['ours_per_s']:9.1f} {unit}/s, "
                  f"Captum {row['captum_per_s']:9.1f} {unit}/s, ratio {row['ratio']:.2f}x, "
                  f"roofline {row['roofline']:.0%}", flush=True)
    print(f"(jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads)")
    if not args.quick:
        record = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(),
                      cpus=os.cpu_count(), load_avg_1min=os.getloadavg()[0], peak_gflops=peak, jax=jax.__version__,
                      torch=torch.__version__, n_samples=n_samples, batch=batch, rows=rows)
        files.atomic_write_json(os.path.join(RESULTS, "RESULTS_perturbation.json"), record, indent=1)
    return rows


if __name__ == "__main__":
    main()
