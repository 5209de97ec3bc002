"""The suite's end-to-end section: the paper's protocol on one explicand batch, cocoa-jax (one
program, explicands sharded, K targets per pass) vs the official way (one explicand and one
target at a time)."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import models as M
from benchmarks.harness.jax_side import method_options, shared_model
from benchmarks.harness.sizes import sizes
from benchmarks.harness.timing import block, time_call
from cocoa_jax import explicand_program, meshes


def section_e2e(quick: bool, mesh, peak: float, scale: int = 1) -> dict:
    """The paper's protocol on one batch of explicands: IG, GradientSHAP and RISE with K=4 targets,
    then insertion/deletion of every attribution; cocoa-jax (one program, explicands sharded,
    K targets per pass) vs the official way (one explicand at a time, each target separately)."""
    import torch

    from tests.reference import torch_side as T

    name = "tiny_resnet" if quick else "resnet18_cifar"
    spec = M.tiny_spec() if quick else M.SPECS[name]
    sz = dict(sizes(quick, scale)[name])
    k = 4
    n_e = 2  # the official way is slow: one explicand and one target at a time
    jm = shared_model(spec)
    size = spec.image_size
    rng = np.random.default_rng(5)
    xs_np = rng.uniform(-1, 1, (n_e, size, size, 3)).astype(np.float32)

    def protocol(variables, x, key):
        target = jm.explicand_target(variables, x, k)
        base = explicand_program.PAPER_BASELINE(x)
        keys = jax.random.split(key, 3)
        attrs = []
        for method, method_key in zip(("integrated_gradients", "gradient_shap", "rise"), keys):
            maps = explicand_program.attribute_one(lambda xb: jm.encode(variables, xb), target, method, x, base,
                                                   method_key, **method_options(method, sz))
            attrs.append(maps.mean(-1) if maps.ndim == 4 else maps)  # (K, H, W): channel mean
        all_attrs = jnp.concatenate(attrs)  # (3K, H, W)
        return jm.insdel(variables, x, base, all_attrs, 3 * k, sz)

    mapper = meshes.ExplicandMap(protocol, mesh, in_axes=(None, 0, 0))
    keys = jax.random.split(jax.random.key(0), n_e)
    start = time.perf_counter()
    block(mapper(jm.variables, jnp.asarray(xs_np), keys))
    first = time.perf_counter() - start
    jax_s = time_call(lambda: mapper(jm.variables, jnp.asarray(xs_np), keys), 1, warmup=False)

    model = M.init_torch(spec, channels_last=False)
    dirs = np.random.default_rng(3).standard_normal((k, spec.rep_dim)).astype(np.float32)
    xs_t = torch.as_tensor(xs_np.transpose(0, 3, 1, 2).copy())
    base_t = T.blur(xs_t)

    def official():
        for e in range(n_e):
            x, b = xs_t[e:e + 1], base_t[e:e + 1]
            for t in range(k):  # each target separately, batch of 1 explicand
                target = T.TorchTarget(dirs[t:t + 1], single=True)
                ig = T.integrated_gradients(model, target, x, b, sz["ig_steps"], sz["ig_batch"], 1)[0]
                gs = T.gradient_shap(model, target, x, b, sz["gs_samples"], 1)[0]
                with torch.inference_mode():
                    rs = T.rise(model, target, x, b, sz["rise_masks"], sz["rise_batch"], sz["grid"])[0]
                    attrs = [ig[0].mean(0).detach().numpy(), gs[0].mean(0).detach().numpy(), rs.numpy()]
                    T.insertion_deletion(model, target, x, b, attrs, sz["insdel_steps"], sz["insdel_batch"])

    start = time.perf_counter()
    official()
    torch_s = time.perf_counter() - start
    row = {"model": name, "explicands": n_e, "targets": k, "jax_s": jax_s, "jax_first_call_s": first,
           "official_s": torch_s, "speedup": torch_s / jax_s}
    print(f"  end to end ({n_e} explicands, K={k}): cocoa-jax {jax_s:.1f} s (first call incl. compile {first:.1f} s), "
          f"official way {torch_s:.1f} s, speed-up {row['speedup']:.1f}x", flush=True)
    return row
