"""The product-path test layer: commands run as users run them.

Every test here starts the INSTALLED `cocoa-jax` console script (the one `pip install` put
next to this interpreter) as a subprocess, on the shipped models or on a model directory that
`cocoa-jax convert` wrote from a real-format PyTorch checkpoint with random weights, with the
flags README shows, and checks exit codes, stderr and the files written.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.xla import child_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cocoa_jax_executable() -> str:
    """The installed console script of this interpreter's environment."""
    candidate = os.path.join(os.path.dirname(sys.executable), "cocoa-jax")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("cocoa-jax")
    if found is None:
        pytest.fail("the `cocoa-jax` console script is not installed (pip install -e .)")
    return found


def cli_env(devices: int | None = None, **extra: str) -> dict:
    """A clean environment for a command: no inherited forced-device or JAX_* settings but the
    suite's compile setting (tests/conftest.py; `extra` JAX_DISABLE_MOST_OPTIMIZATIONS="0" runs
    the command optimised, as users do)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    env["XLA_FLAGS"] = child_flags(devices)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("XDG_CACHE_HOME", os.environ.get("XDG_CACHE_HOME", ""))
    if not env["XDG_CACHE_HOME"]:
        env.pop("XDG_CACHE_HOME")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def cocoa_jax_cmd() -> str:
    return cocoa_jax_executable()


def run_cli(args, *, cwd, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cocoa-jax ARGS...` to completion; returns the CompletedProcess (text mode)."""
    return subprocess.run([cocoa_jax_executable(), *map(str, args)], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


TINY_SWEEP = {"seeds": [0], "classes": [3], "explicands_per_class": 2, "foil_size": 8, "eval_steps": 4,
              "probe_train_size": 200, "probe_test_size": 100,
              "methods": {"integrated_gradients": {"n_steps": 3}}}


def tiny_sweep_flags(**fields) -> list[str]:
    """`--set` flags of a tiny sweep on the shipped digits encoder (`fields` override or add config
    fields), without a progress bar: what the product tests of sweep and report run."""
    config = {**TINY_SWEEP, **fields}
    flags = []
    for name, value in config.items():
        flags += ["--set", f"{name}={json.dumps(value, separators=(',', ':'))}"]
    return flags + ["--no-progress"]


def start_cli(args, *, cwd, env: dict | None = None) -> subprocess.Popen:
    """Start `cocoa-jax ARGS...` in the background (stdout+stderr piped, text mode)."""
    return subprocess.Popen([cocoa_jax_executable(), *map(str, args)], cwd=cwd, env=env or cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session")
def converted_model_dir(tmp_path_factory) -> tuple[str, str]:
    """(arch, directory): a SimSiam CIFAR ResNet-18 pre-training checkpoint with random weights,
    saved as the official SimSiam code saves it and converted by the installed `cocoa-jax convert`."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from tests.reference import resnet as ref

    root = tmp_path_factory.mktemp("converted")
    torch.manual_seed(0)
    backbone = ref.randomize_(ref.CifarResNet18(num_classes=None), 7)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    checkpoint = root / "simsiam_pretrain.pth"
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": state}, checkpoint)
    out = root / "simsiam_random"
    proc = run_cli(["convert", "simsiam_cifar_resnet18", checkpoint, out], cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return "simsiam_cifar_resnet18", str(out)
