"""ResNet ports vs PyTorch references with random weights, through the real checkpoint formats.

Each case saves a checkpoint exactly as the original code saved it, converts it with `ports`,
restores it with `cocoa_jax.models.load`, and compares representations, head logits and the
input-gradient of a cosine target (what attributions use) with the torch model.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from cocoa_jax.models import load  # noqa: E402
from cocoa_jax_ports import CheckpointMismatchError, UnsafeCheckpointError, convert  # noqa: E402
from cocoa_jax_ports import resnet as port_resnet  # noqa: E402
from tests.reference import resnet as ref  # noqa: E402
from tests.reference.compare import (flax_reps_and_cosine_grad, network_reps, rel_err,  # noqa: E402
                                     torch_reps_and_cosine_grad)

torch.set_num_threads(2)
TOL = 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _SimSiamPretrain(torch.nn.Module):
    """Module tree of a SimSiam pre-training model: backbone (fc = Identity), projector,
    encoder = Sequential(backbone, projector), predictor -> the real checkpoint's keys."""

    def __init__(self):
        super().__init__()
        self.backbone = ref.CifarResNet18(num_classes=None)
        self.projector = torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.BatchNorm1d(64))
        self.encoder = torch.nn.Sequential(self.backbone, self.projector)
        self.predictor = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Linear(16, 64))


class _LightningNetwork(torch.nn.Module):
    """`network` of the MURA LitClassifier: torchvision backbone with fc=Identity + head."""

    def __init__(self):
        super().__init__()
        self.backbone = ref.resnet18(num_classes=None)
        self.head = torch.nn.Linear(512, 2)


def _simclr(tmp_path):
    torch.manual_seed(0)
    model = ref.randomize_(ref.resnet50(1000), 1)
    path = tmp_path / "resnet50-1x.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return "simclr_resnet50", path, model, model.fc, (64, 64), True


def _simsiam_lincls(tmp_path):
    torch.manual_seed(1)
    model = ref.randomize_(ref.CifarResNet18(10), 2)
    path = tmp_path / "checkpoint_0099.pth.tar"
    # main_lincls.py: DataParallel (`module.` prefix) + epoch/arch/best_acc1/optimizer.
    torch.save({"epoch": 100, "arch": "resnet18",
                "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
                "best_acc1": torch.tensor(92.06),
                "optimizer": {"state": {}, "param_groups": [{"lr": 30.0, "momentum": 0.9, "params": [0, 1]}]}},
               path)
    return "simsiam_cifar_resnet18", path, model, model.fc, (32, 32), True


def _simsiam_pretrain(tmp_path):
    torch.manual_seed(2)
    model = ref.randomize_(_SimSiamPretrain(), 3)
    path = tmp_path / "simsiam_pretrain.pth"
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": model.state_dict()}, path)
    return "simsiam_cifar_resnet18", path, model.backbone, None, (32, 32), False


def _classifier_lightning(tmp_path):
    torch.manual_seed(3)
    network = ref.randomize_(_LightningNetwork(), 4)
    path = tmp_path / "epoch=19-step=2300.ckpt"
    torch.save({"epoch": 19, "global_step": 2300, "pytorch-lightning_version": "1.9.0",
                "state_dict": {"network." + k: v for k, v in network.state_dict().items()},
                "hyper_parameters": {"lr": 0.001, "weight_decay": 0.001, "lr_step_size": 10},
                "optimizer_states": [], "lr_schedulers": []}, path)
    return "resnet18_classifier", path, network.backbone, network.head, (64, 64), True


def _classifier_torchvision(tmp_path):
    torch.manual_seed(4)
    model = ref.randomize_(ref.resnet18(1000), 5)
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return "resnet18_classifier", path, model, model.fc, (48, 40), False


# Each case: (arch, checkpoint path, torch encoder, torch head or None, input (H, W), check_grad).
# Gradients are compared once per architecture (compiling a ResNet gradient is the slow part).
CASES = {"simclr": _simclr, "simsiam_lincls": _simsiam_lincls, "simsiam_pretrain": _simsiam_pretrain,
         "classifier_lightning": _classifier_lightning, "classifier_torchvision": _classifier_torchvision}


