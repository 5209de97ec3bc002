"""Every mistake a user can make: one clear error naming what to fix, and nothing written.

Table-driven: each case states the exact exception type (API) or exit status (command line),
a fragment the message must contain (the argument's name), and, for commands, that stderr is
one `cocoa-jax CMD: error: ...` line without a traceback and that no output appeared.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import models
from cocoa_jax.cli import main
from cocoa_jax.models.clip import ClipConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# orbax's aborted background reads of a damaged checkpoint report "Event loop is closed" late.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


# ----------------------------------------------------------------------------- models: inputs

def _zeros_model(arch, config):
    """A LoadedModel with all-zero variables of the right shapes (no torch, nothing trained)."""
    _, abstract = models.init_abstract(arch, config)
    return models.make_loaded(arch, config, jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), abstract))


TINY_CLIP = dataclasses.asdict(ClipConfig(embed_dim=8, image_resolution=32, vision_layers=1, vision_width=64,
                                          vision_patch_size=16, context_length=8, vocab_size=50,
                                          transformer_width=64, transformer_layers=1))
TINY_RESNET = {"block": "basic", "stage_sizes": [1, 1, 1, 1], "stem": "cifar", "num_classes": 10}


@pytest.fixture(scope="module")
def zoo():
    return {"digits": models.load("digits"),
            "resnet": _zeros_model("simsiam_cifar_resnet18", TINY_RESNET),
            "clip": _zeros_model("clip_vit_b32", TINY_CLIP)}


# (model, function, bad input, exception, fragments of the message)
INPUT_CASES = [
    ("digits", "encode_fn", np.zeros((32, 32, 1), np.float32), ValueError, ["`x`", "ONE image", "x[None]"]),
    ("digits", "encode_fn", np.zeros((2, 32, 32, 3), np.float32), ValueError, ["`x`", "3 channel", "expects 1"]),
    ("digits", "encode_fn", np.zeros((2, 28, 28, 1), np.float32), ValueError, ["`x`", "28x28", "32x32"]),
    ("digits", "encode_fn", np.zeros((32, 32), np.float32), ValueError, ["`x`", "rank 4"]),
    ("digits", "encode_fn", np.zeros((2, 32, 32, 1), np.complex64), TypeError, ["`x`", "dtype"]),
    ("resnet", "encode_fn", np.zeros((32, 32, 3), np.float32), ValueError, ["`x`", "ONE image"]),
    ("resnet", "encode_fn", np.zeros((2, 32, 32, 1), np.float32), ValueError, ["`x`", "1 channel", "expects 3"]),
    ("resnet", "head_fn", np.zeros((2, 64), np.float32), ValueError, ["`reps`", "(N, 512)"]),
    ("resnet", "head_fn", np.zeros((512,), np.float32), ValueError, ["`reps`", "(N, 512)"]),
    ("clip", "encode_fn", np.zeros((2, 32, 32, 1), np.float32), ValueError, ["`x`", "1 channel", "expects 3"]),
    ("clip", "encode_fn", np.zeros((32, 32, 3), np.float32), ValueError, ["`x`", "ONE image"]),
    ("clip", "encode_fn", np.zeros((2, 64, 64, 3), np.float32), ValueError, ["`x`", "64x64", "32x32"]),
    ("clip", "encode_text_fn", np.zeros((2, 8), np.float32), TypeError, ["`tokens`", "integer"]),
    ("clip", "encode_text_fn", np.zeros((2, 9), np.int32), ValueError, ["`tokens`", "L <= 8"]),
    ("clip", "encode_text_fn", np.zeros((8,), np.int32), ValueError, ["`tokens`", "(N, L)"]),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("model_name, fn_name, bad, exc, fragments", INPUT_CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(INPUT_CASES)])
def test_model_functions_refuse_bad_shapes(zoo, jit, model_name, fn_name, bad, exc, fragments):
    model = zoo[model_name]
    fn = getattr(model, fn_name)
    fn = jax.jit(fn) if jit else fn  # shape checks are static: the same error while tracing
    with pytest.raises(exc) as info:
        fn(model.params, bad)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.slow  # compiles every model of the zoo
def test_good_inputs_still_work_under_jit_and_vmap(zoo):
    digits = zoo["digits"]
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    eager = np.asarray(digits.encode_fn(digits.params, x))
    assert eager.shape == (2, 128)
    np.testing.assert_allclose(np.asarray(jax.jit(digits.encode_fn)(digits.params, x)), eager, rtol=1e-5, atol=1e-6)
    stacked = jax.vmap(lambda xb: digits.encode_fn(digits.params, xb))(np.stack([x, x]))
    np.testing.assert_allclose(np.asarray(stacked[1]), eager, rtol=1e-5, atol=1e-6)
    clip = zoo["clip"]
    assert clip.encode_text_fn(clip.params, np.zeros((3, 5), np.int32)).shape == (3, 8)
    resnet = zoo["resnet"]
    assert resnet.head_fn(resnet.params, np.zeros((2, 512), np.float32)).shape == (2, 10)


def test_other_sizes_only_by_explicit_request(zoo):
    resnet = zoo["resnet"].with_input_shape((16, 16, 3))  # a convnet pools any size
    assert resnet.encode_fn(resnet.params, np.zeros((1, 16, 16, 3), np.float32)).shape == (1, 512)
    with pytest.raises(ValueError, match="native input shape"):
        zoo["clip"].with_input_shape((64, 64, 3))  # a ViT's positional embedding fixes the size
    with pytest.raises(ValueError, match="channel"):
        zoo["digits"].with_input_shape((32, 32, 3))


# ----------------------------------------------------------------------------- models: loading

def _damage_truncate_json(d):
    with open(os.path.join(d, "model.json"), "r+") as f:
        f.truncate(20)


def _damage_remove(*parts):
    def damage(d):
        path = os.path.join(d, *parts)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return damage


def _damage_data_files(d):
    files = glob.glob(os.path.join(d, "variables", "ocdbt.process_0", "d", "*"))
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(10)


def _damage_config(d):
    with open(os.path.join(d, "model.json"), "w") as f:
        f.write('{"format": 1, "arch": "digits", "config": {"widths": 3}}')


# (damage, exception, fragments)
DAMAGE_CASES = {
    "truncated model.json": (_damage_truncate_json, models.ModelDirError, ["model.json", "not valid JSON"]),
    "missing model.json": (_damage_remove("model.json"), FileNotFoundError, ["model.json"]),
    "missing variables/": (_damage_remove("variables"), FileNotFoundError, ["'variables'"]),
    "missing _METADATA": (_damage_remove("variables", "_METADATA"), models.ModelDirError,
                          ["variables/_METADATA", "missing"]),
    "missing manifest": (_damage_remove("variables", "manifest.ocdbt"), models.ModelDirError,
                         ["variables/manifest.ocdbt", "missing"]),
    "truncated data files": (_damage_data_files, models.ModelDirError, ["could not be restored"]),
    "invalid config": (_damage_config, models.ModelDirError, ["invalid config"]),
}


@pytest.fixture(scope="module")
def saved_digits(tmp_path_factory, zoo):
    out = str(tmp_path_factory.mktemp("digits_model") / "model")
    models.save("digits", models.DIGITS_CONFIG, zoo["digits"].params, out)
    return out


def test_saved_digits_dir_loads_like_any_arch(saved_digits, zoo):
    model = models.load("digits", saved_digits)
    x = np.random.default_rng(1).random((2, 32, 32, 1), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(model.encode(x)), np.asarray(zoo["digits"].encode(x)))


@pytest.mark.parametrize("case", sorted(DAMAGE_CASES))
def test_damaged_model_dir_names_the_file(saved_digits, tmp_path, case):
    damage, exc, fragments = DAMAGE_CASES[case]
    broken = str(tmp_path / "broken")
    shutil.copytree(saved_digits, broken)
    damage(broken)
    with pytest.raises(exc) as info:
        models.load("digits", broken)
    message = str(info.value)
    assert broken in message and "\n" not in message and len(message) < 600, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("arch, directory, exc, fragment", [
    ("resnet99", None, ValueError, "arch must be one of"),
    ("simclr_resnet50", None, ValueError, "directory is required"),
    ("digits", "/nonexistent/model", FileNotFoundError, "does not exist"),
    ("digits", 3, TypeError, "directory must be a path"),
])
def test_load_argument_errors(arch, directory, exc, fragment):
    with pytest.raises(exc, match=fragment):
        models.load(arch, directory)


def test_save_refuses_non_empty_dir_naming_the_flag(saved_digits, zoo):
    before = sorted(os.listdir(saved_digits))
    with pytest.raises(FileExistsError, match="--overwrite"):
        models.save("digits", models.DIGITS_CONFIG, zoo["digits"].params, saved_digits)
    assert sorted(os.listdir(saved_digits)) == before


def test_digits_is_an_ordinary_architecture():
    assert "digits" in models.list_architectures() and "digits" in models.ARCHITECTURES
    assert "digits" not in models.CONVERTIBLE
    # No import cycle: the network module does not import the registry.
    source = open(os.path.join(REPO, "cocoa_jax", "models", "small_resnet.py")).read()
    assert "registry" not in source.replace("does not import the registry", "")


# ----------------------------------------------------------------------------- command line

def _run_cli(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _assert_one_line_error(err, command, fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cocoa-jax {command}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_version_and_python_m(capsys):
    from cocoa_jax import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"cocoa-jax {__version__}"
    result = subprocess.run([sys.executable, "-m", "cocoa_jax", "--version"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == f"cocoa-jax {__version__}", result.stderr


def test_unknown_command_is_argparse_status_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explian"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("cocoa-jax: error: unknown command 'explian'"), err
    assert "did you mean explain?" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    from cocoa_jax.commands import explain

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(explain, "run", interrupted)
    status, out, err = _run_cli(capsys, ["explain"])
    assert status == 130 and err.strip() == "cocoa-jax explain: interrupted (Ctrl-C)" and "Traceback" not in err


def test_usage_error_helper_format(capsys):
    from cocoa_jax.commands.errors import UsageError, error_line, fail

    assert error_line("sweep", "bad") == "cocoa-jax sweep: error: bad"
    assert fail("report", "no such run") == 2
    assert capsys.readouterr().err == "cocoa-jax report: error: no such run\n"
    assert issubclass(UsageError, Exception) and not issubclass(UsageError, ValueError)


EXPLAIN_TINY = ["--explicands", "1", "--n-masks", "8", "--n-steps", "2", "--n-samples", "2",
                "--corpus-size", "5", "--foil-size", "5", "--quiet"]


def test_explain_refuses_to_overwrite_an_earlier_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text("earlier run")
    status, _, err = _run_cli(capsys, ["explain", *EXPLAIN_TINY, "--out", str(out)])
    assert status == 2
    _assert_one_line_error(err, "explain", ["settings.json", "--overwrite"])
    assert sorted(os.listdir(out)) == ["settings.json"] and (out / "settings.json").read_text() == "earlier run"


def test_explain_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "file.txt"
    out.write_text("x")
    status, _, err = _run_cli(capsys, ["explain", *EXPLAIN_TINY, "--out", str(out)])
    assert status == 2
    _assert_one_line_error(err, "explain", ["--out", "not a directory"])
    assert out.read_text() == "x"


def test_train_digits_never_replaces_shipped_weights_unasked(tmp_path, capsys):
    from cocoa_jax.models.small_resnet import WEIGHTS_DIR

    existing = tmp_path / "ckpt"
    existing.mkdir()
    cases = [
        ([], ["--out DIR is required", "--replace-shipped"]),
        (["--out", WEIGHTS_DIR], ["shipped", "--replace-shipped"]),
        (["--out", str(existing)], ["already exists", "--overwrite"]),
        (["--out", str(tmp_path / "new"), "--steps", "0"], ["--steps"]),
        (["--out", str(tmp_path / "new"), "--lr", "nan"], ["--lr"]),
    ]
    before = os.path.getmtime(os.path.join(WEIGHTS_DIR, "_CHECKPOINT_METADATA"))
    for argv, fragments in cases:
        status, _, err = _run_cli(capsys, ["train-digits", "--quiet", *argv])
        assert status == 2, argv
        _assert_one_line_error(err, "train-digits", fragments)
    assert not (tmp_path / "new").exists() and os.listdir(existing) == []
    assert os.path.getmtime(os.path.join(WEIGHTS_DIR, "_CHECKPOINT_METADATA")) == before


# ----------------------------------------------------------------------------- convert

def _text_file(d):
    path = d / "notes.txt"
    path.write_text("hello, this is not a checkpoint\n")
    return path


def _random_bytes(d):
    path = d / "random.pth"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _truncated_zip(d):
    torch = pytest.importorskip("torch")
    path = d / "truncated.pth"
    torch.save({"w": torch.zeros(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty_file(d):
    path = d / "empty.pth"
    path.write_bytes(b"")
    return path


def _pickled_object(d):
    torch = pytest.importorskip("torch")
    path = d / "objects.ckpt"
    # As older Lightning files do: hyper-parameters pickled as an object (a non-allowlisted global).
    import argparse

    torch.save({"state_dict": {"w": torch.zeros(2)}, "hparams": argparse.Namespace(lr=0.1)}, path)
    return path


# (make checkpoint, fragments that must appear, fragments that must NOT appear)
CONVERT_CASES = {
    "missing file": (lambda d: d / "nope.pth", ["does not exist"], ["unsafe"]),
    "a directory": (lambda d: d, ["is not a file"], ["unsafe"]),
    "text file": (_text_file, ["not a PyTorch checkpoint"], ["unsafe-unpickle", "KeyError"]),
    "random bytes": (_random_bytes, ["not a PyTorch checkpoint"], ["unsafe-unpickle"]),
    "empty file": (_empty_file, ["is empty"], ["unsafe-unpickle"]),
    "truncated zip": (_truncated_zip, ["truncated or damaged zip"], ["unsafe-unpickle"]),
    "pickled objects": (_pickled_object, ["argparse.Namespace", "--unsafe-unpickle"], ["overwrite=True"]),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", sorted(CONVERT_CASES))
def test_convert_tells_checkpoint_problems_apart(tmp_path, capsys, case):
    pytest.importorskip("torch")
    make, wanted, unwanted = CONVERT_CASES[case]
    src = tmp_path / "src"
    src.mkdir()
    checkpoint = make(src)
    out = tmp_path / "out"
    status, stdout, err = _run_cli(capsys, ["convert", "resnet18_classifier", str(checkpoint), str(out)])
    assert status == 2 and stdout == ""
    _assert_one_line_error(err, "convert", wanted)
    for fragment in unwanted:
        assert fragment not in err, (fragment, err)
    assert not out.exists()


@pytest.mark.torch
def test_convert_checks_out_dir_before_reading_the_checkpoint(tmp_path, capsys):
    pytest.importorskip("torch")
    checkpoint = _pickled_object(tmp_path)  # would be refused if it were read
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    status, _, err = _run_cli(capsys, ["convert", "resnet18_classifier", str(checkpoint), str(out)])
    assert status == 2
    _assert_one_line_error(err, "convert", ["not empty", "--overwrite"])
    assert "Namespace" not in err and "overwrite=True" not in err
    assert os.listdir(out) == ["keep.txt"]


@pytest.mark.torch
def test_convert_reports_keys_as_stored_in_the_file(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from tests.reference import resnet as ref

    state_dict = ref.CifarResNet18(num_classes=10).state_dict()
    key = "layer2.0.shortcut.0.weight"  # torchvision would call it layer2.0.downsample.0.weight
    assert key in state_dict
    state_dict[key] = torch.zeros(3, 3, 1, 1)
    torch.save({"epoch": 1, "arch": "resnet18", "state_dict": {"module." + k: v for k, v in state_dict.items()}},
               tmp_path / "simsiam.pth")
    status, _, err = _run_cli(capsys, ["convert", "simsiam_cifar_resnet18", str(tmp_path / "simsiam.pth"),
                                       str(tmp_path / "out")])
    assert status == 2
    _assert_one_line_error(err, "convert", [f"'module.{key}'", "has shape"])
    assert "layer2.0.downsample" not in err and not (tmp_path / "out").exists()
    # A missing key is named as the file's format would store it.
    del state_dict[key]
    torch.save({"state_dict": {"backbone." + k: v for k, v in state_dict.items() if not k.startswith("fc.")}},
               tmp_path / "pretrain.pth")
    status, _, err = _run_cli(capsys, ["convert", "simsiam_cifar_resnet18", str(tmp_path / "pretrain.pth"),
                                       str(tmp_path / "out")])
    assert status == 2
    _assert_one_line_error(err, "convert", [f"'backbone.{key}'", "missing"])


# ----------------------------------------------------------------------------- faults of the machine
# Output locations are proven writable before any work (`files.check_writable`, exit 2); a write
# that fails during the work is one line, exit 1 (`cli.machine_fault`), with nothing half-written.
# Real file-system faults (read-only, full) on tmpfs mounts: tests/product/test_machine_faults.py.

def _tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root)
                  for n in dirs + names)


def test_check_writable_accepts_a_missing_folder_and_creates_nothing(tmp_path):
    from cocoa_jax import files

    target = tmp_path / "a" / "b" / "out"
    assert files.check_writable(str(target)) == str(target)
    assert files.check_writable(str(tmp_path)) == str(tmp_path)
    assert _tree(tmp_path) == [] and files.remove_temporaries() == []  # the probe is gone, unregistered


@pytest.mark.parametrize("where, fragment", [
    ("file", "exists and is not a directory"),
    ("file/out", "cannot be created: {root}/file is a file, not a directory"),
    ("file/deeper/out", "cannot be created: {root}/file is a file, not a directory"),
])
def test_check_writable_refuses_a_file_in_the_way(tmp_path, where, fragment):
    from cocoa_jax import files

    (tmp_path / "file").write_text("mine")
    with pytest.raises(files.UnwritableLocation) as info:
        files.check_writable(str(tmp_path / where))
    assert str(info.value) == fragment.format(root=tmp_path)
    assert _tree(tmp_path) == ["file"] and (tmp_path / "file").read_text() == "mine"


def _probe_as_nobody(target: str) -> str:
    """`files.check_writable(target)` in a forked child that dropped to the unprivileged user
    `nobody` (uid/gid 65534): its refusal message, or "writable". (A fork, not a new interpreter:
    this one may live where `nobody` cannot execute it.)"""
    import warnings

    from cocoa_jax import files

    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX warns that its threads do not survive a fork: unused here
        pid = os.fork()
    if pid == 0:  # the child: only the standard library and cocoa_jax.files, then os._exit
        try:
            os.close(read_end)
            try:
                os.setgid(65534)
                os.setuid(65534)
            except OSError:
                os.write(write_end, b"!cannot drop privileges")
                raise
            try:
                files.check_writable(target)
                message = "writable"
            except files.UnwritableLocation as err:
                message = str(err)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_check_writable_refuses_a_folder_without_write_permission(tmp_path):
    """A read-only folder (chmod 555), for real: as root (where chmod does not stop writes) the
    probe runs in a forked child that dropped to the unprivileged user `nobody`."""
    import tempfile

    from cocoa_jax import files

    root = tempfile.mkdtemp(prefix="cocoa-jax-perm-")  # outside tmp_path: `nobody` must reach it
    try:
        os.chmod(root, 0o755)
        locked = os.path.join(root, "locked")
        os.mkdir(locked)
        os.chmod(locked, 0o555)
        expected = f"cannot be written: Permission denied ({locked})"
        for target in (locked, os.path.join(locked, "new", "out")):
            if os.geteuid() == 0:
                message = _probe_as_nobody(target)
                if message == "!cannot drop privileges":
                    pytest.skip("running as root where setuid(65534) is refused: no unprivileged user to test as")
            else:
                with pytest.raises(files.UnwritableLocation) as info:
                    files.check_writable(target)
                message = str(info.value)
            assert message == expected, target
        assert os.listdir(locked) == []
        if os.geteuid() == 0:  # the same child writes where it may: the refusal is the folder's
            writable = os.path.join(root, "open")
            os.mkdir(writable)
            os.chmod(writable, 0o777)
            assert _probe_as_nobody(writable) == "writable" and os.listdir(writable) == []
    finally:
        os.chmod(os.path.join(root, "locked"), 0o755)
        shutil.rmtree(root)


def test_a_failed_commit_leaves_nothing_and_names_the_final_path(tmp_path, monkeypatch):
    """A disk that fills up during the final write (fsync reports ENOSPC, as it does on a full
    disk with delayed allocation): no output, no temporary, no folder the commit created."""
    import errno

    from cocoa_jax import files

    (tmp_path / "kept.txt").write_text("earlier")
    outputs = files.Outputs()
    outputs.add_bytes(str(tmp_path / "kept.txt"), b"new")
    outputs.add_bytes(str(tmp_path / "new" / "deeper" / "b.npz"), b"x" * 1000)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        outputs.commit()
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename in (str(tmp_path / "kept.txt"), str(tmp_path / "new" / "deeper" / "b.npz"))
    assert _tree(tmp_path) == ["kept.txt"] and (tmp_path / "kept.txt").read_text() == "earlier"
    assert files.remove_temporaries() == []


def test_a_commit_that_cannot_create_its_folder_removes_the_ones_it_made(tmp_path):
    from cocoa_jax import files

    (tmp_path / "file").write_text("mine")
    outputs = files.Outputs()
    outputs.add_bytes(str(tmp_path / "a" / "b" / "x.json"), b"{}")
    outputs.add_bytes(str(tmp_path / "file" / "y.json"), b"{}")  # sorted after a/b: a/b exists by then
    with pytest.raises(FileExistsError):  # makedirs(".../file"): a file is in the way
        outputs.commit()
    assert _tree(tmp_path) == ["file"]


def test_a_library_error_that_reports_a_full_disk_becomes_an_os_error(tmp_path):
    """orbax reports a full disk as "ValueError: RESOURCE_EXHAUSTED ... [os_error_code='28']";
    writing a directory output turns it into OSError(ENOSPC) naming the FINAL path, and removes
    the temporary together with the library's own debris (`<tmp>.orbax-checkpoint-tmp`)."""
    import errno

    from cocoa_jax import files

    target = tmp_path / "ckpt"
    outputs = files.Outputs()
    with pytest.raises(OSError) as info:
        with outputs.directory(str(target)) as tmp:
            os.makedirs(tmp + ".orbax-checkpoint-tmp/ocdbt.process_0/d")
            raise ValueError(f"RESOURCE_EXHAUSTED: Error writing \"a/0\" at local file \"{tmp}.orbax-checkpoint-tmp/\": "
                             f"No space left on device [os_error_code='28']")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert isinstance(info.value.__cause__, ValueError)
    assert _tree(tmp_path) == []
    with pytest.raises(ValueError, match="not a disk error"):  # other errors pass through as they are
        with outputs.directory(str(target)) as tmp:
            os.makedirs(tmp)
            raise ValueError("not a disk error")
    assert _tree(tmp_path) == []
    files.remove_temporaries()


