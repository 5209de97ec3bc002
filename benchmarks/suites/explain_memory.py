"""Peak resident memory of `cocoa-jax explain` on random-weight ImageNet encoders at 224 px.

    python -m benchmarks explain_memory [--archs resnet18,resnet50,clip_vit_b16]
        [--steps 8,32] [--extra "--n-masks 200 ..."] [--out benchmarks/results/RESULTS_explain_memory.json]

For each architecture: random weights built with the project's own model code (`spec.init`, no
download) saved as a model directory, two scikit-image photos as explicands (astronaut, coffee),
two as corpus (chelsea, rocket) and five as foil; then one `cocoa-jax explain` run as a child
process per step count of `--steps` (IG `--n-steps` and GradientSHAP `--n-samples` both set to
it; none: explain's defaults), plus `--extra` flags. Two step counts show whether peak memory
depends on them (it must not: issue 27). A row: the child's peak resident memory (ru_maxrss of
the waited child, = VmHWM), its wall seconds, and what the cost preview expected (its batch and
its "expected peak memory" line). The goal of issue 27 is < 4 GB with defaults. The rows are
added to `--out` (JSON records with their date) and to its Markdown twin (a section per run).
`clip_vit_b16` is the `clip_vit` architecture with 16-px patches at 224 px (CLIP ViT-B/16).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

PHOTOS = {"photos": ("astronaut", "coffee"), "corpus": ("chelsea", "rocket"),
          "foil": ("cat", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")}


def write_inputs(root: str) -> None:
    """Explicand, corpus and foil folders of scikit-image photos under `root`."""
    import numpy as np
    import skimage.data
    from PIL import Image

    for folder, names in PHOTOS.items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for name in names:
            Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(os.path.join(root, folder, name + ".png"))


# Benchmark names for configurations of an architecture: (architecture, config changes).
VARIANTS = {"clip_vit_b16": ("clip_vit", {"vision_patch_size": 16, "image_resolution": 224})}


def write_random_model(arch: str, out_dir: str) -> str:
    """A model directory of `arch` (or a `VARIANTS` name) with the random initial weights of its Flax module."""
    from cocoa_jax.models import architectures, store

    arch, changes = VARIANTS.get(arch, (arch, {}))
    spec = architectures.spec_of(arch)
    config = {**spec.default_config, **changes}
    module = spec.build(config)
    variables = spec.init(module, config, tuple(spec.input_shape(config)))
    return store.save(arch, config, variables, out_dir, notes=["random weights (benchmarks.suites.explain_memory)"])


def parse_preview(stderr: str) -> dict:
    """The cost preview's expected peak memory (GB) and batch, from the child's stderr."""
    text = stderr.replace("\r", "\n")
    peak = re.search(r"expected peak memory ~([0-9.]+) (MB|GB)", text)
    batch = re.search(r"cost: batch (\w+) perturbed", text)
    expected = None if peak is None else float(peak.group(1)) / (1024 if peak.group(2) == "MB" else 1)
    return {"expected_peak_gb": expected, "batch": None if batch is None else batch.group(1)}


def measure(arch: str, root: str, extra: list[str]) -> dict:
    """One `cocoa-jax explain` child on `arch` with random weights: peak RSS, seconds, preview."""
    weights = os.path.join(root, f"{arch}_random")
    if not os.path.isdir(weights):
        weights = write_random_model(arch, weights)
    command = [sys.executable, "-m", "cocoa_jax", "explain", "--model", VARIANTS.get(arch, (arch,))[0],
               "--weights", weights,
               "--images", os.path.join(root, "photos"), "--corpus", os.path.join(root, "corpus"),
               "--foil", os.path.join(root, "foil"), "--out", os.path.join(root, f"out_{arch}"), "--overwrite",
               *extra]
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (ru_maxrss, KiB)
        seconds = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"explain on {arch} failed ({os.waitstatus_to_exitcode(status)}): {stderr[-2000:]}")
    return {"arch": arch, "extra": extra, "peak_rss_gb": usage.ru_maxrss / 1024 ** 2, "seconds": seconds,
            **parse_preview(stderr)}


def row(record: dict) -> str:
    """A Markdown row: arch, flags, peak RSS, expected peak, batch, seconds, goal met."""
    extra = " ".join(record["extra"]) or "defaults"
    expected = "-" if record["expected_peak_gb"] is None else f"{record['expected_peak_gb']:.1f}"
    return (f"| {record['arch']} | {extra} | {record['peak_rss_gb']:.1f} | {expected} | {record['batch']} | "
            f"{record['seconds']:.0f} | {'yes' if record['peak_rss_gb'] < 4 else 'no'} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet18,resnet50,clip_vit_b16")
    parser.add_argument("--steps", default="", help="comma-separated IG steps = GradientSHAP samples, one run each "
                                                   "(default: explain's defaults, one run)")
    parser.add_argument("--extra", default="", help="more explain flags, one string (e.g. \"--n-masks 200\")")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "RESULTS_explain_memory.json"))
    args = parser.parse_args(argv)
    extra = shlex.split(args.extra)
    records = []
    with tempfile.TemporaryDirectory() as root:
        write_inputs(root)
        for arch in args.archs.split(","):
            for steps in [s for s in args.steps.split(",") if s] or [None]:
                flags = [] if steps is None else ["--n-steps", steps, "--n-samples", steps]
                records.append(measure(arch, root, flags + extra))
                print(row(records[-1]), flush=True)
    from benchmarks.harness.machine import cpu_name

    from cocoa_jax import files

    # The day's rows are added to what the files hold (earlier days stay as they were measured).
    day = time.strftime("%Y-%m-%d", time.gmtime())
    for record in records:
        record["date"] = day
    earlier = []
    if os.path.exists(args.out):
        with open(args.out) as fh:
            earlier = json.load(fh).get("records", [])
    files.atomic_write_json(args.out, {"cpu": cpu_name(), "cores": os.cpu_count(), "records": earlier + records})
    table = "\n".join(["| arch | flags | peak RSS GB | preview GB | batch | s | < 4 GB |", "|---|---|---|---|---|---|---|",
                       *map(row, records)])
    print(table)
    markdown = os.path.splitext(args.out)[0] + ".md"
    head = "" if os.path.exists(markdown) else "# Peak memory of cocoa-jax explain (random weights, 224 px)\n"
    with open(markdown, "a") as fh:
        fh.write(f"{head}\n## {day}, {cpu_name()}, {os.cpu_count()} cores, load average "
                 f"{os.getloadavg()[0]:.1f} at the end\n\n`python -m benchmarks explain_memory "
                 f"{shlex.join(argv or sys.argv[1:])}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
