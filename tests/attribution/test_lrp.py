"""LRP of the ported ResNets (method `lrp`, the architectures' "relevance" mode; rules in
cocoa_jax.attribution_methods.lrp_conv_rules), on two-stage torchvision-layout ResNets (one
BasicBlock / Bottleneck per stage, 16 px) with random weights and BatchNorm statistics:

* the relevance mode changes only the backward: its forward is the plain forward, bit for bit;
* equality with zennit's `EpsilonPlusFlat` + `ResNetCanonizer` (code we did not write) on the
  same torch network, whose blocks are torchvision's own classes (read from the wheel,
  tests.reference.torchvision_source), weights moved by the project's converter rule
  (`ports.resnet.torchvision_key`), in float64, through the loaded model's pixel input (the
  normalisation passes relevance) against zennit on the normalised input;
* conservation: with every folded bias 0 the relevance sums to f(x) (up to the 1e-6 stabilisers);
* the method through the explicand program (K targets sharing the forward) and the refusals.
"""
import functools
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, methods, pipeline, targets
from cocoa_jax.models.resnet import BN_EPSILON

from tests.support.lrp_checks import assert_k_targets_equal_one_at_a_time, random_batchnorm_model

SIZE = 16
CONFIGS = {block: {"block": block, "stage_sizes": [1, 1], "stem": "imagenet", "num_classes": None}
           for block in ("basic", "bottleneck")}


@functools.lru_cache(maxsize=None)
def tiny(block: str, zero_shift: bool = False):
    """A LoadedModel "resnet18"-family with stages [1, 1] of `block`, random float32 weights; BatchNorm
    scales in [0.5, 1.5], variances in [0.5, 2], means and shifts N(0, 0.3^2) (0 with `zero_shift`:
    every folded bias is then 0)."""
    return random_batchnorm_model("resnet18", CONFIGS[block], (SIZE, SIZE, 3), 3, zero_shift=zero_shift)


def _images(n=1, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, SIZE, SIZE, 3))


def _direction(model, seed=1):
    return np.random.default_rng(seed).normal(size=model.representation_dim)


@pytest.mark.parametrize("block", list(CONFIGS))
def test_relevance_mode_forward_is_the_plain_forward_bit_for_bit(block):
    model = tiny(block)
    x = _images(2)
    plain = jax.jit(model.encode_fn)(model.params, x)
    assert np.array_equal(np.asarray(jax.jit(model.encode_fn.modes["relevance"])(model.params, x)), np.asarray(plain))