@pytest.mark.parametrize("code, text, hint", [
    ("ENOSPC", "No space left on device", "free some space or write elsewhere"),
    ("EDQUOT", "Disk quota exceeded", "free some space or write elsewhere"),
    ("EROFS", "Read-only file system", "write elsewhere"),
    ("EACCES", "Permission denied", None),
])
def test_a_machine_fault_during_the_work_is_one_line_and_status_1(tmp_path, capsys, monkeypatch, code, text, hint):
    import errno

    from cocoa_jax.commands import explain

    path = str(tmp_path / "out" / "attributions.npz")

    def fails_writing(args):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), path)

    monkeypatch.setattr(explain, "run", fails_writing)
    status, out, err = _run_cli(capsys, ["explain"])
    assert status == 1
    _assert_one_line_error(err, "explain", [f"{text} ({path}); the outputs in progress were removed"])
    assert err.strip().endswith(f"removed: {hint}" if hint else "removed")


def test_a_machine_fault_of_a_sweep_says_which_units_are_kept(tmp_path, capsys, monkeypatch):
    import errno

    from cocoa_jax import interrupt
    from cocoa_jax.commands import sweep

    def fails_writing(args):
        interrupt.set_detail(lambda: "3 unit(s) of the run are finished and saved in RUN")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "RUN/units/u.npz")

    monkeypatch.setattr(sweep, "run", fails_writing)
    status, _, err = _run_cli(capsys, ["sweep", str(tmp_path / "run")])
    assert status == 1
    _assert_one_line_error(err, "sweep", ["No space left on device (RUN/units/u.npz)",
                                          "; 3 unit(s) of the run are finished and saved in RUN"])


