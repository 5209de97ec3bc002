"""The cocoa-jax side of the suite: a model's encoder, K targets and per-explicand attribution
programs, and the rate (units/s) they reach on E explicands."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import models as M
from benchmarks.harness.timing import block, compile_timed, time_call
from cocoa_jax import explicand_program, meshes, targets

try:  # the evaluation module may be absent in older trees
    from cocoa_jax import metrics as _metrics
except Exception:  # noqa: BLE001
    _metrics = None

HAS_METRICS = _metrics is not None


def method_options(method: str, sz: dict) -> dict:
    """The benchmark's sizes as options of the method table (`cocoa_jax.methods`)."""
    return {"rise": {"n_masks": sz["rise_masks"], "grid_size": (sz["grid"],) * 2, "batch_size": sz["rise_batch"]},
            "integrated_gradients": {"n_steps": sz["ig_steps"], "batch_size": sz["ig_batch"]},
            "gradient_shap": {"n_samples": sz["gs_samples"], "batch_size": sz["ig_batch"]}}[method]


def units(method: str, k: int, sz: dict) -> int:
    """Work units per explicand: masks, steps, or evaluations (one masked pass for all K targets)."""
    return {"rise": sz["rise_masks"], "integrated_gradients": sz["ig_steps"], "gradient_shap": sz["gs_samples"],
            "insdel": 2 * (sz["insdel_steps"] + 1) * k}[method]


class JaxModel:
    """Encoder, targets and per-explicand attribution programs for one model."""

    def __init__(self, spec: M.ModelSpec, dtype=jnp.float32, seed: int = 0):
        self.spec = spec
        self.module, self.variables = M.init_flax(spec, seed, dtype)
        self.dtype = dtype
        rng = np.random.default_rng(seed)
        d = spec.rep_dim
        self.corpus = jnp.asarray(rng.standard_normal((8, d)), jnp.float32)
        self.foil = jnp.asarray(rng.standard_normal((16, d)), jnp.float32)

    def encode(self, variables, xb):
        return self.module.apply(variables, xb.astype(self.dtype)).astype(jnp.float32)

    def target(self, rep, k: int):
        """K=1: COCOA; K=4: COCOA, corpus, label-free and contrastive label-free (explicand rep `rep`)."""
        cocoa = targets.cocoa(self.corpus, self.foil)
        if k == 1:
            return cocoa
        four = [cocoa, targets.corpus(self.corpus), targets.label_free(rep),
                targets.contrastive_label_free(rep, self.foil)]
        return targets.stack(four[:k])

    def explicand_target(self, variables, x, k):
        """The target of explicand x (K > 1 reads its representation)."""
        return self.target(self.encode(variables, x[None])[0] if k > 1 else None, k)

    def f(self, variables, x, k):
        return targets.explain_fn(lambda xb: self.encode(variables, xb), self.explicand_target(variables, x, k))

    # Per-explicand programs: (variables, x, key) -> attribution / curves.
    def program(self, method: str, k: int, sz: dict, mesh):
        def run(variables, x, key):
            base = explicand_program.PAPER_BASELINE(x)
            if method == "insdel":
                # K attributions of this explicand (random ones: evaluation cost does not depend on them).
                attr = jax.random.uniform(key, ((k,) if k > 1 else ()) + x.shape[:2])
                return self.insdel(variables, x, base, attr, k, sz, mesh)
            return explicand_program.attribute_one(lambda xb: self.encode(variables, xb),
                                                   self.explicand_target(variables, x, k), method, x, base, key,
                                                   mesh=mesh, **method_options(method, sz))
        return run

    def insdel(self, variables, x, base, attr, k, sz, mesh=None):
        def encode(xb):
            if mesh is not None:  # split each evaluation batch over the devices (measured +30% on 2 host devices)
                xb = jax.lax.with_sharding_constraint(xb, meshes.explicand_sharding(mesh))
            return self.encode(variables, xb)
        if k == 1:
            measures = self.target(None, 1)
            if _metrics is not None:
                measures = _metrics.make_measures("ccs", ccs=measures)
        else:
            measures = self.target(self.encode(variables, x[None])[0], k)
        if _metrics is not None:
            curves, aucs = _metrics.insertion_deletion(encode, measures, x, base, attr, n_steps=sz["insdel_steps"],
                                                       batch_size=sz["insdel_batch"])
            return aucs
        # Fallback: masked forward passes of the same shape.
        n = 2 * (sz["insdel_steps"] + 1) * (k if k > 1 else 1)
        masks = (jax.random.uniform(jax.random.key(0), (n,) + x.shape[:2]) < 0.5).astype(x.dtype)
        inputs = x * masks[..., None] + base * (1 - masks[..., None])
        return jax.lax.map(lambda b: measures(encode(b)), inputs.reshape((-1, sz["insdel_batch"]) + x.shape))

    def units(self, method: str, k: int, sz: dict) -> int:
        """Work units per explicand: masks, steps, or evaluations."""
        return units(method, k, sz)

    def unit_flops(self, method: str, k: int, batch: int) -> float:
        """XLA cost-analysis FLOPs of one unit: a forward pass, or the K input-gradients at one point."""
        x = jnp.zeros((batch,) + (self.spec.image_size, self.spec.image_size, 3), self.dtype)
        if method in ("rise", "insdel"):
            fn = lambda v, xb: self.encode(v, xb)
        else:
            def fn(v, xb):  # the target's explicand representation is fixed: not part of a step
                f = targets.explain_fn(lambda b: self.encode(v, b), self.target(self.corpus[0], k))
                return jax.vmap(jax.grad(f) if k == 1 else jax.jacrev(f))(xb)
        cost = jax.jit(fn).lower(self.variables, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / batch


_SHARED: dict = {}


def shared_model(spec: M.ModelSpec, dtype=jnp.float32, seed: int = 0) -> JaxModel:
    """One JaxModel per (model, dtype, seed) in a process: the suite's sections read the same
    random weights, built (and their init compiled) once."""
    key = (spec.name, jnp.dtype(dtype).name, seed)
    if key not in _SHARED:
        _SHARED[key] = JaxModel(spec, dtype, seed)
    return _SHARED[key]


def jax_measure(jm: JaxModel, method: str, k: int, n_explicands: int, sz: dict, mesh, repeats: int) -> dict:
    """Rate (units/s) of cocoa-jax on E explicands: E=1 shards the perturbations over the mesh,
    E>1 shards the explicands (ExplicandMap)."""
    size = jm.spec.image_size
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.uniform(-1, 1, (n_explicands, size, size, 3)), jnp.float32).astype(jm.dtype)
    keys = jax.random.split(jax.random.key(2), n_explicands)
    if n_explicands == 1:
        program = jm.program(method, k, sz, mesh)
        compiled, compile_s, mem = compile_timed(program, jm.variables, xs[0], keys[0])
        call = lambda: compiled(jm.variables, xs[0], keys[0])
        block(call())  # first execution (allocations) not timed
    else:
        program = jm.program(method, k, sz, None)
        mapper = meshes.ExplicandMap(program, mesh, in_axes=(None, 0, 0))
        start = time.perf_counter()
        block(mapper(jm.variables, xs, keys))
        compile_s = time.perf_counter() - start  # includes one run
        mem = float("nan")
        call = lambda: mapper(jm.variables, xs, keys)
    seconds = time_call(call, repeats, warmup=False)
    n_units = jm.units(method, k, sz) * n_explicands
    return {"rate": n_units / seconds, "seconds": seconds, "compile_s": compile_s, "mem_mib": mem}