def _relevance(model, x, direction):
    """Our map: the gradient of <direction, relevance-mode encoding> at the [0, 1] pixels x (H, W, 3), float64."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
        f = lambda v: model.encode_fn.modes["relevance"](params, v[None])[0] @ jnp.asarray(direction)  # noqa: E731
        relevance, score = jax.jit(lambda v: (attribution.lrp(f, v), f(v)))(jnp.asarray(x, jnp.float64))
        return np.asarray(relevance), float(score)


@functools.lru_cache(maxsize=None)
def _torchvision_resnet():
    """torchvision's resnet module from the wheel, ONE per process: zennit's canonizer recognises the
    block classes of the module it was imported with, so the models built here come from that one."""
    from tests.reference.torchvision_source import load_resnet_module

    return load_resnet_module()


def _zennit():
    """zennit's modules, imported with torchvision's resnet.py (from the wheel) standing in for
    torchvision, which zennit imports at load and which cannot be installed beside the CPU torch."""
    pytest.importorskip("torch")
    tv = _torchvision_resnet()
    if tv is None:
        pytest.skip("no torchvision wheel (pip download torchvision==0.28.0 --no-deps -d ~/.cache/cocoa-jax)")
    # The stand-in lives in sys.modules only while zennit imports: left there, it broke every later import
    # of torchvision in the same process (quantus: "'torchvision.models' is not a package"), and the
    # Quantus parity modules that ran after this file in a pytest worker skipped.
    models_mod = types.ModuleType("torchvision.models")
    models_mod.resnet = tv
    stand_in = {"torchvision": types.SimpleNamespace(models=models_mod), "torchvision.models": models_mod,
                "torchvision.models.resnet": tv}
    saved = {name: sys.modules.get(name) for name in stand_in}
    sys.modules.update(stand_in)
    try:
        zennit = pytest.importorskip("zennit", reason="zennit is not installed (pip install zennit --no-deps)")
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module

    canonized = sys.modules["zennit.torchvision"]  # the block classes its canonizer recognises
    blocks = types.SimpleNamespace(BasicBlock=canonized.ResNetBasicBlock, Bottleneck=canonized.ResNetBottleneck,
                                   resnet18=tv.resnet18)
    return zennit, Gradient, EpsilonPlusFlat, ResNetCanonizer, blocks


def test_zennit_leaves_no_torchvision_stand_in_behind():
    """After `_zennit()` the process imports what it imported before (Quantus needs the real
    torchvision or none at all, never the stand-in)."""
    before = sys.modules.get("torchvision")
    _zennit()
    assert sys.modules.get("torchvision") is before
    assert sys.modules.get("torchvision.models") is None or before is not None


def _torch_twin(model, tv):
    """The torch network of `model` from torchvision's block classes, weights from our variables
    through the converter's key rule (float64)."""
    import torch

    from cocoa_jax_ports.resnet import torchvision_key

    block = {"basic": tv.BasicBlock, "bottleneck": tv.Bottleneck}[model.config["block"]]

    class Twin(torch.nn.Module):  # torchvision's ResNet.forward, two stages
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(64)
            self.relu = torch.nn.ReLU(inplace=True)
            self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
            e = block.expansion
            down = lambda cin, cout, s: torch.nn.Sequential(  # noqa: E731
                torch.nn.Conv2d(cin, cout, 1, s, bias=False), torch.nn.BatchNorm2d(cout))
            self.layer1 = torch.nn.Sequential(block(64, 64, 1, down(64, 64 * e, 1) if e != 1 else None))
            self.layer2 = torch.nn.Sequential(block(64 * e, 128, 2, down(64 * e, 128 * e, 2)))
            self.avgpool = torch.nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return torch.flatten(self.avgpool(self.layer2(self.layer1(x))), 1)

    twin = Twin().double().eval()
    state = twin.state_dict()
    for path, leaf in jax.tree_util.tree_flatten_with_path(model.params)[0]:
        key, _ = torchvision_key(tuple(p.key for p in path), leaf.shape)
        value = np.asarray(leaf, np.float64)
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value  # HWIO -> OIHW
        if key.endswith("running_var"):
            value = value + BN_EPSILON  # moved out of eps, below
        state[key] = torch.from_numpy(value.copy())
    twin.load_state_dict(state)
    # zennit 0.5.1 merges each BatchNorm into its conv and then sets it to mean 0, var 1, scale 1,
    # shift 0 but keeps its eps, so the canonized network scales by (1 + eps)^-1/2 per BatchNorm
    # (2e-5 relative over this network, measured): with eps 0 (and var + eps as the variance, the
    # same plain forward) the canonized forward is the network's.
    for module in twin.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 0.0
    return twin


