"""Memory of the gradient sums (`_common.sum_gradient_terms`) is set by the batch, not by the steps.

XLA's compiled memory analysis (temporaries, not wall time or RSS) of Integrated Gradients on a
tiny conv + max-pool encoder, chunks of 4 path points, at 8 and 32 steps (2 and 8 chunks). With
the depth-first scheduler `_common` selects, the temporaries stay those of about one chunk; with
XLA CPU's default breadth-first scheduler (what ran before, forced here through XLA_FLAGS) every
chunk's max-pool gradient index arrays are live at once and memory grows with the steps, so the
same check fails there. XLA reads its flags once per process: each setting runs in a child.
"""
import json
import os
import subprocess
import sys

import pytest

from cocoa_jax.attribution_methods import _common
from tests.support import xla

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
from cocoa_jax.attribution_methods.integrated_gradients import integrated_gradients

def encode(params, x):  # conv, relu, 3x3/2 max pool (its gradient is XLA's select-and-scatter), conv, mean
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.nn.relu(jax.lax.conv_general_dilated(x, params["w1"], (1, 1), "SAME", dimension_numbers=dn))
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    h = jax.lax.conv_general_dilated(h, params["w2"], (1, 1), "SAME", dimension_numbers=dn)
    return jnp.mean(jax.nn.relu(h), axis=(1, 2))

rng = np.random.default_rng(0)
params = {"w1": jnp.asarray(rng.normal(size=(3, 3, 3, 16)) / 3, jnp.float32),
          "w2": jnp.asarray(rng.normal(size=(3, 3, 16, 16)) / 12, jnp.float32)}
x = jnp.asarray(rng.uniform(size=(32, 32, 3)), jnp.float32)
directions = jnp.asarray(rng.normal(size=(4, 16)), jnp.float32)

def temp_bytes(n_steps):
    def program(p, x, d):
        f = lambda xi: encode(p, xi[None])[0] @ d.T  # K = 4 targets
        return integrated_gradients(f, x, jnp.zeros_like(x), n_steps=n_steps, batch_size=4)
    return jax.jit(program).lower(params, x, directions).compile().memory_analysis().temp_size_in_bytes

print(json.dumps({"flags": __import__("os").environ.get("XLA_FLAGS", ""),
                  "temp": {n: temp_bytes(n) for n in (8, 32)}}))
'''


def _temp_bytes(scheduler_flag: str | None) -> tuple[dict, str]:
    # This process's flags without a scheduler choice, then `scheduler_flag`.
    flags = [f for f in xla.child_flags().split() if not f.startswith(_common.SCHEDULER_FLAG_NAME)]
    env = dict(os.environ, XLA_FLAGS=" ".join(flags + ([scheduler_flag] if scheduler_flag else [])),
               PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(k): v for k, v in record["temp"].items()}, record["flags"]


@pytest.mark.slow
def test_gradient_sum_memory_does_not_grow_with_steps():
    temp, flags = _temp_bytes(None)  # the flag `_common` adds on import
    assert _common.SEQUENTIAL_SCHEDULER_FLAG in flags.split()
    # 4x the chunks: the temporaries of about one chunk (measured +10%: each chunk's 4 path points
    # are computed ahead), never a chunk's worth more per chunk.
    assert temp[32] <= 1.25 * temp[8], temp


@pytest.mark.slow
def test_the_breadth_first_scheduler_grows_with_steps():
    # What ran before: the same check fails (measured 3.6x from 8 to 32 steps), so it can fail.
    temp, flags = _temp_bytes(_common.SCHEDULER_FLAG_NAME + "=true")
    assert _common.SEQUENTIAL_SCHEDULER_FLAG not in flags.split()
    assert temp[32] > 2 * temp[8], temp


def test_the_flag_is_added_once_and_a_user_choice_is_kept():
    assert _common.with_sequential_scheduler("") == _common.SEQUENTIAL_SCHEDULER_FLAG
    assert _common.with_sequential_scheduler("--a=1") == "--a=1 " + _common.SEQUENTIAL_SCHEDULER_FLAG
    chosen = "--a=1 " + _common.SCHEDULER_FLAG_NAME + "=true"
    assert _common.with_sequential_scheduler(chosen) == chosen
    once = _common.with_sequential_scheduler("--a=1")
    assert _common.with_sequential_scheduler(once) == once
    env = {"XLA_FLAGS": "--b=2"}
    assert _common.use_sequential_scheduler(env) is True
    assert env["XLA_FLAGS"] == "--b=2 " + _common.SEQUENTIAL_SCHEDULER_FLAG
    env = {"XLA_FLAGS": chosen}
    assert _common.use_sequential_scheduler(env) is False and env["XLA_FLAGS"] == chosen


def test_pipeline_attribute_takes_the_probed_batch_on_large_images(monkeypatch):
    # No batch given: images over 64 px get the batch explain chooses (probe + free memory), smaller
    # ones and a given batch are passed on unchanged. The program is replaced: only its batch is read.
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cocoa_jax import cost, pipeline, targets

    def encode(params, x):  # (N, H, W, 1) -> (N, 3)
        return jnp.tanh(jnp.mean(x, axis=(1, 2)) * params["w"])

    params = {"w": jnp.asarray([1.0, -2.0, 0.5])}
    seen = []

    def fake_program(encode_fn, method, options, normalize, *, batch_size, mesh, lanes_per_device):
        seen.append(batch_size)
        return lambda params, xs, directions, keys, baselines: np.zeros(xs.shape[:1] + (2,) + xs.shape[1:3])

    monkeypatch.setattr(pipeline.program_mod, "attribution_program", fake_program)
    target = targets.Target(jnp.asarray(np.eye(2, 3), jnp.float32), (True, True))
    for size, given in ((72, None), (72, 3), (32, None)):
        xs = np.full((1, size, size, 1), 0.5, np.float32)
        pipeline.attribute(encode, params, xs, xs * 0, target, "integrated_gradients", jax.random.split(jax.random.key(0), 1),
                           options={"n_steps": 8}, batch_size=given)
    probe = cost.probe(encode, params, (72, 72, 1), batch=4, k=2)
    assert seen == [cost.default_batch_size(probe, lanes=1), 3, None]
