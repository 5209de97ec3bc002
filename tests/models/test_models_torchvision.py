"""torchvision ResNet ports (resnet18..152) vs torchvision's own `models/resnet.py`, random weights,
through the checkpoint layouts of supervised and self-supervised training code.

The reference is torchvision 0.28's resnet.py read from its wheel and executed without
importing torchvision (`tests.reference.torchvision_source`); without the wheel the tests fall
back to `tests.reference.resnet` (our restatement of the same layout) and say so in their id.
Each SSL case wraps the same backbone the way that project saves it (see
`cocoa_jax_ports.torchvision_resnet`): the converter must find the backbone, drop and report
the training-only parts, and give the torchvision representation (pooled feature).
"""
from __future__ import annotations

import copy

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cocoa_jax.models import load  # noqa: E402
from cocoa_jax_ports import CheckpointMismatchError, convert  # noqa: E402
from tests.reference import resnet as ref  # noqa: E402
from tests.reference.compare import (flax_reps_and_cosine_grad, network_reps, rel_err,  # noqa: E402
                                     torch_reps_and_cosine_grad)
from tests.reference.torchvision_source import load_resnet_module  # noqa: E402

torch.set_num_threads(2)
TOL = 1e-5
TV = load_resnet_module()
SOURCE = f"torchvision source ({TV.wheel})" if TV else "restatement (tests.reference.resnet)"


def _torchvision(depth: int, num_classes=1000, seed=0):
    """A torchvision resnet{depth} with random BatchNorm statistics/affines and fc biases."""
    torch.manual_seed(seed)
    if TV is not None:
        model = getattr(TV, f"resnet{depth}")(weights=None, num_classes=num_classes)
    else:
        blocks = {18: (ref.TvBasicBlock, (2, 2, 2, 2)), 34: (ref.TvBasicBlock, (3, 4, 6, 3)),
                  50: (ref.TvBottleneck, (3, 4, 6, 3)), 101: (ref.TvBottleneck, (3, 4, 23, 3)),
                  152: (ref.TvBottleneck, (3, 8, 36, 3))}[depth]
        model = ref.TorchvisionResNet(*blocks, num_classes=num_classes)
    return ref.randomize_(model, seed + 1)


def _encoder(model):
    """The pooled feature: the same network with fc = Identity."""
    encoder = copy.deepcopy(model)
    encoder.fc = torch.nn.Identity()
    return encoder.eval()


