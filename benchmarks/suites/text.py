"""Token IG sentences/s, cocoa-jax vs Captum's LayerIntegratedGradients, same CLIP text tower, same run.

    python -m benchmarks text [--quick]

Model: the PyTorch reference CLIP (tests/reference/clip.py) with random weights and its conversion to
cocoa-jax (only speed is compared here; tests/text/test_text_captum.py checks the values agree to 1e-5).
--quick: text width 64, 2 layers; default: width 256, 4 layers. N sentences of the same length (CLIP
tokens: SOT, 12 words, EOT; both sides run these 14 positions, not CLIP's padded 77), IG with 32 Gauss-Legendre steps
from one baseline token on every content position (LayerIntegratedGradients takes baseline ids), K = 1 and
K = 4 cosine targets. cocoa-jax: one jit-compiled program, vmapped over the N sentences, every
path point serving all K targets; Captum: one call per sentence and target, all steps in one batch.
Times exclude compilation (one warm-up call). Ratio = Captum seconds / cocoa-jax seconds. Roofline: XLA's
FLOPs of the whole cocoa-jax program (cost analysis) / its seconds / the float32 matmul peak measured in
the same run. Rows go to benchmarks/results/RESULTS_text.json (not with --quick).
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS
from benchmarks.harness.machine import cpu_name
from benchmarks.harness.roofline import fraction, measure_peak, program_flops
from benchmarks.harness.timing import time_call
from cocoa_jax import files

BASELINE_ID = 269
WORDS = 12


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny tower, 2 sentences (about a minute)")
    args = parser.parse_args(argv)
    import torch
    from captum.attr import LayerIntegratedGradients

    from cocoa_jax import targets
    from cocoa_jax.models import make_loaded
    from cocoa_jax.text import attribution as TA, clip_text_encoder
    from cocoa_jax_ports import clip as port_clip
    from tests.reference.clip import CLIPReference, randomize_

    width, layers, n, steps, repeats = (64, 2, 2, 32, 1) if args.quick else (256, 4, 8, 32, 2)
    config = dict(embed_dim=64, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                  context_length=77, vocab_size=49408, transformer_width=width, transformer_layers=layers)
    torch.manual_seed(0)
    reference = randomize_(CLIPReference(**config), 1)
    encoder = clip_text_encoder(make_loaded("clip_vit", *port_clip.convert_state_dict(reference.state_dict())))
    # The reference adds all 77 positions; cut them to the sentences' length so torch does the same work as
    # cocoa-jax (which trims shared padding; causal attention makes positions after EOT irrelevant).
    reference.positional_embedding = torch.nn.Parameter(reference.positional_embedding.detach()[:WORDS + 2])
    params = jax.tree_util.tree_map(jnp.asarray, encoder.params)
    rng = np.random.default_rng(0)
    ids = np.zeros((n, WORDS + 2), np.int32)
    ids[:, 0], ids[:, -1] = 49406, 49407
    ids[:, 1:-1] = rng.integers(1, 49405, size=(n, WORDS))
    content = np.tile(np.arange(1, WORDS + 1, dtype=np.int32), (n, 1))
    peak = measure_peak(256 if args.quick else 2048)
    print(f"float32 matmul peak {peak['peak']:.1f} GFLOP/s; text width {width}, {layers} layers, {n} sentences "
          f"of {WORDS} tokens, IG {steps} steps", flush=True)
    rows = []
    for k in (1, 4):
        directions = rng.normal(size=(k, 64)).astype(np.float32)
        target = targets.stack([targets.corpus(d[None]) for d in directions])

        def explain(p, ids_, content_, target=target):
            one = lambda i, c: TA.token_scores(encoder, p, i, c, target, "integrated_gradients", jax.random.key(0),
                                               options={"n_steps": steps}, baseline=BASELINE_ID)
            return jax.vmap(one)(ids_, content_)

        program = jax.jit(explain)
        args_ = (params, jnp.asarray(ids), jnp.asarray(content))
        t_ours = time_call(lambda: program(*args_), repeats)
        flops = program_flops(explain, *args_)
        unit = torch.from_numpy(directions / np.linalg.norm(directions, axis=1, keepdims=True))

        def forward(tokens, j):
            reps = reference.encode_text(tokens)
            return (reps / reps.norm(dim=-1, keepdim=True)) @ unit[j]

        lig = LayerIntegratedGradients(forward, reference.token_embedding)
        padded = ids.astype(np.int64)      # the same 14 positions on both sides (see the reference's
        base = padded.copy()               # positional embedding cut below)
        base[:, 1:WORDS + 1] = BASELINE_ID

        def run_captum():
            return [lig.attribute(torch.from_numpy(padded[i:i + 1]), baselines=torch.from_numpy(base[i:i + 1]),
                                  n_steps=steps, method="gausslegendre", additional_forward_args=(j,),
                                  internal_batch_size=steps) for i in range(n) for j in range(k)]

        t_captum = time_call(run_captum, repeats)
        row = dict(k=k, width=width, layers=layers, sentences=n, tokens=WORDS, n_steps=steps,
                   ours_per_s=n / t_ours, captum_per_s=n / t_captum, ratio=t_captum / t_ours,
                   roofline=fraction(flops, 1.0 / t_ours, peak["peak"]))
        rows.append(row)
        print(f"IG tokens K={k}: cocoa-jax {row['ours_per_s']:8.2f} sentences/s, Captum {row['captum_per_s']:8.2f} "
              f"sentences/s, ratio {row['ratio']:.2f}x, roofline {row['roofline']:.1%}", flush=True)
    print(f"(jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f})")
    if not args.quick:
        record = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(), cpus=os.cpu_count(),
                      load_avg_1min=os.getloadavg()[0], peak_gflops=peak, jax=jax.__version__,
                      torch=torch.__version__, rows=rows)
        files.atomic_write_json(os.path.join(RESULTS, "RESULTS_text.json"), record, indent=1)
    return rows


if __name__ == "__main__":
    main()