def test_other_errors_are_not_disguised_as_machine_faults(capsys, monkeypatch):
    from cocoa_jax.commands import explain

    def bug(args):
        raise FileNotFoundError(2, "No such file or directory", "/nowhere")  # not a fault of the machine

    monkeypatch.setattr(explain, "run", bug)
    with pytest.raises(FileNotFoundError):
        main(["explain"])


def test_sweep_store_cuts_a_half_appended_row_and_keeps_the_finished_units(tmp_path, monkeypatch):
    """The disk fills up while a unit's row is appended: the bytes already written are cut off,
    the unit's npz removed, the OSError names the results file; finished units stay valid."""
    import errno

    from cocoa_jax.sweep import store as store_mod

    run = store_mod.RunStore(str(tmp_path / "run"), {"x": 1}, "hash0")
    row = {"seed": 0, "class_id": 1, "method": "rise", "targets": ["cocoa"], "measures": ["m"], "n_explicands": 1,
           "auc": {}, "seconds": 1.0, "attribution_seconds": 0.5, "evaluation_seconds": 0.5, "group_units": 1,
           "devices": 1}
    run.write_unit("u1", {"a": np.arange(3)}, row)
    before = (tmp_path / "run" / "results.p0.jsonl").read_bytes()

    class HalfWrites:  # `os`, except that write() stores half of its bytes, then the disk is full
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def write(fd, data):
            os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod, "os", HalfWrites())
    with pytest.raises(OSError) as info:
        run.write_unit("u2", {"a": np.arange(4)}, dict(row, class_id=2))
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == run.results_path
    assert (tmp_path / "run" / "results.p0.jsonl").read_bytes() == before
    assert not os.path.exists(run.unit_path("u2"))
    assert list(run.read_rows()) == ["u1"]