# The ResNet-50 case is the long one; the four ResNet-18 formats stay in the quick set.
@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "simclr" else c
                                  for c in sorted(CASES)])
def test_converted_resnet_matches_torch(case, tmp_path, recwarn):
    arch, path, torch_encoder, torch_head, (h, w), check_grad = CASES[case](tmp_path)
    convert(arch, str(path), str(tmp_path / "out"))
    # Below the native size (cheap): ResNets pool any size, and the model must be told explicitly.
    model = load(arch, str(tmp_path / "out")).with_input_shape((h, w, 3))
    rng = np.random.RandomState(0)
    x = rng.rand(2, h, w, 3).astype(np.float32)
    direction = rng.randn(model.representation_dim).astype(np.float32)

    ref_reps, ref_grad = torch_reps_and_cosine_grad(torch_encoder, x, direction)
    if check_grad:
        reps, grad = flax_reps_and_cosine_grad(model.network_fn, model.params, x, direction)
        assert rel_err(grad, ref_grad) < TOL
    else:
        reps = network_reps(model, x)
    assert reps.shape == (2, model.representation_dim)
    assert rel_err(reps, ref_reps) < TOL

    if torch_head is None:
        assert model.head_fn is None
    else:
        with torch.no_grad():
            ref_logits = torch_head(torch.from_numpy(ref_reps)).numpy()
        assert rel_err(model.head(reps), ref_logits) < TOL
    simclr_warned = any("fc.bias" in str(w.message) for w in recwarn)
    assert simclr_warned == (arch == "simclr_resnet50")


@pytest.mark.slow
def test_float64_gradient_is_exact_so_float32_gaps_are_relu_rounding():
    """In float64 the port's input-gradient equals torch's to ~1e-15: the yardstick that tells a
    port bug from float32 noise.

    Float32 gradients of ReLU nets are not continuous in rounding: a pre-ReLU unit within ~1e-7
    of 0 can change sign between two float32 implementations (or two summation orders of one),
    which switches that unit's gradient path on or off. Measured for `_simclr` (ResNet-50) with
    this file's batch and direction at 224x224 (rel_err to torch float64): Flax float64 1.8e-15;
    torch float32 8.9e-7; Flax float32 5.3e-4 (image 0 only). The whole Flax gap is ONE unit,
    image 0 layer4.2 bn2 output at (h=2, w=5, c=388): +4.8e-8 in float64, -5.4e-8 in Flax
    float32 (that layer's max float32 error: 6.1e-7 Flax, 9.3e-7 torch). Float64 rerun with just
    that ReLU's derivative flipped matches Flax float32 to 5.4e-7. Torch float32 is no different:
    with 1 thread it flips layer3.3's output unit at (4, 0, c=166) (-9.2e-8 in float64) and is
    3.6e-3 off the float64 gradient, 8.4e-7 off the float64 gradient with that unit flipped.
    Max-pool ties play no part: the 3x3/2 pool only ties on zeros (ReLU outputs whose
    pre-activations are negative, so the ReLU derivative is 0 wherever the tie routes the
    gradient), and both frameworks route a tie to the first maximum anyway.
    A reduced bottleneck net (stem, max-pool, projection and identity shortcuts) keeps this cheap.
    """
    from cocoa_jax.models.resnet import ResNet
    from cocoa_jax_ports.common import fill_variables

    torch.manual_seed(6)
    torch_model = ref.randomize_(ref.TorchvisionResNet(ref.TvBottleneck, (2, 1, 1, 1)), 7).double()
    torch_model.requires_grad_(False)
    module = ResNet(block="bottleneck", stage_sizes=(2, 1, 1, 1), stem="imagenet")
    state_dict = torch_model.state_dict()
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32)))
    variables = fill_variables(abstract, state_dict, port_resnet.torchvision_key, what="test",
                               ignore=[k for k in state_dict if k.endswith("num_batches_tracked")])
    rng = np.random.RandomState(0)
    x, direction = rng.rand(1, 224, 224, 3), rng.randn(2048)

    ref_reps, ref_grad = torch_reps_and_cosine_grad(torch_model, x, direction)
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables)
        reps, grad = flax_reps_and_cosine_grad(module.apply, params64, x, direction)
    assert grad.dtype == np.float64 and ref_grad.dtype == np.float64
    assert rel_err(reps, ref_reps) < 1e-12
    assert rel_err(grad, ref_grad) < 1e-12