@pytest.mark.slow  # two compiles of a 5-conv network and zennit's hooks: ~10 s each
@pytest.mark.parametrize("block", list(CONFIGS))
def test_equals_zennit_epsilon_plus_flat_on_the_same_weights(block):
    import torch

    _, Gradient, EpsilonPlusFlat, ResNetCanonizer, tv = _zennit()
    model = tiny(block)
    x, direction = np.asarray(_images(1, seed=5)[0], np.float64), _direction(model, seed=6)
    ours, score = _relevance(model, x, direction)
    twin = _torch_twin(model, tv)
    xt = torch.from_numpy(np.asarray(model.preprocess.normalize(x)).transpose(2, 0, 1)[None].copy())
    d = torch.from_numpy(direction)
    with torch.no_grad():
        assert abs(float(twin(xt)[0] @ d) - score) < 1e-12 * abs(score)  # the same network and input
    with Gradient(model=twin, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
        _, theirs = attributor(xt, lambda o: o * d)  # output relevance = direction * representation
    theirs = theirs.detach().numpy()[0].transpose(1, 2, 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12 * np.abs(theirs).max())  # 5e-15 measured
    # Not the plain gradient, nor gradient x input: the rules matter on this network.
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
        grad = np.asarray(jax.grad(lambda v: model.encode_fn(params, v[None])[0] @ jnp.asarray(direction))(
            jnp.asarray(x)))
    for other in (grad, grad * x):
        assert np.linalg.norm(other - theirs) > 0.1 * np.linalg.norm(theirs)


@pytest.mark.slow  # a torchvision resnet18 through the converter: ~25 s
def test_equals_zennit_on_a_converted_torchvision_resnet18(tmp_path):
    """The product path: torchvision's resnet18 (from the wheel) with random weights, saved,
    `convert`ed and `load`ed, float32 at 32 px, against zennit on the torch model."""
    import torch

    from cocoa_jax.models import load
    from cocoa_jax_ports import convert
    from tests.reference.torch_models import randomize_

    _, Gradient, EpsilonPlusFlat, ResNetCanonizer, tv = _zennit()
    torch.manual_seed(0)
    model_t = randomize_(tv.resnet18(weights=None, num_classes=10), 1)
    torch.save(model_t.state_dict(), tmp_path / "r.pth")
    convert("resnet18", str(tmp_path / "r.pth"), str(tmp_path / "out"))
    model = load("resnet18", str(tmp_path / "out")).with_input_shape((32, 32, 3))
    model_t.fc = torch.nn.Identity()
    with torch.no_grad():
        for module in model_t.modules():  # zennit keeps the neutralised BatchNorm's eps (see _torch_twin)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var += module.eps
                module.eps = 0.0
    x = np.random.RandomState(1).rand(32, 32, 3).astype(np.float32)
    direction = np.random.RandomState(2).randn(512).astype(np.float32)
    f = lambda v: model.encode_fn.modes["relevance"](model.params, v[None])[0] @ jnp.asarray(direction)  # noqa: E731
    ours = np.asarray(jax.jit(lambda v: attribution.lrp(f, v))(jnp.asarray(x)))
    xt = torch.from_numpy(np.asarray(model.preprocess.normalize(x)).transpose(2, 0, 1)[None].copy())
    d = torch.from_numpy(direction)
    with Gradient(model=model_t, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
        _, theirs = attributor(xt, lambda o: o * d)
    theirs = theirs.detach().numpy()[0].transpose(1, 2, 0)
    assert np.linalg.norm(ours - theirs) < 1e-5 * np.linalg.norm(theirs)  # 7.9e-7 measured (float32)


@pytest.mark.slow  # one float64 compile per block (~6 s)
@pytest.mark.parametrize("block", list(CONFIGS))
def test_conservation_with_zero_biases(block):
    model = tiny(block, zero_shift=True)
    relevance, score = _relevance(model, np.asarray(_images(1, seed=7)[0], np.float64), _direction(model, seed=8))
    # Every rule conserves up to its 1e-6 stabiliser (no folded bias takes a share).
    assert abs(relevance.sum() - score) < 1e-5 * abs(score)
    # With the BatchNorm shifts back the positive folded biases absorb relevance (zennit's z+).
    biased, score_b = _relevance(tiny(block), np.asarray(_images(1, seed=7)[0], np.float64), _direction(model, seed=8))
    assert abs(biased.sum() - score_b) > 1e-3 * abs(score_b)


def test_lrp_method_record():
    method = methods.get("lrp")
    assert method.model_mode == "relevance" and method.local and method.per_channel and not method.uses_key
    assert methods.get("attn_lrp").model_mode == "lrp"  # the ViTs' readout (x * gradient) is another mode


@pytest.mark.slow  # one vmapped K-target compile of the tiny network (~8 s)
def test_method_through_the_explicand_program_k_targets_share_the_forward():
    model = tiny("basic")
    xs = _images(2, seed=4)
    assert_k_targets_equal_one_at_a_time(model, xs)


def test_encoders_without_the_relevance_mode_are_refused():
    model = tiny("basic")
    target = targets.Target(jnp.ones((1, model.representation_dim)), (True,))
    xs = _images(1)
    plain = lambda params, x: model.encode_fn(params, x)  # noqa: E731  (no `.modes`)
    with pytest.raises(ValueError, match="lrp.*'relevance' mode.*ResNets"):
        pipeline.attribute(plain, model.params, xs, xs, target, "lrp", jax.random.split(jax.random.key(0), 1))
    # A ResNet has no AttnLRP mode: attn_lrp is refused on it, naming the ViTs.
    with pytest.raises(ValueError, match="attn_lrp.*'lrp' mode.*ViTs"):
        pipeline.attribute(model.encode_fn, model.params, xs, xs, target, "attn_lrp",
                           jax.random.split(jax.random.key(0), 1))