def test_sweep_store_that_cannot_write_its_config_leaves_no_run_directory(tmp_path, monkeypatch):
    import errno

    from cocoa_jax.sweep import store as store_mod

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        store_mod.RunStore(str(tmp_path / "runs" / "run"), {"x": 1}, "hash0")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "runs" / "run" / "config.json")
    assert _tree(tmp_path) == []


# ----------------------------------------------------------------------------- output locations, every command

def _unwritable_targets(tmp_path):
    (tmp_path / "file").write_text("mine")
    return str(tmp_path / "file" / "out")


WRITING_COMMANDS = {  # command -> argv with OUT standing for the output location
    "explain": ["explain", "--quiet", "--out", "OUT"],
    "localize": ["localize", "--quiet", "--out", "OUT"],
    "augmentations": ["augmentations", "--quiet", "--out", "OUT"],
    "sweep": ["sweep", "OUT", "--no-progress"],
    "report": ["report", "RUN", "--out", "OUT"],
    "convert": ["convert", "simsiam_cifar_resnet18", "CKPT", "OUT"],
    "train-digits": ["train-digits", "--quiet", "--out", "OUT"],
    "train-digits-clip": ["train-digits-clip", "--out", "OUT"],
    "evaluate": ["evaluate", "--maps", "CKPT", "--out", "OUT"],
}


