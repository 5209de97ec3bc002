"""The official COCOA scripts THEMSELVES, timed on the protocol benchmark's data and weights.

`benchmarks.suites.protocol --official-scripts REPO` calls `run_official_scripts`: REPO is a checkout of
suinleelab/cl-explainability (not shipped with cocoa-jax; clone it yourself). For each method and
target in `scripts/run_loop.py`'s order it runs `scripts/attribute.py` and then `scripts/eval.py`
with the arguments `scripts/run.py` gives them for one seed and same-class explicands, each in a
fresh Python process, as run.py does. The scripts are not edited; a launcher
(`python -m benchmarks.official.scripts SCRIPT ARGS...`, configured by the environment variable
below) points them at this run's files and setting, then runs the script as `__main__`:

* `constants.DATA_PATH` / `ENCODER_PATH` / `RESULT_PATH` -> the scratch directory (they are the
  authors' cluster paths), `constants.NUM_CLASSES_CIFAR` -> the setting's class count (the
  scripts loop over every class);
* RISE's `n_samples` (5000, written into attribute.py) -> the setting's mask count; IG (Captum's
  default 50 steps), GradientSHAP (50 samples) and the evaluation (50 steps) are what the
  scripts hard-code, so only settings with those counts are accepted (`check_settings`);
* torchvision's CIFAR-10 checksums accept our files (they hold the benchmark's images);
* where torchvision's compiled extension does not load (the PyPI torchvision wheel is built for
  CUDA torch; this machine has the CPU torch), the schemas of the two operators whose fake
  kernels torchvision registers at import (`nms`, `qnms`) are declared so that its Python part
  imports; the scripts call no compiled torchvision operator.

Data: the protocol's image folder (`root/{train,test}/<class>/*.png`) written as CIFAR-10's python
batches (train in `data_batch_1..5`, test as `test_batch`; the scripts' "val" split is the test
split). Weights: the protocol's checkpoint with the DataParallel `module.` prefix removed (the
scripts load the state dict as is). The scripts need torchvision, pytorch-lightning and
torchmetrics besides torch, captum and tqdm; `site` (a `pip install --target` directory) is put
on their path.
"""
from __future__ import annotations

import glob
import json
import os
import pickle
import runpy
import subprocess
import sys
import time

import numpy as np

# run_loop.py's order of methods and targets, its attribution batch sizes (eval.py always runs 32).
from tests.reference.official_pipeline import ATTRIBUTION_BATCH, METHODS, TARGETS

LAUNCH_ENV = "COCOA_JAX_OFFICIAL_LAUNCH"
SEED = 123  # constants.SEED_LIST[0]
HARD_CODED = {"ig_steps": 50, "gs_samples": 50, "eval_steps": 50}  # what the scripts fix
REQUIRED_FILES = ("scripts/attribute.py", "scripts/eval.py", "scripts/constants.py", "scripts/experiment_utils.py",
                  "src/cl_explain/attributions/rise.py")


def check_repo(repo: str) -> str | None:
    """None when `repo` looks like a checkout of the official code, else what is missing."""
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(repo, f))]
    return None if not missing else f"{repo} is not a checkout of suinleelab/cl-explainability (missing {missing})"


def check_settings(s: dict) -> str | None:
    """None when the scripts can run setting `s` unmodified, else why not."""
    bad = {k: s[k] for k, v in HARD_CODED.items() if s[k] != v}
    return None if not bad else f"the official scripts hard-code {HARD_CODED}; this setting has {bad}"