def test_round_trip_is_bit_identical(tmp_path):
    arch, path, *_ = _simsiam_lincls(tmp_path)
    state_dict, _ = port_resnet.simsiam_state_dict(torch.load(path, weights_only=True))
    _, converted = port_resnet.convert_state_dict(arch, state_dict, what="test")
    convert(arch, str(path), str(tmp_path / "out"))
    restored = load(arch, str(tmp_path / "out")).params
    flat_converted = dict(jax.tree_util.tree_leaves_with_path(converted))
    flat_restored = dict(jax.tree_util.tree_leaves_with_path(restored))
    assert flat_converted.keys() == flat_restored.keys()
    for key, value in flat_converted.items():
        restored_value = np.asarray(flat_restored[key])
        assert restored_value.dtype == np.float32
        assert np.array_equal(restored_value, value), key
    # And the converted values are the torch tensors, re-laid out (spot checks).
    sd = state_dict
    np.testing.assert_array_equal(restored["params"]["layer2_0"]["downsample_conv"]["kernel"],
                                  sd["layer2.0.downsample.0.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(restored["batch_stats"]["layer4_1"]["bn2"]["var"],
                                  sd["layer4.1.bn2.running_var"].numpy())
    np.testing.assert_array_equal(restored["params"]["fc"]["kernel"], sd["fc.weight"].numpy().T)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_load_needs_no_torch(tmp_path):
    arch, path, *_ = _simsiam_pretrain(tmp_path)
    convert(arch, str(path), str(tmp_path / "out"))
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        "import numpy as np, cocoa_jax, cocoa_jax.models as m\n"
        f"model = m.load({arch!r}, {str(tmp_path / 'out')!r})\n"
        "print(model.encode(np.zeros((1, 32, 32, 3), np.float32)).shape, model.representation_dim)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    assert "(1, 512) 512" in result.stdout


@pytest.fixture(scope="module")
def resnet18_state_dict():
    torch.manual_seed(5)
    return ref.randomize_(ref.resnet18(2), 6).state_dict()


@pytest.mark.parametrize("edit, key", [
    ("delete", "layer3.1.bn2.running_var"),
    ("add", "layer5.0.conv1.weight"),
    ("reshape", "layer2.0.conv1.weight"),
])
def test_bad_keys_are_named(resnet18_state_dict, tmp_path, edit, key):
    state_dict = dict(resnet18_state_dict)
    if edit == "delete":
        del state_dict[key]
    elif edit == "add":
        state_dict[key] = torch.zeros(3)
    else:
        state_dict[key] = torch.zeros(128, 64, 3, 1)
    torch.save(state_dict, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")):
        convert("resnet18_classifier", str(tmp_path / "bad.pth"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_format_specific_errors(resnet18_state_dict, tmp_path):
    lightning = {"state_dict": {"network.backbone." + k: v for k, v in resnet18_state_dict.items()
                                if not k.startswith("fc.")}}
    lightning["state_dict"]["network.extra.weight"] = torch.zeros(2)
    torch.save(lightning, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"network\.extra\.weight"):
        convert("resnet18_classifier", str(tmp_path / "lightning.ckpt"), str(tmp_path / "a"))
    torch.save({"epoch": 1, "arch": "resnet50", "state_dict": resnet18_state_dict}, tmp_path / "ss.pth")
    with pytest.raises(CheckpointMismatchError, match="resnet50"):
        convert("simsiam_cifar_resnet18", str(tmp_path / "ss.pth"), str(tmp_path / "b"))
    # A torchvision ResNet-18 is not a SimCLR ResNet-50: the first differing key is named.
    torch.save({"state_dict": resnet18_state_dict}, tmp_path / "r18.pth")
    with pytest.raises(CheckpointMismatchError, match=r"key '[\w.]+' has shape"):
        convert("simclr_resnet50", str(tmp_path / "r18.pth"), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="arch"):
        convert("resnet99", str(tmp_path / "r18.pth"), str(tmp_path / "d"))


def test_pickled_objects_need_explicit_opt_in(resnet18_state_dict, tmp_path):
    # Older Lightning files pickle hyper-parameters as objects: weights_only refuses them.
    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": resnet18_state_dict, "hyper_parameters": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="unsafe-unpickle"):
        convert("resnet18_classifier", str(path), str(tmp_path / "out"))
    convert("resnet18_classifier", str(path), str(tmp_path / "out"), unsafe_unpickle=True)
    assert load("resnet18_classifier", str(tmp_path / "out")).representation_dim == 512


def test_cli_convert_and_load_errors(resnet18_state_dict, tmp_path, capsys):
    from cocoa_jax.cli import main

    torch.save(resnet18_state_dict, tmp_path / "r18.pth")
    out = str(tmp_path / "out")
    assert main(["convert", "resnet18_classifier", str(tmp_path / "r18.pth"), out]) == 0
    assert main(["convert", "resnet18_classifier", str(tmp_path / "r18.pth"), out]) == 2  # exists
    err = capsys.readouterr().err
    assert err.startswith("cocoa-jax convert: error: ") and "exists" in err and "--overwrite" in err
    bad = dict(resnet18_state_dict)
    del bad["fc.bias"]
    torch.save(bad, tmp_path / "bad.pth")
    assert main(["convert", "resnet18_classifier", str(tmp_path / "bad.pth"), out, "--overwrite"]) == 2
    assert "fc.bias" in capsys.readouterr().err
    model = load("resnet18_classifier", out)
    assert model.head_fn is not None and model.input_shape == (224, 224, 3)
    with pytest.raises(ValueError, match="simsiam_cifar_resnet18"):
        load("simsiam_cifar_resnet18", out)
    with pytest.raises(ValueError, match=r"`x` must have rank 4"):
        model.encode(np.zeros((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"ONE image"):  # used to give a 7-long vector silently
        model.encode_fn(model.params, np.zeros((224, 224, 3), np.float32))


# The SimSiam CIFAR-10 recipe's transforms.Normalize, restated (independent of cocoa_jax's table).
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


@pytest.mark.slow
def test_end_to_end_cocoa_gradient_matches_torch(tmp_path):
    """load -> cocoa_jax.targets.cocoa -> explain_fn -> attribution on [0, 1] pixels (the easy
    path: CIFAR mean/std applied inside), vs the same COCOA score (mean cosine to corpus minus
    mean cosine to foil, eq. 3) of the torch module fed normalised pixels, differentiated in torch
    with respect to the pixels."""
    targets = pytest.importorskip("cocoa_jax.targets")
    attribution = pytest.importorskip("cocoa_jax.attribution")
    arch, path, torch_encoder, *_ = _simsiam_lincls(tmp_path)
    convert(arch, str(path), str(tmp_path / "out"))
    model = load(arch, str(tmp_path / "out"))
    rng = np.random.RandomState(3)
    corpus, foil = rng.rand(4, 32, 32, 3).astype(np.float32), rng.rand(6, 32, 32, 3).astype(np.float32)
    x = rng.rand(32, 32, 3).astype(np.float32)
    target = targets.cocoa(model.encode(corpus), model.encode(foil), similarity="cosine")
    f = targets.explain_fn(lambda batch: model.encode_fn(model.params, batch), target)
    attr = np.asarray(jax.jit(lambda v: attribution.vanilla_gradients(f, v))(x))

    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (CIFAR_MEAN, CIFAR_STD))
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    encoder = lambda pixels: torch_encoder((pixels - mean) / std)  # the SimSiam CIFAR transform's Normalize
    with torch.no_grad():
        unit = lambda r: r / r.norm(dim=-1, keepdim=True)
        corpus_u, foil_u = unit(encoder(nchw(corpus))), unit(encoder(nchw(foil)))
    xt = nchw(x[None]).requires_grad_(True)
    u = unit(encoder(xt))
    ((u @ corpus_u.T).mean() - (u @ foil_u.T).mean()).backward()
    expected = xt.grad.numpy()[0].transpose(1, 2, 0)
    assert attr.shape == x.shape
    assert rel_err(attr, expected) < 1e-4  # the fast path (Prop. 3.3) reorders float sums