@pytest.mark.parametrize("command", list(WRITING_COMMANDS))
def test_every_writing_command_checks_its_output_location_before_any_work(tmp_path, capsys, monkeypatch, command):
    """A file where the output folder should be created: one line naming the flag, status 2,
    before anything is read or computed (the checkpoint of `convert` is not even a checkpoint)."""
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored after the test
    out = _unwritable_targets(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (tmp_path / "ckpt.pth").write_text("not read")
    argv = [{"OUT": out, "RUN": str(run), "CKPT": str(tmp_path / "ckpt.pth")}.get(a, a)
            for a in WRITING_COMMANDS[command]]
    status, _, err = _run_cli(capsys, argv)
    assert status == 2, err
    _assert_one_line_error(err, command, [f"{out!r} cannot be created: {tmp_path / 'file'} is a file, not a directory"])
    assert _tree(tmp_path) == ["ckpt.pth", "file", "run", "run/config.json"]


TEXT_ONLY_COMMANDS = {  # image command -> argv naming the text-only sentence_bert (WEIGHTS: its model.json)
    "explain": ["explain", "--quiet", "--model", "sentence_bert", "--weights", "WEIGHTS", "--images", "IMG",
                "--corpus", "IMG", "--foil", "IMG", "--out", "OUT"],
    "augmentations": ["augmentations", "--quiet", "--model", "sentence_bert", "--weights", "WEIGHTS",
                      "--images", "IMG", "--foil", "IMG", "--out", "OUT"],
    "localize": ["localize", "--quiet", "--model", "sentence_bert", "--weights", "WEIGHTS", "--image", "IMG",
                 "--query", "dog", "--out", "OUT"],
    "evaluate": ["evaluate", "--model", "sentence_bert", "--weights", "WEIGHTS", "--images", "IMG",
                 "--corpus", "IMG", "--foil", "IMG", "--maps", "MAPS", "--out", "OUT"],
    "sweep": ["sweep", "OUT", "--no-progress", "--set", "encoder=sentence_bert", "--set", "encoder_dir=WEIGHTS"],
}


def _text_only_files(tmp_path):
    """A sentence_bert directory as far as the checks read it (model.json), an image and maps."""
    import json

    weights = tmp_path / "sentence_bert"
    weights.mkdir()
    meta = {"format": models.FORMAT_VERSION, "arch": "sentence_bert",
            "config": dict(models.ARCHITECTURES["sentence_bert"].default_config), "notes": []}
    (weights / models.METADATA_FILE).write_text(json.dumps(meta))
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "img.png")
    np.savez(tmp_path / "maps.npz", maps=np.zeros((1, 32, 32, 3), np.float32))
    return {"WEIGHTS": str(weights), "IMG": str(tmp_path / "img.png"), "MAPS": str(tmp_path / "maps.npz"),
            "OUT": str(tmp_path / "out")}


