"""The paper's protocol end to end: `cocoa-jax sweep` against the official pipeline's work.

    python -m benchmarks.suites.protocol [--settings issue|paper|quick|smoke] [--devices N] [--out PATH]
                                  [--skip-official] [--classes N] [--overwrite]
                                  [--official-scripts REPO [--official-site DIR]]

Builds everything offline in a scratch directory: scikit-learn's digits upsampled to 32x32 RGB
PNGs in an image folder (`root/{train,test}/<class>/`; for foils larger than the train split,
shifted copies of the train images are added, and the results say so), a random-weight SimSiam
CIFAR ResNet-18 saved in the official linear-eval checkpoint format and converted with
`cocoa-jax convert` (the SAME weights on both sides; the checkpoint's 512->10 head is the
evaluation head on both sides: the official code's `apply_eval_head`, cocoa-jax's `probe_dir`).
Then it times, in this order:

  (a) `cocoa-jax sweep` as a subprocess, cold (fresh run dir and compile cache) and warm (fresh
      run dir, the cold run's compile cache); phases from the unit rows (attribution,
      evaluation) and the rest (start-up, compiling, corpus/foil encoding = total - phases);
  (b) the official pipeline's work restated in PyTorch (`tests.reference.official_pipeline`) on the
      same data and weights, on the same device kind, by phase;
  (b') with --official-scripts REPO: the official scripts THEMSELVES from a checkout of
      suinleelab/cl-explainability (`benchmarks.official.scripts`), same data and weights;
  (c) encoder passes per explicand on each side by phase, and the speed-up they allow (the
      bound: official forward-equivalents / cocoa-jax forward-equivalents, a backward pass
      weighted by its FLOPs relative to a forward pass from XLA's cost analysis) next to the
      measured ratio and the fraction of the bound reached;
  (d) the FLOP roofline fraction of each phase (XLA cost-analysis FLOPs per image x images /
      seconds / the float32 matmul peak measured in the same run, before the sweeps, in the worker
      process that also saves the probe, `benchmarks.harness.roofline.measure_peak`);
  (e) on a CPU backend: 1 vs 2 forced host devices for a whole sweep, cold and warm (`--devices
      1|2`; the (a) runs are reused for their own device count; not with `--settings quick|smoke`).

Settings: `issue` = the issue's (1 class, 2 explicands, corpus 100, foil 100, 4 targets x IG 50
/ GradientSHAP 50 / RISE 1000 masks, evaluation 50 steps, all measures, one seed); `paper` = the
paper's (25 explicands per class, foil 1500, RISE 5000; `--classes`, default 1); `quick` = tiny
sizes; `smoke` = quick with one explicand (the test suite's run: every section, the least work; its `--estimators`
sweeps keep the smoke's counts, PROFILE_COUNTS). Nothing is downloaded. Works from the repository root with
`PYTHONPATH=.` and cocoa-jax not installed (the CLI runs as `python -m cocoa_jax` with this
interpreter). Writes benchmarks/results/RESULTS_protocol[_SETTINGS].md (or --out) and a .json beside it.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import REPO, RESULTS
from benchmarks.harness.machine import cpu_name

ARCH = "simsiam_cifar_resnet18"
# cocoa-jax method names <-> the official scripts' names.
METHODS = {"integrated_gradients": "int_grad", "gradient_shap": "gradient_shap", "rise": "rise"}
N_TARGETS = 4

SETTINGS = {
    "issue": dict(classes=1, explicands=2, corpus=100, foil=100, ig_steps=50, gs_samples=50, rise_masks=1000,
                  eval_steps=50),
    "paper": dict(classes=1, explicands=25, corpus=100, foil=1500, ig_steps=50, gs_samples=50, rise_masks=5000,
                  eval_steps=50),
    "quick": dict(classes=1, explicands=2, corpus=8, foil=8, ig_steps=4, gs_samples=4, rise_masks=8,
                  eval_steps=4),
    "smoke": dict(classes=1, explicands=1, corpus=8, foil=8, ig_steps=4, gs_samples=4, rise_masks=8,
                  eval_steps=4),
}
TINY = ("quick", "smoke")  # settings too small for (e) and a large matmul peak
# The smoke run's `--estimators` sweeps: the profile (its other options, e.g. centred RISE) at the
# smoke's own counts, given explicitly (they win over the profile's). Running the profile's counts
# (RISE 416 masks) would only time numerics; the profile's counts are still recorded beside what ran.
PROFILE_COUNTS = {"smoke": {key: SETTINGS["smoke"][key] for key in ("ig_steps", "gs_samples", "rise_masks")}}


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites.protocol", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="issue")
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="devices for the timed cocoa-jax sweeps (default: the sweep's own, all local devices)")
    parser.add_argument("--classes", type=int, default=None, metavar="N", help="classes (default: 1)")
    parser.add_argument("--out", default=None, help="results markdown (default benchmarks/results/RESULTS_protocol[_S].md)")
    parser.add_argument("--work-dir", default=None, help="scratch parent directory (default: a new temp dir)")
    parser.add_argument("--skip-official", action="store_true", help="time cocoa-jax only (no ratio)")
    parser.add_argument("--skip-devices", action="store_true", help="skip (e), 1 vs 2 host devices")
    parser.add_argument("--official-grad-mode", choices=("official", "inference"), default="official",
                        help="'official': autograd on everywhere, as the official scripts; 'inference': "
                             "forward-only work under no_grad (a kinder baseline)")
    parser.add_argument("--estimators", default=None, metavar="PROFILE",
                        help="also time cocoa-jax under this estimator profile (cocoa_jax.methods.PROFILES, e.g. "
                             "fast), cold and warm, against the same official run")
    parser.add_argument("--official-scripts", default=None, metavar="REPO",
                        help="also time the official scripts THEMSELVES from this checkout of "
                             "suinleelab/cl-explainability (benchmarks.official.scripts; not with --settings quick|smoke)")
    parser.add_argument("--official-site", default=None, metavar="DIR",
                        help="a `pip install --target` directory with torchvision, pytorch-lightning and "
                             "torchmetrics for the official scripts")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.devices is not None and args.devices < 1:
        parser.error(f"--devices must be a positive integer, got {args.devices}")
    if args.classes is not None and not 1 <= args.classes <= 10:
        parser.error(f"--classes must be in [1, 10], got {args.classes}")
    if args.estimators is not None:
        from cocoa_jax import methods as methods_table

        if args.estimators not in methods_table.PROFILES or args.estimators == methods_table.DEFAULT_PROFILE:
            others = [p for p in methods_table.PROFILES if p != methods_table.DEFAULT_PROFILE]
            parser.error(f"--estimators must be one of {others} (paper is always timed), got {args.estimators!r}")
    if args.official_site is not None and args.official_scripts is None:
        parser.error("--official-site needs --official-scripts REPO")
    if args.official_scripts is not None and args.worker is None:
        from benchmarks.official import scripts as official_scripts

        problem = official_scripts.check_repo(args.official_scripts) \
            or official_scripts.check_settings(SETTINGS[args.settings])
        if problem is None and args.official_site is not None and not os.path.isdir(args.official_site):
            problem = f"{args.official_site} is not a directory"
        if problem is None:  # the scripts' own imports, before any work
            problem = official_scripts.probe_imports(args.official_scripts, args.official_site, _child_env())
        if problem:
            parser.error(f"--official-scripts / --official-site: {problem}")
    if args.out is None:
        suffix = "" if args.settings == "issue" else f"_{args.settings}"
        args.out = os.path.join(RESULTS, f"RESULTS_protocol{suffix}.md")
    if args.worker is None and os.path.exists(args.out) and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it (or --out PATH)")
    return args


# ----------------------------------------------------------------------------- subprocesses


def _child_env(extra_path: str | None = None, **overrides) -> dict:
    env = dict(os.environ)
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    paths = [REPO] + ([extra_path] if extra_path else []) + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(overrides)
    return env


def _run(cmd, env, what: str, timeout: float = 7200) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc, seconds


def _worker(name: str, payload: dict, env: dict) -> dict:
    proc, _ = _run([sys.executable, "-m", "benchmarks.suites.protocol", "--worker", name, "--worker-args",
                    json.dumps(payload), "--out", os.devnull], env, f"worker {name}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ports_shim(scratch: str) -> str | None:
    """`cocoa_jax_ports` importable without installing: a link to the repository's ports/."""
    if importlib.util.find_spec("cocoa_jax_ports") is not None:
        return None
    shim = os.path.join(scratch, "shim")
    os.makedirs(shim, exist_ok=True)
    os.symlink(os.path.join(REPO, "ports"), os.path.join(shim, "cocoa_jax_ports"))
    return shim