def _mlp(*widths, bn=True):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if bn and i < len(widths) - 2:
            layers += [torch.nn.BatchNorm1d(b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


def _prefixed(prefix, module):
    return {prefix + k: v for k, v in module.state_dict().items()}


def _without_fc(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


# Each: model -> (checkpoint object, expected stripped prefix or None, fragments the notes name, has head)
def _plain(m):
    return m.state_dict(), None, [], True


def _moco_v2(m):
    q = copy.deepcopy(m)
    q.fc = _mlp(512, 512, 128, bn=False)  # main_moco.py --mlp: fc = Linear, ReLU, Linear
    sd = {**_prefixed("module.encoder_q.", q), **_prefixed("module.encoder_k.", q),
          "module.queue": torch.randn(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return ({"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
            "module.encoder_q.", ["module.encoder_q.fc.0.weight", "encoder_k", "module.queue", "queue_ptr"], False)


def _moco_v3(m):
    base = copy.deepcopy(m)
    base.fc = _mlp(512, 64, 32)
    sd = {**_prefixed("module.base_encoder.", base), **_prefixed("module.momentum_encoder.", base),
          **_prefixed("module.predictor.", _mlp(32, 64, 32))}
    return {"epoch": 100, "arch": "resnet18", "state_dict": sd}, "module.base_encoder.", ["momentum_encoder", "predictor"], False


def _simsiam(m):
    enc = copy.deepcopy(m)
    enc.fc = _mlp(512, 64, 64)
    sd = {**_prefixed("module.encoder.", enc), **_prefixed("module.predictor.", _mlp(64, 16, 64))}
    return {"epoch": 100, "arch": "resnet18", "state_dict": sd}, "module.encoder.", ["module.encoder.fc.", "predictor"], False


def _barlow_twins(m):
    sd = {**{"module.backbone." + k: v for k, v in _without_fc(m).items()},
          **_prefixed("module.projector.", _mlp(512, 64, 64)), **_prefixed("module.bn.", torch.nn.BatchNorm1d(64, affine=False))}
    return {"epoch": 10, "model": sd, "optimizer": {}}, "module.backbone.", ["module.projector.", "module.bn."], False


def _dino_teacher(m):
    backbone = _without_fc(m)
    head = _mlp(512, 64, 32)
    checkpoint = {"teacher": {**{"backbone." + k: v for k, v in backbone.items()}, **_prefixed("head.", head)},
                  "student": {**{"module.backbone." + k: v for k, v in backbone.items()}}, "epoch": 100}
    return checkpoint, "backbone.", ["checkpoint['teacher']", "student", "head."], False


def _byol_sequential(m):
    encoder = torch.nn.Sequential(*list(copy.deepcopy(m).children())[:-1])  # sthalles/PyTorch-BYOL
    online = {**_prefixed("encoder.", encoder), **_prefixed("projetion.net.", _mlp(512, 64, 32))}
    return ({"online_network_state_dict": online, "target_network_state_dict": online, "optimizer_state_dict": {}},
            "encoder.", ["nn.Sequential", "projetion.net.0.weight", "target_network_state_dict"], False)


def _swav(m):
    sd = {**{"module." + k: v for k, v in _without_fc(m).items()},
          **_prefixed("module.projection_head.", _mlp(512, 64, 32)), "module.prototypes.weight": torch.randn(30, 32)}
    return {"epoch": 800, "state_dict": sd}, "module.", ["projection_head", "prototypes"], False


def _solo_learn(m):
    sd = {**{"backbone." + k: v for k, v in _without_fc(m).items()}, **_prefixed("projector.", _mlp(512, 64, 32)),
          **{"momentum_backbone." + k: v for k, v in _without_fc(m).items()},
          "classifier.weight": m.fc.weight, "classifier.bias": m.fc.bias}
    return {"state_dict": sd, "epoch": 400}, "backbone.", ["momentum_backbone", "classifier"], True


def _lincls_dataparallel(m):
    return {"epoch": 100, "arch": "resnet18", "state_dict": _prefixed("module.", m)}, "module.", [], True


LAYOUTS = {"plain": _plain, "moco_v2": _moco_v2, "moco_v3": _moco_v3, "simsiam": _simsiam,
           "barlow_twins": _barlow_twins, "dino_teacher": _dino_teacher, "byol_sequential": _byol_sequential,
           "swav": _swav, "solo_learn": _solo_learn, "lincls_dataparallel": _lincls_dataparallel}


@pytest.fixture(scope="module")
def resnet18():
    return _torchvision(18, num_classes=10, seed=0)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_ssl_layouts_resnet18(layout, resnet18, tmp_path):
    checkpoint, prefix, fragments, has_head = LAYOUTS[layout](resnet18)
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    convert("resnet18", str(tmp_path / "ckpt.pth"), str(tmp_path / "out"))
    model = load("resnet18", str(tmp_path / "out")).with_input_shape((32, 32, 3))
    notes = " | ".join(model.notes)
    if prefix:
        assert f"stripped the prefix {prefix!r}" in notes
    else:
        assert "stripped" not in notes
    for fragment in fragments:
        assert fragment in notes, (fragment, notes)
    x = np.random.RandomState(1).rand(2, 32, 32, 3).astype(np.float32)
    direction = np.random.RandomState(2).randn(512).astype(np.float32)
    encoder = _encoder(resnet18)
    if layout in ("plain", "moco_v3"):  # gradients for two formats (compiling them is the slow part)
        reps, grad = flax_reps_and_cosine_grad(model.network_fn, model.params, x, direction)
        ref_reps, ref_grad = torch_reps_and_cosine_grad(encoder, x, direction)
        assert rel_err(grad, ref_grad) < TOL
    else:
        with jax.disable_jit():  # op by op: the ops compiled for the first layout serve the next ones
            reps = network_reps(model, x)
        with torch.no_grad():
            ref_reps = encoder(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert reps.shape == (2, 512) and rel_err(reps, ref_reps) < TOL
    assert (model.head_fn is not None) == has_head
    if has_head:
        with torch.no_grad():
            logits = resnet18.fc(torch.from_numpy(ref_reps)).numpy()
        assert rel_err(model.head(reps), logits) < TOL


@pytest.mark.parametrize("depth", [pytest.param(34, marks=pytest.mark.slow), pytest.param(50, marks=pytest.mark.slow)])
def test_deeper_resnets_match_torchvision(depth, tmp_path):
    """resnet34 (BasicBlock [3, 4, 6, 3]) and resnet50 (Bottleneck) with their fc heads, 32 px."""
    model_t = _torchvision(depth, num_classes=7, seed=depth)
    torch.save(model_t.state_dict(), tmp_path / "r.pth")
    convert(f"resnet{depth}", str(tmp_path / "r.pth"), str(tmp_path / "out"))
    model = load(f"resnet{depth}", str(tmp_path / "out")).with_input_shape((32, 32, 3))
    assert model.input_shape == (32, 32, 3) and model.representation_dim == (512 if depth == 34 else 2048)
    x = np.random.RandomState(3).rand(2, 32, 32, 3).astype(np.float32)
    direction = np.random.RandomState(4).randn(model.representation_dim).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(model.network_fn, model.params, x, direction)
    ref_reps, ref_grad = torch_reps_and_cosine_grad(_encoder(model_t), x, direction)
    assert rel_err(reps, ref_reps) < TOL and rel_err(grad, ref_grad) < TOL
    with torch.no_grad():
        assert rel_err(model.head(reps), model_t.fc(torch.from_numpy(ref_reps)).numpy()) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("depth", [101, 152])
def test_resnet101_152_layouts(depth, tmp_path):
    """Every key of torchvision's resnet101/152 (fc included) is consumed; representations agree."""
    model_t = _torchvision(depth, num_classes=3, seed=depth)
    torch.save({"state_dict": model_t.state_dict()}, tmp_path / "r.pth")
    convert(f"resnet{depth}", str(tmp_path / "r.pth"), str(tmp_path / "out"))
    model = load(f"resnet{depth}", str(tmp_path / "out")).with_input_shape((32, 32, 3))
    x = np.random.RandomState(5).rand(1, 32, 32, 3).astype(np.float32)
    with torch.no_grad():
        expected = _encoder(model_t)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    # Op by op, not jitted: XLA's compile of a whole 101/152-layer program cost 3-4x the eager forward
    # (~20 s vs ~6 s for resnet152 on the loaded 2-core host); the same ops and weights are compared.
    with jax.disable_jit():
        reps = network_reps(model, x)
    assert rel_err(reps, expected) < TOL


def test_refusals_name_the_key(resnet18, tmp_path):
    checkpoint, *_ = _moco_v2(resnet18)
    checkpoint["state_dict"]["module.extra_head.weight"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "moco.pth")
    with pytest.raises(CheckpointMismatchError, match=r"'module\.extra_head\.weight'.*MoCo v1/v2"):
        convert("resnet18", str(tmp_path / "moco.pth"), str(tmp_path / "a"))
    torch.save({"weird.conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "weird.pth")
    with pytest.raises(CheckpointMismatchError, match=r"no ResNet stem.*'weird\.conv1\.weight'"):
        convert("resnet18", str(tmp_path / "weird.pth"), str(tmp_path / "b"))
    # A resnet18 backbone is not a resnet34: the message says which it is.
    torch.save(_prefixed("module.encoder_q.", resnet18), tmp_path / "r18.pth")
    with pytest.raises(CheckpointMismatchError, match=r"is a resnet18 .*'module\.encoder_q\.layer4\.1\.conv1\.weight'"
                                                      r".*convert it as resnet18"):
        convert("resnet34", str(tmp_path / "r18.pth"), str(tmp_path / "c"))
    # A missing tensor is named as stored in the file (with its prefix).
    sd = _prefixed("module.encoder_q.", resnet18)
    del sd["module.encoder_q.layer3.1.bn2.running_var"]
    torch.save(sd, tmp_path / "miss.pth")
    with pytest.raises(CheckpointMismatchError, match=r"'module\.encoder_q\.layer3\.1\.bn2\.running_var'"):
        convert("resnet18", str(tmp_path / "miss.pth"), str(tmp_path / "d"))
    torch.save({"arch": "resnet50", "state_dict": resnet18.state_dict()}, tmp_path / "arch.pth")
    with pytest.raises(CheckpointMismatchError, match=r"'resnet50', not 'resnet18'"):
        convert("resnet18", str(tmp_path / "arch.pth"), str(tmp_path / "e"))


def test_reference_source():
    """Which reference ran (visible in -v output); the torchvision wheel is expected in CI caches."""
    if TV is None:
        pytest.skip(f"torchvision wheel not found: tests used the {SOURCE}")
    assert hasattr(TV, "ResNet") and hasattr(TV, "Bottleneck")


def test_cli_prints_what_it_stripped_and_dropped(resnet18, tmp_path, capsys):
    from cocoa_jax.cli import main

    checkpoint, *_ = _simsiam(resnet18)
    torch.save(checkpoint, tmp_path / "checkpoint_0099.pth.tar")
    assert main(["convert", "resnet18", str(tmp_path / "checkpoint_0099.pth.tar"), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "note: layout SimSiam (ImageNet): stripped the prefix 'module.encoder.'" in out
    assert "SimSiam projection MLP" in out and "SimSiam prediction MLP" in out and "converted resnet18" in out
    assert main(["convert", "resnet18", str(tmp_path / "checkpoint_0099.pth.tar"), str(tmp_path / "o2"),
                 "--option", "activation=gelu"]) == 2
    assert "unknown option 'activation' for resnet18" in capsys.readouterr().err