@pytest.mark.parametrize("command", list(TEXT_ONLY_COMMANDS))
def test_image_commands_refuse_a_text_only_encoder_up_front(tmp_path, capsys, monkeypatch, command):
    """`ArchSpec.images` False (sentence_bert): one line naming the flag and the image encoders to
    choose from, status 2, before the weights are read (there are none) and nothing written."""
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored after the test
    where = _text_only_files(tmp_path)
    before = _tree(tmp_path)
    argv = [where.get(a, a).replace("=WEIGHTS", f"={where['WEIGHTS']}") for a in TEXT_ONLY_COMMANDS[command]]
    status, _, err = _run_cli(capsys, argv)
    assert status == 2, err
    flag = "config field `encoder`" if command == "sweep" else "--model"
    _assert_one_line_error(err, command, [f"{flag} sentence_bert encodes text only; ", "choose an image encoder ("])
    named = err.split("choose an image encoder (")[1].split(")")[0].split(", ")
    assert "sentence_bert" not in named and all(models.ARCHITECTURES[n].images for n in named
                                                if n in models.ARCHITECTURES), named
    assert ("siglip" in named) == (command in ("explain", "augmentations", "evaluate", "sweep", "localize")), named
    assert ("--text" in err) == (command == "explain"), err
    assert _tree(tmp_path) == before