def write_cifar_batches(image_root: str, data_path: str) -> dict:
    """The image folder as CIFAR-10's python batches under data_path/cifar10/cifar-10-batches-py."""
    from PIL import Image

    out = os.path.join(data_path, "cifar10", "cifar-10-batches-py")
    os.makedirs(out, exist_ok=True)
    counts = {}
    for split in ("train", "test"):
        files = sorted(glob.glob(os.path.join(image_root, split, "*", "*.png")))
        labels = [int(os.path.basename(os.path.dirname(f))) for f in files]
        # CIFAR rows: 3072 bytes, the R plane then G then B, each 32x32 row-major.
        data = np.stack([np.asarray(Image.open(f).convert("RGB"), np.uint8).transpose(2, 0, 1).reshape(-1)
                         for f in files])
        parts = np.array_split(np.arange(len(files)), 5) if split == "train" else [np.arange(len(files))]
        names = [f"data_batch_{i + 1}" for i in range(5)] if split == "train" else ["test_batch"]
        for name, idx in zip(names, parts):
            with open(os.path.join(out, name), "wb") as fh:
                pickle.dump({"data": data[idx], "labels": [labels[i] for i in idx]}, fh)
        counts[split] = len(files)
    with open(os.path.join(out, "batches.meta"), "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, fh)
    return counts


def save_plain_checkpoint(src: str, dst: str) -> None:
    """The lincls checkpoint with its `module.` prefix removed, as the scripts' loader expects."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)["state_dict"]
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    torch.save({"state_dict": {k.removeprefix("module."): v for k, v in state.items()}}, dst)


def commands(s: dict, on_gpu: bool) -> list[tuple[str, str, str, list[str]]]:
    """(script, method, target, argv) in run_loop.py's order, one seed, same-class explicands."""
    common = ["--normalize-similarity", "--dataset-name", "cifar", "--explicand-size", str(s["explicands"]),
              "--corpus-size", str(s["corpus"]), "--foil-size", str(s["foil"])]
    device = ["--use-gpu", "--gpu-num", "0"] if on_gpu else []
    tail = ["--blur-strength", "5.0", "--seed", str(SEED)] + device
    out = []
    for method in METHODS:
        for target in TARGETS:
            head = ["simsiam_18", target, method] + common
            out.append(("attribute.py", method, target, head + ["--batch-size", str(ATTRIBUTION_BATCH[method]),
                                                                 "--superpixel-dim", "1"] + tail))
            out.append(("eval.py", method, target, head + ["--batch-size", "32", "--superpixel-dim", "1"] + tail
                        + ["--eval-superpixel-dim", "1", "--eval-foil-size", "1500", "--comprehensive"]))
    return out


def _launch(config: dict, args: list[str], env: dict, what: str) -> float:
    """Seconds of one launcher process (cwd: the checkout, as run.py runs the scripts)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.official.scripts"] + args, cwd=config["repo"],
                          env=dict(env, **{LAUNCH_ENV: json.dumps(config)}), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"official {what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-4000:]}")
    return seconds


def probe_imports(repo: str, site: str | None, env: dict) -> str | None:
    """None when the scripts' imports work with `site` on their path, else the error's last line."""
    config = {"repo": os.path.abspath(repo), "site": os.path.abspath(site) if site else None}
    try:
        _launch(config, ["--imports-only"], env, "import check")
    except RuntimeError as err:
        return str(err).strip().splitlines()[-1]
    return None


def run_official_scripts(repo: str, site: str | None, s: dict, n_classes: int, image_root: str, checkpoint: str,
                         scratch: str, on_gpu: bool, env: dict, log=print, pairs=None, startup_runs: int = 2) -> dict:
    """Time every script invocation; seconds by phase as `benchmarks.suites.protocol` reports them.

    `pairs`: a set of (method, target) to run (default: all of `commands`, what the benchmark times);
    the tests run a few, each process costs a PyTorch start-up. `startup_s`: the fastest of
    `startup_runs` import-only processes (the tests: one)."""
    base = os.path.join(scratch, "official_scripts")
    config = {"repo": os.path.abspath(repo), "site": os.path.abspath(site) if site else None,
              "data": os.path.join(base, "data"), "encoders": os.path.join(base, "encoders"),
              "results": os.path.join(base, "results"), "classes": n_classes, "rise_masks": s["rise_masks"]}
    counts = write_cifar_batches(image_root, config["data"])
    save_plain_checkpoint(checkpoint, os.path.join(config["encoders"], "simsiam", "resnet18.pth.tar"))
    startup = min(_launch(config, ["--imports-only"], env, "start-up") for _ in range(max(1, startup_runs)))
    seconds = {f"attribution:{m}": 0.0 for m in METHODS} | {"evaluation": 0.0}
    invocations = []
    for script, method, target, argv in commands(s, on_gpu):
        if pairs is not None and (method, target) not in pairs:
            continue
        t = _launch(config, [script] + argv, env, f"{script} {method} {target}")
        seconds["evaluation" if script == "eval.py" else f"attribution:{method}"] += t
        invocations.append({"script": script, "method": method, "target": target, "seconds": t})
        log(f"    {script} {method} {target}: {t:.1f} s", flush=True)
    results = glob.glob(os.path.join(config["results"], "**", "*.pkl"), recursive=True)
    if len(results) != len(invocations):  # one attribution and one evaluation file per pair
        raise RuntimeError(f"the official scripts wrote {len(results)} result files, expected {len(invocations)}")
    seconds["total"] = sum(i["seconds"] for i in invocations)
    commit = subprocess.run(["git", "-C", config["repo"], "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"seconds": seconds, "invocations": invocations, "startup_s": startup, "processes": len(invocations),
            "device": "cuda:0" if on_gpu else "cpu", "repo": config["repo"], "commit": commit or "unknown",
            "cifar_batches": counts}


# ----------------------------------------------------------------------------- the launcher (child process)


def _prepare(config: dict) -> None:
    """Path, torchvision import and constants as the module docstring says."""
    sys.path[:0] = [os.path.join(config["repo"], "scripts"), os.path.join(config["repo"], "src")] \
        + ([config["site"]] if config["site"] else [])
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise SystemExit("torchvision is not importable: pass --official-site DIR (pip install --target DIR ...)")
    try:
        torch.ops.load_library(glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))[0])
    except (IndexError, OSError):
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _prepare.library = library  # a Library's definitions live as long as the object
    import torchvision.datasets.cifar as cifar

    cifar.check_integrity = lambda *args, **kwargs: True
    import constants

    for name, key in (("DATA_PATH", "data"), ("ENCODER_PATH", "encoders"), ("RESULT_PATH", "results"),
                      ("NUM_CLASSES_CIFAR", "classes")):
        if key in config:  # the import check passes only the checkout and the site
            setattr(constants, name, config[key])
    if "rise_masks" not in config:
        return
    from cl_explain.attributions import rise

    attribute = rise.RISE.attribute

    def with_masks(self, *args, **kwargs):
        return attribute(self, *args, **dict(kwargs, n_samples=config["rise_masks"]))

    rise.RISE.attribute = with_masks


def _main(argv: list[str]) -> None:
    config = json.loads(os.environ[LAUNCH_ENV])
    _prepare(config)
    if argv == ["--imports-only"]:  # what every script process imports before its work
        import captum.attr  # noqa: F401
        import experiment_utils  # noqa: F401
        import tqdm  # noqa: F401
        return
    path = os.path.join(config["repo"], "scripts", argv[0])
    sys.argv = [path] + argv[1:]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    _main(sys.argv[1:])
