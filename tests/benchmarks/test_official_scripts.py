"""`benchmarks.official.scripts`: running the official COCOA scripts, checked on a stand-in checkout.

The official checkout is not available here, so a stand-in with the same layout (constants.py,
attribute.py, eval.py, cl_explain's RISE) records what the launcher gave it: the patched constants,
RISE's mask count, its argv and working directory, and the images torchvision's OWN CIFAR-10 reader
(the Python files of the torchvision wheel the tests already use) reads from our batches. That
checks the data format with code we did not write and the launcher's plumbing end to end.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import pickle
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")

from benchmarks.official import scripts as OS  # noqa: E402
from benchmarks.suites.protocol import SETTINGS, _child_env  # noqa: E402
from tests.reference.torchvision_source import find_wheel  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
TORCHVISION_INSTALLED = importlib.util.find_spec("torchvision") is not None

_RECORDER = '''
import json, os, pickle, sys
import numpy as np
import torch
import constants
import torchvision
from cl_explain.attributions.rise import RISE

root = os.path.join(constants.DATA_PATH, "cifar10")
train = torchvision.datasets.CIFAR10(root, train=True)
test = torchvision.datasets.CIFAR10(root, train=False)
record = {"argv": sys.argv[1:], "cwd": os.getcwd(), "classes": constants.NUM_CLASSES_CIFAR,
          "rise_masks": RISE(None).attribute(None, n_samples=5000), "train": len(train), "test": len(test),
          "first_train": np.asarray(train[0][0]), "first_label": train[0][1], "last_test": np.asarray(test[len(test) - 1][0]),
          "checkpoint": sorted(torch.load(os.path.join(constants.ENCODER_PATH, "simsiam",
                                                       "resnet18.pth.tar"))["state_dict"])}
os.makedirs(constants.RESULT_PATH, exist_ok=True)
name = os.path.basename(sys.argv[0]) + "_" + "_".join(sys.argv[1:4]) + ".pkl"
with open(os.path.join(constants.RESULT_PATH, name), "wb") as fh:
    pickle.dump(record, fh)
'''


def _stand_in_checkout(root: pathlib.Path) -> pathlib.Path:
    repo = root / "cl-explainability"
    (repo / "scripts").mkdir(parents=True)
    (repo / "src" / "cl_explain" / "attributions").mkdir(parents=True)
    (repo / "scripts" / "constants.py").write_text(
        'DATA_PATH = "/cluster/data"\nENCODER_PATH = "/cluster/encoders"\nRESULT_PATH = "/cluster/results"\n'
        "NUM_CLASSES_CIFAR = 10\n")
    (repo / "scripts" / "experiment_utils.py").write_text("import constants\n")
    for script in ("attribute.py", "eval.py"):
        (repo / "scripts" / script).write_text(_RECORDER)
    (repo / "src" / "cl_explain" / "__init__.py").write_text("")
    (repo / "src" / "cl_explain" / "attributions" / "__init__.py").write_text("")
    (repo / "src" / "cl_explain" / "attributions" / "rise.py").write_text(
        "class RISE:\n    def __init__(self, forward_func):\n        self.forward_func = forward_func\n\n"
        "    def attribute(self, inputs, n_samples=50, **kwargs):\n        return n_samples\n")
    return repo


def _torchvision_site(root: pathlib.Path) -> pathlib.Path:
    """torchvision's Python files from the wheel (no compiled extension: the launcher's CPU-torch path)."""
    wheel = find_wheel()
    if wheel is None:
        pytest.skip("no torchvision wheel in ~/.cache/cocoa-jax (README's test command downloads it)")
    site = root / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site, [n for n in zf.namelist() if n.startswith("torchvision/") and n.endswith(".py")])
    return site


def _image_folder(root: pathlib.Path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = {}
    for split, count in (("train", 7), ("test", 3)):
        for i in range(count):
            folder = root / split / str(i % 3)
            folder.mkdir(parents=True, exist_ok=True)
            x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(x).save(folder / f"{i:05d}.png")
            images[(split, i % 3, i)] = x
    return images


def _checkpoint(path: pathlib.Path) -> None:
    torch.save({"state_dict": {"module.conv1.weight": torch.ones(2, 3, 3, 3), "module.fc.bias": torch.zeros(10)}},
               path)


def test_checks_name_what_is_wrong(tmp_path):
    assert "missing" in OS.check_repo(str(tmp_path))
    assert OS.check_repo(str(_stand_in_checkout(tmp_path))) is None
    assert OS.check_settings(SETTINGS["issue"]) is None and OS.check_settings(SETTINGS["paper"]) is None
    assert "'ig_steps': 4" in OS.check_settings(SETTINGS["quick"])


def test_commands_follow_run_loop():
    cmds = OS.commands(SETTINGS["issue"], on_gpu=False)
    assert len(cmds) == 24
    assert [c[1] for c in cmds[::8]] == ["gradient_shap", "int_grad", "rise"]
    assert [c[0] for c in cmds[:2]] == ["attribute.py", "eval.py"]
    for script, method, target, argv in cmds:
        assert argv[:3] == ["simsiam_18", target, method]
        batch = argv[argv.index("--batch-size") + 1]
        assert batch == ("32" if script == "eval.py" or method == "rise" else "1")
        assert ("--comprehensive" in argv) == (script == "eval.py") and "--use-gpu" not in argv
        assert argv[argv.index("--explicand-size") + 1] == "2" and argv[argv.index("--foil-size") + 1] == "100"
    assert "--use-gpu" in OS.commands(SETTINGS["issue"], on_gpu=True)[0][3]


@pytest.mark.slow
def test_run_official_scripts_on_a_stand_in_checkout(tmp_path):
    repo, site = _stand_in_checkout(tmp_path), _torchvision_site(tmp_path)
    images = _image_folder(tmp_path / "images")
    checkpoint = tmp_path / "lincls.pth.tar"
    _checkpoint(checkpoint)
    env = _child_env()
    if not TORCHVISION_INSTALLED:
        assert "torchvision" in OS.probe_imports(str(repo), None, env)  # not importable without the site
    assert OS.probe_imports(str(repo), str(site), env) is None
    s = dict(SETTINGS["issue"], rise_masks=123)
    # Two of the 12 (method, target) pairs, both scripts each: the launcher, the data and the
    # records are what is tested here; the whole invocation list is test_commands_follow_run_loop's.
    pairs = {(OS.METHODS[0], OS.TARGETS[0]), (OS.METHODS[-1], OS.TARGETS[-1])}
    result = OS.run_official_scripts(str(repo), str(site), s, 1, str(tmp_path / "images"), str(checkpoint),
                                     str(tmp_path / "scratch"), False, env, log=lambda *a, **k: None, pairs=pairs,
                                     startup_runs=1)
    assert result["processes"] == 4 and result["cifar_batches"] == {"train": 7, "test": 3}
    assert result["startup_s"] > 0
    seconds = result["seconds"]
    assert seconds["total"] == pytest.approx(sum(i["seconds"] for i in result["invocations"]))
    assert seconds["total"] == pytest.approx(seconds["evaluation"] + sum(
        seconds[f"attribution:{m}"] for m in OS.METHODS))
    first_train = images[("train", 0, 0)]  # sorted paths: class 0 first
    last_test = images[("test", 2, 2)]
    records = sorted((tmp_path / "scratch" / "official_scripts" / "results").glob("*.pkl"))
    expected = {f"{script}_{'_'.join(argv[:3])}.pkl": argv for script, method, target, argv in OS.commands(s, False)
                if (method, target) in pairs}
    assert len(expected) == 4
    assert sorted(r.name for r in records) == sorted(expected)
    for path in records:
        with open(path, "rb") as fh:
            record = pickle.load(fh)
        assert record["argv"] == expected[path.name]
        assert os.path.samefile(record["cwd"], repo)
        assert record["classes"] == 1 and record["rise_masks"] == 123
        assert (record["train"], record["test"]) == (7, 3) and record["first_label"] == 0
        np.testing.assert_array_equal(record["first_train"], first_train)
        np.testing.assert_array_equal(record["last_test"], last_test)
        assert record["checkpoint"] == ["conv1.weight", "fc.bias"]


def test_protocol_refuses_bad_official_options(tmp_path, capsys):
    # The suite's argument checks in this process (one interpreter start-up fewer per case; the
    # import probe still launches its own process).
    import types

    from benchmarks.suites import protocol

    def run(*flags):
        with pytest.raises(SystemExit) as refused:
            protocol._parse_args(["--out", str(tmp_path / "r.md"), *flags])
        return types.SimpleNamespace(returncode=refused.value.code, stderr=capsys.readouterr().err)

    for flags, message in ((["--official-site", str(tmp_path)], "--official-site needs --official-scripts"),
                           (["--official-scripts", str(tmp_path)], "is not a checkout"),
                           (["--official-scripts", str(_stand_in_checkout(tmp_path)), "--settings", "quick"],
                            "hard-code"),
                           (["--official-scripts", str(tmp_path / "cl-explainability")], "torchvision is not importable")):
        if message.startswith("torchvision") and TORCHVISION_INSTALLED:
            continue
        proc = run(*flags)
        assert proc.returncode == 2 and message in proc.stderr, (flags, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.md").exists()


def test_report_states_the_scripts_ratio():
    """analyse/render on the committed protocol results: the scripts' ratio is total / sweep wall."""
    import json

    from benchmarks.suites import protocol

    out = json.loads((REPO / "benchmarks" / "results" / "RESULTS_protocol.json").read_text())
    if "official_scripts" not in out:
        pytest.skip("the committed protocol results were measured without --official-scripts")
    analysis = protocol.analyse(out)
    total = out["official_scripts"]["seconds"]["total"]
    for run in ("cold", "warm"):
        assert analysis["scripts_ratio"][run] == pytest.approx(total / out["sweep"][run]["wall_s"])
        assert analysis["profile"]["scripts_ratio"][run] == pytest.approx(total / out["profile"]["sweep"][run]["wall_s"])
    out["analysis"] = analysis
    text = protocol.render(out)
    assert f"**{analysis['scripts_ratio']['cold']:.1f}x cold, {analysis['scripts_ratio']['warm']:.1f}x warm**" in text
    assert "| official scripts themselves (24 processes" in text