def test_the_refusal_reads_the_capability_flag_not_the_name(monkeypatch):
    """`image_encoder` follows `ArchSpec.images`: siglip marked text-only is refused (and left out of
    the choices), sentence_bert marked image-capable passes."""
    from cocoa_jax.commands.checks import image_encoder
    from cocoa_jax.commands.errors import UsageError

    table = dict(models.ARCHITECTURES)
    table["siglip"] = dataclasses.replace(table["siglip"], images=False)
    table["sentence_bert"] = dataclasses.replace(table["sentence_bert"], images=True)
    monkeypatch.setattr(models, "ARCHITECTURES", table)
    image_encoder("--model", "sentence_bert")
    with pytest.raises(UsageError, match=r"^--model siglip encodes text only; ") as info:
        image_encoder("--model", "siglip")
    offered = str(info.value).split("(")[1].rstrip(")").split(", ")
    assert "siglip" not in offered and "sentence_bert" in offered


def test_explain_text_mode_is_not_refused_for_a_text_only_encoder(tmp_path, capsys):
    """The refusal is the image mode's: with --text the run goes to the text checks (here a bad
    --seed, or a text mode without sentence_bert yet), never to `encodes text only`."""
    where = _text_only_files(tmp_path)
    status, _, err = _run_cli(capsys, ["explain", "--quiet", "--model", "sentence_bert", "--weights",
                                       where["WEIGHTS"], "--text", "a dog", "--corpus-text", "a cat",
                                       "--foil-text", "a car", "--seed", "-1", "--out", where["OUT"]])
    assert status == 2 and "encodes text only" not in err and err.startswith("cocoa-jax explain: error: "), err


# ----------------------------------------------------------------------------- packaging

@pytest.mark.slow
def test_install_adds_no_top_level_ports_module(tmp_path):
    """A real (non-editable) install of a copy of the project: `cocoa_jax_ports`, never `ports`."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(REPO, "cocoa_jax"), src / "cocoa_jax", ignore=ignore)
    shutil.copytree(os.path.join(REPO, "ports"), src / "ports", ignore=ignore)
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                             "--no-index", "--target", str(target), str(src)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    installed = set(os.listdir(target))
    assert {"cocoa_jax", "cocoa_jax_ports"} <= installed and "ports" not in installed, installed
    assert os.path.isfile(target / "cocoa_jax_ports" / "common.py")
    assert os.path.isdir(target / "cocoa_jax" / "weights" / "digits_simclr")
