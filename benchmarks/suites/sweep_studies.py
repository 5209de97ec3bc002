"""A corpus-size study as ONE sweep vs one sweep per size, on the embedded digits encoder.

    python -m benchmarks.suites.sweep_studies OUT_DIR [--sizes 1,5,20,50,100,120] [--devices 2]

Tiny settings (2 corpus classes x 2 explicands, 1 seed, IG 8 steps, RISE 200 masks, 16 ablation
steps, foil 200), no persistent compile cache. Each sweep is one `cocoa-jax sweep` command (a fresh
process: JAX start, probe training and compiles included, as a user runs it), one after another;
`--in-process` runs them with `run_sweep` in this process instead (later runs then reuse what JAX
compiled for earlier ones). Prints the wall times and the largest difference between the study's
size-s arrays and the one-size run's.
The digits training split has 121-136 images per class, so the paper's 200 is capped at 120.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--sizes", default="1,5,20,50,100,120")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args(argv)
    if args.in_process:
        os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    import numpy as np

    from cocoa_jax.sweep import SweepConfig, run_sweep
    from cocoa_jax.sweep.store import open_existing

    sizes = [int(s) for s in args.sizes.split(",")]
    base = dict(encoder="digits", dataset="digits", classes=(0, 1), explicands_per_class=2, seeds=(0,),
                foil_size=200, methods={"integrated_gradients": {"n_steps": 8}, "rise": {"n_masks": 200}},
                eval_steps=16, explicand_batch=4)

    def sweep(corpus_size, name):
        config = SweepConfig(corpus_size=corpus_size, **base)
        run_dir = os.path.join(args.out_dir, name)
        start = time.perf_counter()
        if args.in_process:
            run_sweep(config, run_dir, progress=False, compile_cache=None)
        else:
            import subprocess

            overrides = [f"{k}={json.dumps(v)}" for k, v in config.to_dict().items()]
            command = [sys.executable, "-m", "cocoa_jax", "sweep", run_dir, "--devices", str(args.devices),
                       "--compile-cache", "none", "--no-progress"] + [a for o in overrides for a in ("--set", o)]
            subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        _, store = open_existing(os.path.join(args.out_dir, name))
        return seconds, {uid: store.load_unit(row) for uid, row in store.read_rows(warn=False).items()}

    study_seconds, study = sweep(sizes, "study")
    separate, worst = {}, 0.0
    for z, size in enumerate(sizes):
        separate[size], units = sweep([size], f"size{size}")
        for uid, arrays in units.items():
            for key in ("size_attributions", "size_aucs"):
                worst = max(worst, float(np.max(np.abs(study[uid][key][:, z] - arrays[key][:, 0]))))
    result = {"mode": "in-process" if args.in_process else "one command per sweep", "sizes": sizes, "one_sweep_s": round(study_seconds, 1),
              "separate_sweeps_s": {str(k): round(v, 1) for k, v in separate.items()},
              "separate_total_s": round(sum(separate.values()), 1), "max_abs_difference": worst,
              "units_per_sweep": len(study)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