# ----------------------------------------------------------------------------- data and weights


def _digit_images():
    """(images (N, 32, 32) uint8, labels (N,)) and a description of where they come from."""
    try:
        from cocoa_jax.data.digits import load_digits_arrays
        images, labels = load_digits_arrays(32)
        images = np.asarray(images, np.float32).reshape(images.shape[0], 32, 32)
        return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), np.asarray(labels), \
            "scikit-learn digits (1797), bilinear-upsampled to 32x32, grey replicated to RGB"
    except ImportError:  # scikit-learn absent: timing does not depend on the pictures
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(10), 180)
        images = rng.integers(0, 256, (labels.size, 32, 32), dtype=np.uint8)
        return images, labels, "synthetic random images (scikit-learn absent), 180 per class"


def build_image_folder(root: str, min_train: int, seed: int = 0) -> dict:
    """root/{train,test}/<class>/<i>.png; 500 test images; train grown by shifted copies to
    at least `min_train` images. Returns a description."""
    from PIL import Image

    images, labels, source = _digit_images()
    perm = np.random.default_rng(seed).permutation(labels.size)
    test, train = perm[:500], perm[500:]
    train_images, train_labels = [images[train]], [labels[train]]
    shifts = [(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1), (2, 0), (0, 2)]
    copies = 0
    while sum(a.shape[0] for a in train_images) < min_train:
        dy, dx = shifts[copies % len(shifts)]
        train_images.append(np.roll(images[train], (dy * (1 + copies // len(shifts)), dx), axis=(1, 2)))
        train_labels.append(labels[train])
        copies += 1
    splits = {"train": (np.concatenate(train_images), np.concatenate(train_labels)),
              "test": (images[test], labels[test])}
    for split, (xs, ys) in splits.items():
        for i, (x, y) in enumerate(zip(xs, ys)):
            folder = os.path.join(root, split, str(int(y)))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(np.repeat(x[..., None], 3, axis=-1)).save(os.path.join(folder, f"{i:05d}.png"))
    note = f" + {copies} shifted cop{'y' if copies == 1 else 'ies'} of the train split (for the foil size)" \
        if copies else ""
    return {"source": source + note, "train": int(splits["train"][1].size), "test": int(splits["test"][1].size)}


def _torch_encoder():
    from tests.reference.torch_models import CifarResNet18, randomize_
    return CifarResNet18, randomize_


def save_lincls_checkpoint(path: str, seed: int = 1) -> None:
    """A random SimSiam CIFAR ResNet-18 + 512->10 head in main_lincls.py's checkpoint format."""
    import torch

    CifarResNet18, randomize_ = _torch_encoder()
    torch.manual_seed(seed)
    model = randomize_(CifarResNet18(10), seed + 1)
    torch.save({"epoch": 100, "arch": "resnet18",
                "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
                "best_acc1": torch.tensor(0.0), "optimizer": {"state": {}, "param_groups": []}}, path)


def load_torch_encoder(path: str):
    import torch

    CifarResNet18, _ = _torch_encoder()
    model = CifarResNet18(10)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model.eval()


# ----------------------------------------------------------------------------- workers (own processes)


def worker_env() -> dict:
    import flax
    import jax
    try:
        import torch
        torch_v = torch.__version__
        cuda = torch.cuda.is_available()
    except ImportError:
        torch_v, cuda = "absent", False
    try:
        import captum
        captum_v = captum.__version__
    except ImportError:
        captum_v = "absent"
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": device.device_kind, "local_devices": jax.local_device_count(),
            "versions": f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
                        f"torch {torch_v}, captum {captum_v}, numpy {np.__version__}",
            "torch_cuda": cuda}


def worker_probe(payload: dict) -> dict:
    """Save the checkpoint's head as a cocoa_jax probe (logits = reps @ W + b)."""
    import jax.numpy as jnp
    import torch

    from cocoa_jax import probe as probe_mod

    state = torch.load(payload["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    weight, bias = state["module.fc.weight"].numpy(), state["module.fc.bias"].numpy()
    probe_mod.save_probe(probe_mod.LinearProbe(jnp.asarray(weight.T), jnp.asarray(bias)), payload["probe_dir"])
    return {"probe_dir": payload["probe_dir"]}


def worker_roofline(payload: dict) -> dict:
    """XLA cost-analysis FLOPs of one image's forward and forward+backward; the matmul peak."""
    import jax
    import jax.numpy as jnp

    from benchmarks.harness.roofline import measure_peak
    from cocoa_jax import models

    model = models.load(ARCH, payload["encoder_dir"])
    batch = 8
    x = jnp.zeros((batch,) + tuple(model.input_shape), jnp.float32)

    def flops(fn):
        cost = jax.jit(fn).lower(model.params, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / batch

    forward = flops(lambda p, xb: model.encode_fn(p, xb))
    # One scalar target per image: forward + one backward to the input.
    grad = flops(lambda p, xb: jax.grad(lambda b: jnp.sum(model.encode_fn(p, b) @ jnp.ones((512,))))(xb))
    return {"forward_flops": forward, "grad_flops": grad, "peak": measure_peak(payload["peak_n"])}


def worker_prepare(payload: dict) -> dict:
    """One process before the runs: the environment, the head as a probe, the roofline's FLOPs and
    matmul peak (each worker process pays a JAX and PyTorch start-up)."""
    return {"env": worker_env(), "probe": worker_probe(payload), "roofline": worker_roofline(payload)}


# ----------------------------------------------------------------------------- cocoa-jax side


SETTING_OPTIONS = {"ig_steps": ("integrated_gradients", "n_steps"), "gs_samples": ("gradient_shap", "n_samples"),
                   "rise_masks": ("rise", "n_masks")}  # settings key -> (method, option)


def _profile_options(profile: str, method: str) -> dict:
    from cocoa_jax import methods as methods_table

    return methods_table.profile_options(profile, method)


def sweep_config(s: dict, root: str, encoder_dir: str, probe_dir: str, classes: list,
                 estimators: str = "paper", counts: dict | None = None) -> dict:
    """The sweep config of settings `s`; under a profile other than paper, the options the
    profile sets are left to it (explicit options would win over the profile), except the
    settings keys in `counts` (e.g. PROFILE_COUNTS["smoke"]), given explicitly."""
    options = {m: {} for m in METHODS}
    for key, (method, option) in SETTING_OPTIONS.items():
        if counts and key in counts:
            options[method][option] = counts[key]
        elif option not in _profile_options(estimators, method):
            options[method][option] = s[key]
    config = {"encoder": ARCH, "encoder_dir": encoder_dir, "dataset": f"folder:{root}", "corpus_split": "train",
              "explicand_split": "test", "classes": classes, "explicands_per_class": s["explicands"],
              "corpus_size": s["corpus"], "foil_size": s["foil"], "seeds": [0], "methods": options,
              "include_random": False, "eval_steps": s["eval_steps"], "probe_dir": probe_dir}
    return config if estimators == "paper" else dict(config, estimators=estimators)


def profile_settings(s: dict, estimators: str) -> dict:
    """Settings `s` with the counts profile `estimators` sets (e.g. fast: IG 16 steps, RISE 416 masks)."""
    return dict(s, **{key: _profile_options(estimators, method).get(option, s[key])
                      for key, (method, option) in SETTING_OPTIONS.items()})


def run_sweep(config_path: str, run_dir: str, cache: str, devices: int | None, env: dict) -> dict:
    """One `python -m cocoa_jax sweep` subprocess: wall seconds, the sweep's own seconds, phases."""
    cmd = [sys.executable, "-m", "cocoa_jax", "sweep", run_dir, "--config", config_path, "--compile-cache", cache,
           "--no-progress"] + (["--devices", str(devices)] if devices else [])
    proc, wall = _run(cmd, env, "cocoa-jax sweep")
    match = re.search(r"(\d+) device\(s\)\]: computed (\d+) unit\(s\).*?, ([0-9.]+) s ->", proc.stdout)
    if not match:
        raise RuntimeError(f"cannot read the sweep's summary line:\n{proc.stdout[-2000:]}")
    rows = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("results.p") and name.endswith(".jsonl"):
            with open(os.path.join(run_dir, name)) as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
    attribution = {m: sum(r["attribution_seconds"] for r in rows if r["method"] == m) for m in METHODS}
    evaluation = sum(r["evaluation_seconds"] for r in rows)
    return {"wall_s": wall, "sweep_s": float(match.group(3)), "devices": int(match.group(1)),
            "units": int(match.group(2)), "attribution_s": attribution, "evaluation_s": evaluation,
            "rest_s": wall - sum(attribution.values()) - evaluation, "startup_s": wall - float(match.group(3))}


def cocoa_jax_passes(s: dict, n_classes: int) -> dict:
    """Encoder passes (images) per phase of the sweep at settings `s` (useful work; padding to
    device multiples and chunk sizes is not counted)."""
    n = s["explicands"] * n_classes
    k = N_TARGETS
    out = {
        # one forward per path point / sample, K backward passes (jacrev over the stacked targets)
        "attribution:integrated_gradients": {"forward": n * s["ig_steps"], "backward": n * s["ig_steps"] * k},
        "attribution:gradient_shap": {"forward": n * s["gs_samples"], "backward": n * s["gs_samples"] * k},
        "attribution:rise": {"forward": n * s["rise_masks"], "backward": 0},  # K targets read one pass
        # per method: K attributions x (insertion, deletion) x (steps + 1), all measures from one pass
        "evaluation": {"forward": n * len(METHODS) * k * 2 * (s["eval_steps"] + 1), "backward": 0},
        # once per seed: every class's corpus, the foil and the resampled foil; each unit's explicands
        "corpus_foil": {"forward": n_classes * s["corpus"] + 2 * s["foil"] + n * len(METHODS), "backward": 0},
    }
    return out


def official_settings(s: dict, classes: list):
    from tests.reference.official_pipeline import Settings
    return Settings(classes=tuple(classes), explicands=s["explicands"], corpus_size=s["corpus"], foil_size=s["foil"],
                    ig_steps=s["ig_steps"], gs_samples=s["gs_samples"], rise_masks=s["rise_masks"],
                    eval_steps=s["eval_steps"])


def run_official_side(s: dict, classes: list, root: str, checkpoint: str, device: str, grad_mode: str) -> dict:
    import torch

    from tests.reference import official_pipeline as O
    from cocoa_jax.data.image_folder import ImageFolder
    from cocoa_jax.models.preprocessing import CIFAR

    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    # The official code feeds its network normalised tensors (its transforms end in Normalize);
    # CIFAR(image) gives [0, 1] pixels (cocoa-jax's models normalise inside), so normalise here.
    normalised = lambda image: CIFAR.normalize(CIFAR(image))
    train = ImageFolder(root, "train", preprocess=normalised)
    test = ImageFolder(root, "test", class_names=train.class_names, preprocess=normalised)
    to_nchw = lambda source: np.ascontiguousarray(source.images(np.arange(len(source))).transpose(0, 3, 1, 2))
    result = O.run_official(load_torch_encoder(checkpoint), O.gaussian_blur, to_nchw(train), train.labels, to_nchw(test),
                            test.labels, official_settings(s, classes), device=device, grad_mode=grad_mode,
                            progress=lambda line: print("  " + line, flush=True))
    expected = O.expected_passes(official_settings(s, classes))
    return dict(dataclasses.asdict(result), expected_passes=expected, counts_match=result.passes == expected)


# ----------------------------------------------------------------------------- analysis


def _official_phase(phase: str) -> str:
    """cocoa-jax phase name -> the official one."""
    if phase.startswith("attribution:"):
        return "attribution:" + METHODS[phase.split(":", 1)[1]]
    return phase


def forward_equivalents(passes: dict, backward_weight: float) -> float:
    return sum(p["forward"] + backward_weight * p["backward"] for p in passes.values())


def phase_flops(passes: dict, forward_flops: float, backward_flops: float) -> float:
    return passes["forward"] * forward_flops + passes["backward"] * backward_flops


def analyse(out: dict) -> dict:
    """Ratios, the pass-count bound and roofline fractions from the measurements in `out`."""
    n = out["explicands_total"]
    roof = out.get("roofline") or {}
    fwd, grad = roof.get("forward_flops"), roof.get("grad_flops")
    bwd_weight = (grad - fwd) / fwd if fwd and grad else 2.0
    jax_passes = out["passes"]["cocoa_jax"]
    official_passes = out["passes"].get("official")
    a = {"backward_weight": bwd_weight,
         "cocoa_jax_fwd_eq_per_explicand": forward_equivalents(jax_passes, bwd_weight) / n}
    if official_passes:
        a["official_fwd_eq_per_explicand"] = forward_equivalents(official_passes, bwd_weight) / n
        a["bound"] = a["official_fwd_eq_per_explicand"] / a["cocoa_jax_fwd_eq_per_explicand"]
    official = out.get("official")
    for run in ("cold", "warm"):
        if official and run in out["sweep"]:
            ratio = official["seconds"]["total"] / out["sweep"][run]["wall_s"]
            a[f"ratio_{run}"] = ratio
            a[f"fraction_of_bound_{run}"] = ratio / a["bound"]
    profile = out.get("profile")
    if profile:
        fwd_eq = forward_equivalents(profile["passes"], bwd_weight) / n
        a["profile"] = {"fwd_eq_per_explicand": fwd_eq,
                        "over_paper": {run: out["sweep"][run]["wall_s"] / profile["sweep"][run]["wall_s"]
                                       for run in ("cold", "warm")}}
        if official:
            a["profile"]["ratio"] = {run: official["seconds"]["total"] / profile["sweep"][run]["wall_s"]
                                     for run in ("cold", "warm")}
            a["profile"]["bound"] = a["official_fwd_eq_per_explicand"] / fwd_eq
    scripts = out.get("official_scripts")
    if scripts:
        a["scripts_ratio"] = {run: scripts["seconds"]["total"] / out["sweep"][run]["wall_s"] for run in out["sweep"]}
        if profile:
            a["profile"]["scripts_ratio"] = {run: scripts["seconds"]["total"] / profile["sweep"][run]["wall_s"]
                                             for run in ("cold", "warm")}
    if official and "warm" in out["sweep"]:
        warm = out["sweep"]["warm"]
        a["phase_ratio"] = {
            "attribution": sum(official["seconds"].get(f"attribution:{m}", 0) for m in METHODS.values())
            / max(sum(warm["attribution_s"].values()), 1e-9),
            "evaluation": official["seconds"].get("evaluation", 0) / max(warm["evaluation_s"], 1e-9),
            "corpus_foil_and_rest": official["seconds"].get("corpus_foil", 0) / max(warm["rest_s"], 1e-9)}
    if fwd and grad and roof.get("peak"):
        peak = roof["peak"]["peak"] * 1e9
        bwd = grad - fwd

        def fraction(passes, seconds):
            return phase_flops(passes, fwd, bwd) / seconds / peak if seconds > 0 else float("nan")

        rows = {}
        for run in ("cold", "warm"):
            if run not in out["sweep"]:
                continue
            sw = out["sweep"][run]
            r = {f"attribution:{m}": fraction(jax_passes[f"attribution:{m}"], sw["attribution_s"][m]) for m in METHODS}
            r["evaluation"] = fraction(jax_passes["evaluation"], sw["evaluation_s"])
            total = {"forward": sum(p["forward"] for p in jax_passes.values()),
                     "backward": sum(p["backward"] for p in jax_passes.values())}
            r["whole sweep (wall)"] = fraction(total, sw["wall_s"])
            rows[f"cocoa-jax {run}"] = r
        if official:
            r = {}
            for m, om in METHODS.items():
                r[f"attribution:{m}"] = fraction(official_passes[f"attribution:{om}"],
                                                 official["seconds"][f"attribution:{om}"])
            r["evaluation"] = fraction(official_passes["evaluation"], official["seconds"]["evaluation"])
            total = {"forward": sum(p["forward"] for p in official_passes.values()),
                     "backward": sum(p["backward"] for p in official_passes.values())}
            r["whole sweep (wall)"] = fraction(total, official["seconds"]["total"])
            rows["official"] = r
        a["roofline"] = rows
    return a


# ----------------------------------------------------------------------------- report


def _f(v, digits=1):
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def render(out: dict) -> str:
    env, a, s = out["env"], out["analysis"], out["settings"]
    lines = ["# The paper's protocol end to end: cocoa-jax sweep vs the official pipeline's work", "",
             f"- date: {env['date']}", f"- machine: {env['machine']}", f"- versions: {env['versions']}",
             f"- JAX backend: {env['backend']} ({env['device_kind']}), {env['local_devices']} local device(s) before "
             f"forcing host devices; sweeps ran on {out['sweep']['cold']['devices']}; "
             f"official side on `{out.get('official', {}).get('device', '-')}`",
             f"- command: `{env['command']}` (total {out['total_s']:.0f} s)",
             f"- settings `{out['settings_name']}`: {out['n_classes']} class(es) x {s['explicands']} explicands, "
             f"corpus {s['corpus']}, foil {s['foil']}, 4 targets x IG {s['ig_steps']} / GradientSHAP "
             f"{s['gs_samples']} / RISE {s['rise_masks']} masks, evaluation {s['eval_steps']} steps, all measures, "
             f"one seed",
             f"- data: {out['data']['source']} ({out['data']['train']} train / {out['data']['test']} test images)",
             "- encoder: random-weight SimSiam CIFAR ResNet-18 (official lincls checkpoint format, converted with "
             "`cocoa-jax convert`); its 512->10 head is the evaluation head on both sides", ""]
    for note in out.get("notes", []):
        lines.append(f"- note: {note}")
    lines.append("")
    sw = out["sweep"]
    lines += ["## Wall time by phase (seconds)", "",
              "| side | total | IG | GradientSHAP | RISE | evaluation | rest (start-up, compile, corpus/foil, probe) |",
              "|---|---|---|---|---|---|---|"]
    official = out.get("official")
    if official:
        sec = official["seconds"]
        rest = sec["total"] - sum(sec.get(f"attribution:{m}", 0) for m in METHODS.values()) - sec.get("evaluation", 0)
        lines.append(f"| official ({official['captum']}, grad mode {official['grad_mode']}) | {sec['total']:.1f} | "
                     + " | ".join(f"{sec.get(f'attribution:{m}', 0):.1f}" for m in METHODS.values())
                     + f" | {sec.get('evaluation', 0):.1f} | {rest:.1f} (corpus/foil {sec.get('corpus_foil', 0):.1f}) |")
    scripts = out.get("official_scripts")
    if scripts:
        sec = scripts["seconds"]
        lines.append(f"| official scripts themselves ({scripts['processes']} processes, commit {scripts['commit'][:7]}) "
                     f"| {sec['total']:.1f} | " + " | ".join(f"{sec[f'attribution:{m}']:.1f}" for m in METHODS.values())
                     + f" | {sec['evaluation']:.1f} | in the phases (start-up {scripts['startup_s']:.1f} s per "
                       "process) |")
    profile = out.get("profile")
    runs = [(f"cocoa-jax {run}", sw[run]) for run in ("cold", "warm") if run in sw]
    runs += [(f"cocoa-jax `--estimators {profile['name']}` {run}", profile["sweep"][run])
             for run in ("cold", "warm")] if profile else []
    for label, r in runs:
        lines.append(f"| {label} ({r['devices']} device(s)) | {r['wall_s']:.1f} | "
                     + " | ".join(f"{r['attribution_s'][m]:.1f}" for m in METHODS)
                     + f" | {r['evaluation_s']:.1f} | {r['rest_s']:.1f} (start-up before the sweep "
                       f"{r['startup_s']:.1f}) |")
    lines.append("")
    if "ratio_cold" in a:
        lines += [f"**Speed-up over the official pipeline: {a['ratio_cold']:.1f}x cold, {a['ratio_warm']:.1f}x warm** "
                  f"(measured in the same run). By phase (official / cocoa-jax warm): "
                  + ", ".join(f"{k} {v:.1f}x" for k, v in a.get("phase_ratio", {}).items()) + ".", ""]
    if scripts:
        ratios = a["scripts_ratio"]
        lines += [f"**Against the official scripts themselves** (`scripts/attribute.py` + `scripts/eval.py` from "
                  f"{scripts['repo']} at {scripts['commit'][:7]}, one process per script as `scripts/run.py` runs them, "
                  f"`benchmarks.official.scripts`): {scripts['seconds']['total']:.1f} s, **{ratios['cold']:.1f}x cold, "
                  f"{ratios['warm']:.1f}x warm**"
                  + (f"; `--estimators {profile['name']}` {a['profile']['scripts_ratio']['cold']:.1f}x cold, "
                     f"{a['profile']['scripts_ratio']['warm']:.1f}x warm" if profile else "")
                  + (f". They take {scripts['seconds']['total'] / official['seconds']['total']:.2f}x the restatement's time"
                     if official else "") + ": each process pays its start-up (interpreter, torch, torchvision, "
                  "captum imports) and reads and transforms the data again.", ""]
    if profile:
        ps, pa = profile["settings"], a["profile"]
        lines += [f"**Estimator profile `{profile['name']}`** (`cocoa_jax.methods.PROFILES`; IG {ps['ig_steps']} "
                  f"steps, GradientSHAP {ps['gs_samples']} samples, RISE {ps['rise_masks']} masks"
                  + (", centred" if "centered" in _profile_options(profile["name"], "rise") else "")
                  + f"; evaluation unchanged): {pa['fwd_eq_per_explicand']:.0f} forward-equivalents per explicand; "
                  f"over the paper profile {pa['over_paper']['cold']:.2f}x cold, {pa['over_paper']['warm']:.2f}x warm"
                  + (f"; **over the official pipeline {pa['ratio']['cold']:.1f}x cold, {pa['ratio']['warm']:.1f}x "
                     f"warm** (pass-count bound {pa['bound']:.1f}x)" if "ratio" in pa else "")
                  + ". Quality at equal settings is `benchmarks.suites.estimator_profiles`' question (a trained encoder; "
                    "this one has random weights).", ""]
    lines += ["## Encoder passes per explicand (images through the encoder; forward / backward)", "",
              "| phase | official | cocoa-jax |", "|---|---|---|"]
    jp = out["passes"]["cocoa_jax"]
    op = out["passes"].get("official")
    n = out["explicands_total"]
    for phase in jp:
        o = op.get(_official_phase(phase)) if op else None
        lines.append(f"| {phase} | " + (f"{o['forward'] / n:.0f} / {o['backward'] / n:.0f}" if o else "-")
                     + f" | {jp[phase]['forward'] / n:.0f} / {jp[phase]['backward'] / n:.0f} |")
    lines += ["", f"A backward pass weighs {a['backward_weight']:.2f} forward passes (XLA cost-analysis FLOPs of the "
                  f"input gradient minus the forward, per image). Forward-equivalents per explicand: "
                  f"cocoa-jax {a['cocoa_jax_fwd_eq_per_explicand']:.0f}"
              + (f", official {a['official_fwd_eq_per_explicand']:.0f}." if "bound" in a else ".")]
    if "bound" in a:
        lines += ["", f"**Bound from encoder-pass counts: {a['bound']:.1f}x** (official / cocoa-jax forward-equivalents, "
                      "i.e. the speed-up if both sides ran every image at the same rate). Measured: "
                  + (f"{a['ratio_cold']:.1f}x cold = {a['fraction_of_bound_cold']:.0%} of the bound, "
                     f"{a['ratio_warm']:.1f}x warm = {a['fraction_of_bound_warm']:.0%}." if "ratio_cold" in a else "-")]
        if official and not official.get("counts_match", True):
            lines += ["", "WARNING: the official side's hook counts differ from `expected_passes`."]
    lines.append("")
    if a.get("roofline"):
        roof = out["roofline"]
        lines += ["## FLOP roofline fraction", "",
                  f"FLOPs per image from XLA's cost analysis: forward {roof['forward_flops'] / 1e9:.3f} GFLOP, backward "
                  f"{(roof['grad_flops'] - roof['forward_flops']) / 1e9:.3f} GFLOP; float32 matmul peak "
                  f"{roof['peak']['peak']:.0f} GFLOP/s (XLA {roof['peak']['xla']:.0f}, torch {roof['peak']['torch']:.0f}, "
                  f"numpy {roof['peak']['numpy']:.0f}). Fraction = useful encoder FLOPs / seconds / peak.", "",
                  "| side | IG | GradientSHAP | RISE | evaluation | whole run (wall) |", "|---|---|---|---|---|---|"]
        for side, r in a["roofline"].items():
            lines.append(f"| {side} | " + " | ".join(f"{r[f'attribution:{m}']:.1%}" for m in METHODS)
                         + f" | {r['evaluation']:.1%} | {r['whole sweep (wall)']:.1%} |")
        lines.append("")
    if out.get("devices_scaling"):
        d = out["devices_scaling"]
        lines += ["## Host devices: whole warm sweep, `--devices 1` vs `--devices 2` (CPU)", "",
                  "| devices | wall s (warm) | attribution s | evaluation s | cold wall s |", "|---|---|---|---|---|"]
        for count in ("1", "2"):
            r = d[count]
            lines.append(f"| {count} | {r['warm']['wall_s']:.1f} | {sum(r['warm']['attribution_s'].values()):.1f} | "
                         f"{r['warm']['evaluation_s']:.1f} | {r['cold']['wall_s']:.1f} |")
        lines += ["", f"Speed-up of 2 over 1 device(s), whole warm sweep: **{d['speedup_warm']:.2f}x** "
                      f"(cold: {d['speedup_cold']:.2f}x).", ""]
    return "\n".join(lines)


def _machine(backend: str, kind: str) -> str:
    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}; accelerator: " \
           f"{kind if backend != 'cpu' else 'none'}"


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main


def main(args) -> dict:
    t_start = time.perf_counter()
    s = dict(SETTINGS[args.settings])
    n_classes = args.classes or s["classes"]
    classes = list(range(n_classes))
    scratch = tempfile.mkdtemp(prefix=f"protocol_{args.settings}_", dir=args.work_dir)
    shim = _ports_shim(scratch)
    env = _child_env(shim)
    out = {"settings_name": args.settings, "settings": s, "n_classes": n_classes,
           "explicands_total": s["explicands"] * n_classes, "notes": [], "sweep": {}}
    # Data, weights (one checkpoint for both sides), converted; then one worker: the environment,
    # the head as a probe, FLOPs per image and the matmul peak (d).
    root = os.path.join(scratch, "data")
    out["data"] = build_image_folder(root, min_train=s["foil"] + 100)
    checkpoint = os.path.join(scratch, "checkpoint_0099.pth.tar")
    save_lincls_checkpoint(checkpoint)
    encoder_dir = os.path.join(scratch, "encoder")
    _run([sys.executable, "-m", "cocoa_jax", "convert", ARCH, checkpoint, encoder_dir], env, "cocoa-jax convert")
    probe_dir = os.path.join(scratch, "head_probe")
    prepared = _worker("prepare", {"checkpoint": checkpoint, "probe_dir": probe_dir, "encoder_dir": encoder_dir,
                                   "peak_n": 512 if args.settings in TINY else 4096}, env)
    info = prepared["env"]
    out["env"] = dict(info, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                      machine=_machine(info["backend"], info["device_kind"]),
                      command="python -m benchmarks.suites.protocol " + " ".join(sys.argv[1:]))
    print(f"protocol benchmark ({args.settings}): JAX {info['backend']} ({info['device_kind']}); {info['versions']}",
          flush=True)

    config_path = os.path.join(scratch, "sweep.json")
    with open(config_path, "w") as fh:
        json.dump(sweep_config(s, root, encoder_dir, probe_dir, classes), fh, indent=1)
    print(f"  data and weights ready in {scratch}", flush=True)

    # (a) cocoa-jax: cold, then warm with the cold run's compile cache.
    cache = os.path.join(scratch, "compile_cache")
    for run in ("cold", "warm"):
        out["sweep"][run] = run_sweep(config_path, os.path.join(scratch, f"run_{run}"), cache, args.devices, env)
        print(f"  cocoa-jax sweep {run}: {out['sweep'][run]['wall_s']:.1f} s", flush=True)

    # (a') the same under another estimator profile (own compile cache: its programs differ).
    if args.estimators:
        p = args.estimators
        p_config = os.path.join(scratch, f"sweep_{p}.json")
        counts = PROFILE_COUNTS.get(args.settings)
        with open(p_config, "w") as fh:
            json.dump(sweep_config(s, root, encoder_dir, probe_dir, classes, estimators=p, counts=counts), fh,
                      indent=1)
        runs = {run: run_sweep(p_config, os.path.join(scratch, f"run_{p}_{run}"), cache + f"_{p}", args.devices, env)
                for run in ("cold", "warm")}
        p_settings = dict(profile_settings(s, p), **(counts or {}))  # what the sweeps ran
        out["profile"] = {"name": p, "settings": p_settings, "profile_settings": profile_settings(s, p),
                          "sweep": runs, "passes": cocoa_jax_passes(p_settings, n_classes)}
        if counts:
            out["notes"].append(f"--estimators {p} ran at the {args.settings} settings' counts {counts} (its other "
                                f"options as the profile sets them; the profile's own counts: "
                                + str({k: out['profile']['profile_settings'][k] for k in counts}) + ")")
        print(f"  cocoa-jax sweep --estimators {p}: cold {runs['cold']['wall_s']:.1f} s, "
              f"warm {runs['warm']['wall_s']:.1f} s", flush=True)

    # (e) 1 vs 2 forced host devices (CPU backend only).
    if args.settings in TINY and not args.skip_devices:
        out["notes"].append(f"(e) 1 vs 2 host devices is not run with --settings {args.settings} (it would double "
                            "the time)")
    elif info["backend"] == "cpu" and not args.skip_devices:
        scaling = {}
        for count in (1, 2):
            if out["sweep"]["cold"]["devices"] == count:  # (a) ran with this count already
                scaling[str(count)] = {run: out["sweep"][run] for run in ("cold", "warm")}
                continue
            cache_d = os.path.join(scratch, f"compile_cache_d{count}")
            scaling[str(count)] = {run: run_sweep(config_path, os.path.join(scratch, f"run_d{count}_{run}"), cache_d,
                                                  count, env) for run in ("cold", "warm")}
            print(f"  --devices {count}: warm {scaling[str(count)]['warm']['wall_s']:.1f} s", flush=True)
        scaling["speedup_warm"] = scaling["1"]["warm"]["wall_s"] / scaling["2"]["warm"]["wall_s"]
        scaling["speedup_cold"] = scaling["1"]["cold"]["wall_s"] / scaling["2"]["cold"]["wall_s"]
        out["devices_scaling"] = scaling

    # (b) the official pipeline's work, same data and weights, same device kind.
    out["passes"] = {"cocoa_jax": cocoa_jax_passes(s, n_classes)}
    if not args.skip_official:
        import torch
        device = "cuda" if info["backend"] == "gpu" and torch.cuda.is_available() else "cpu"
        if info["backend"] not in ("cpu", "gpu"):
            out["notes"].append(f"JAX backend {info['backend']}: the official side ran on {device}")
        print(f"  official pipeline on {device} ...", flush=True)
        out["official"] = run_official_side(s, classes, root, checkpoint, device, args.official_grad_mode)
        out["passes"]["official"] = out["official"]["passes"]
        print(f"  official: {out['official']['seconds']['total']:.1f} s", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    else:
        from tests.reference.official_pipeline import expected_passes
        out["passes"]["official"] = expected_passes(official_settings(s, classes))
        out["notes"].append("official side not run (--skip-official): its pass counts are the closed form "
                            "`official_pipeline.expected_passes`; no measured ratio")

    # (b') the official scripts themselves, same data and weights.
    if args.official_scripts:
        from benchmarks.official.scripts import run_official_scripts
        print(f"  official scripts from {args.official_scripts} ...", flush=True)
        out["official_scripts"] = run_official_scripts(args.official_scripts, args.official_site, s, n_classes, root,
                                                       checkpoint, scratch, info["backend"] == "gpu", env)
        print(f"  official scripts: {out['official_scripts']['seconds']['total']:.1f} s", flush=True)

    out["roofline"] = prepared["roofline"]  # (d), measured by the worker before the runs
    out["notes"].append("cocoa-jax pass counts are the useful work (padding to device multiples and chunk sizes "
                        "not counted); the official counts are measured with hooks on its encoder")
    out["analysis"] = analyse(out)
    out["total_s"] = time.perf_counter() - t_start
    text = render(out)
    _write_atomic(args.out, text)
    _write_atomic(os.path.splitext(args.out)[0] + ".json", json.dumps(out, indent=1, default=str))
    print(text)
    print(f"wrote {args.out}", flush=True)
    if args.work_dir is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


WORKERS = {"prepare": worker_prepare}

if __name__ == "__main__":
    ARGS = _parse_args()
    if ARGS.worker:
        print(json.dumps(WORKERS[ARGS.worker](json.loads(ARGS.worker_args or "{}")), default=str))
    else:
        main(ARGS)
