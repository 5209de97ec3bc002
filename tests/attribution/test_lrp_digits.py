"""LRP of the digits SmallResNet (method `lrp`, the "relevance" mode of `cocoa_jax.models.load("digits")`;
the rules of cocoa_jax.attribution_methods.lrp_conv_rules, as for the ported ResNets):

* the mode changes only the backward: its forward is the plain forward, bit for bit (shipped weights);
* equality with zennit's `EpsilonPlusFlat` (code we did not write) on a torch twin of a narrow
  digits-layout network (random weights) and of the shipped network, float64: the twin is built from zennit's own pieces
  (`zennit.layer.Sum` for the residual sums, conv + BatchNorm adjacent for its
  `SequentialMergeBatchNorm`, torch average pools, flax's "SAME" stride-2 padding as a
  `ZeroPad2d((0, 1, 0, 1))`), so zennit's layer map assigns every rule itself;
* conservation on the shipped weights with every folded bias 0: relevance sums to f(x);
* K targets through the explicand program on the shipped model.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, pipeline, targets
from cocoa_jax.models import architectures, load

from tests.support.lrp_checks import assert_k_targets_equal_one_at_a_time, random_batchnorm_model

NARROW = dict(architectures.DIGITS_CONFIG, widths=[4, 8, 8], stem_width=4)  # the shipped layout, narrow


@functools.lru_cache(maxsize=None)
def shipped():
    return load("digits")


@functools.lru_cache(maxsize=None)
def narrow():
    """A LoadedModel "digits" of the NARROW config, random float32 weights; BatchNorm scales in
    [0.5, 1.5], variances in [0.5, 2], means and shifts N(0, 0.3^2)."""
    return random_batchnorm_model("digits", NARROW, (32, 32, 1), 11)


def _digits(n, seed):
    """n scikit-learn digits as the model sees them (N, 32, 32, 1) in [0, 1]."""
    from cocoa_jax.data import digits

    return np.asarray(digits.load_digits_arrays()[0][seed:seed + n], np.float64)


def _relevance(model, x, direction, params=None):
    """(map (32, 32, 1), f(x)) in float64: the gradient of <direction, relevance-mode encoding> at x."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params or model.params)
        f = lambda v: model.encode_fn.modes["relevance"](params, v[None])[0] @ jnp.asarray(direction)  # noqa: E731
        relevance, score = jax.jit(lambda v: (attribution.lrp(f, v), f(v)))(jnp.asarray(x, jnp.float64))
        return np.asarray(relevance), float(score)


def test_relevance_mode_forward_is_the_plain_forward_bit_for_bit():
    model = shipped()
    x = jnp.asarray(_digits(4, 0), jnp.float32)
    plain = jax.jit(model.encode_fn)(model.params, x)
    assert np.array_equal(np.asarray(jax.jit(model.encode_fn.modes["relevance"])(model.params, x)), np.asarray(plain))


def test_lrp_mode_refuses_training():
    from cocoa_jax.models.small_resnet import SmallResNet

    model = shipped()
    with pytest.raises(ValueError, match="train must be False in LRP mode"):
        SmallResNet(lrp=True).apply(model.params, jnp.zeros((1, 32, 32, 1)), train=True)


def _torch_twin(model):
    """model's network in torch (float64) from zennit-recognised modules, weights from our variables."""
    import torch
    from torch import nn
    from zennit.layer import Sum

    class Block(nn.Module):
        def __init__(self, cin, features, stride):
            super().__init__()
            first = ([nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, features, 3, 2, 0, bias=False)] if stride == 2
                     else [nn.Conv2d(cin, features, 3, 1, 1, bias=False)])
            self.branch = nn.Sequential(*first, nn.BatchNorm2d(features), nn.ReLU(),
                                        nn.Conv2d(features, features, 3, 1, 1, bias=False), nn.BatchNorm2d(features))
            self.shortcut = None
            if stride != 1 or cin != features:
                pool = [nn.AvgPool2d(stride, stride)] if stride != 1 else []
                self.shortcut = nn.Sequential(*pool, nn.Conv2d(cin, features, 1, bias=False), nn.BatchNorm2d(features))
            self.sum, self.relu = Sum(), nn.ReLU()

        def forward(self, x):
            shortcut = x if self.shortcut is None else self.shortcut(x)
            return self.relu(self.sum(torch.stack([self.branch(x), shortcut], dim=-1)))

    config = model.config
    widths, stem = config["widths"], config["stem_width"]
    net = nn.Sequential(nn.Conv2d(1, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(),
                        nn.AvgPool2d(2, 2),
                        *[Block(cin, w, s) for cin, w, s in zip([stem, *widths[:-1]], widths, config["strides"])],
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = net.double().eval()
    params, stats = model.params["params"], model.params["batch_stats"]

    def conv(module, kernel):
        module.weight.data = torch.from_numpy(np.asarray(kernel, np.float64).transpose(3, 2, 0, 1).copy())

    def bn(module, affine, stat):
        # zennit keeps a neutralised BatchNorm's eps (tests/attribution/test_lrp.py): eps moved into var.
        for name, value in (("weight", affine["scale"]), ("bias", affine["bias"]), ("running_mean", stat["mean"]),
                            ("running_var", np.asarray(stat["var"], np.float64) + 1e-5)):
            getattr(module, name).data = torch.from_numpy(np.asarray(value, np.float64).copy())
        module.eps = 0.0

    conv(net[0], params["Conv_0"]["kernel"])
    bn(net[1], params["BatchNorm_0"], stats["BatchNorm_0"])
    for i, block in enumerate(net[4:4 + len(widths)]):
        p, s = params[f"BasicBlock_{i}"], stats[f"BasicBlock_{i}"]
        convs = [m for m in block.branch if isinstance(m, nn.Conv2d)]
        bns = [m for m in block.branch if isinstance(m, nn.BatchNorm2d)]
        if block.shortcut is not None:
            convs.append(block.shortcut[-2])
            bns.append(block.shortcut[-1])
        for j, (c, b) in enumerate(zip(convs, bns)):
            conv(c, p[f"Conv_{j}"]["kernel"])
            bn(b, p[f"BatchNorm_{j}"], s[f"BatchNorm_{j}"])
    return net


@pytest.mark.slow  # a float64 compile of the network and zennit's hooks (~7 s each)
@pytest.mark.parametrize("which", ["narrow", "shipped"])
def test_equals_zennit_epsilon_plus_flat_on_a_torch_twin(which):
    import torch

    from tests.attribution.test_lrp import _zennit

    _, Gradient, EpsilonPlusFlat, _, _ = _zennit()
    from zennit.canonizers import SequentialMergeBatchNorm

    model = {"narrow": narrow, "shipped": shipped}[which]()
    x = _digits(1, 3)[0]
    direction = np.random.default_rng(4).normal(size=model.representation_dim)
    ours, score = _relevance(model, x, direction)
    twin = _torch_twin(model)
    xt = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
    d = torch.from_numpy(direction)
    with torch.no_grad():
        assert abs(float(twin(xt)[0] @ d) - score) < 1e-12 * abs(score)  # the same network
    with Gradient(model=twin, composite=EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])) as attributor:
        _, theirs = attributor(xt, lambda o: o * d)
    theirs = theirs.detach().numpy()[0].transpose(1, 2, 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12 * np.abs(theirs).max())
    # Not the plain gradient nor gradient x input: the rules matter here.
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
        grad = np.asarray(jax.grad(lambda v: model.encode_fn(params, v[None])[0] @ jnp.asarray(direction))(
            jnp.asarray(x)))
    for other in (grad, grad * x):
        assert np.linalg.norm(other - theirs) > 0.1 * np.linalg.norm(theirs)


@pytest.mark.slow  # three float64 compiles of the shipped network (~10 s)
def test_conservation_with_zero_biases_on_the_shipped_weights(monkeypatch):
    from cocoa_jax.attribution_methods import lrp_conv_rules

    model = shipped()
    x = _digits(1, 5)[0]
    direction = np.random.default_rng(6).normal(size=model.representation_dim)
    # Every folded bias is beta - mean * s: zero the BatchNorm shifts and means.
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if str(path[-1].key) in ("mean", "bias") else a, model.params)
    relevance, score = _relevance(model, x, direction, zeroed)
    # What is lost is the 1e-6 stabilisers' share (small pooled features): 1.4e-5 relative,
    # measured, and linear in the stabiliser (1.4e-8 at 1e-9, 1.4e-11 at 1e-12).
    assert abs(relevance.sum() - score) < 1e-4 * abs(score)
    monkeypatch.setattr(lrp_conv_rules, "STABILIZER", 1e-12)  # read when the mode is traced
    relevance, score = _relevance(model, x, direction, zeroed)
    assert abs(relevance.sum() - score) < 1e-9 * abs(score)
    monkeypatch.undo()
    # With the trained shifts the positive folded biases absorb relevance (z+): the check can fail.
    biased, score_b = _relevance(model, x, direction)
    assert abs(biased.sum() - score_b) > 1e-2 * abs(score_b)


@pytest.mark.slow  # one vmapped K-target compile of the shipped network (~8 s)
def test_method_through_the_explicand_program_k_targets_share_the_forward():
    model = shipped()
    xs = jnp.asarray(_digits(2, 7), jnp.float32)
    assert_k_targets_equal_one_at_a_time(model, xs)


@pytest.mark.slow  # explain_images on the shipped model: targets, baselines, one lrp program (~10 s)
def test_explain_images_lrp_on_the_default_model_is_the_relevance_gradient():
    """What `cocoa-jax explain --methods lrp` computes on the digits demo: the maps of explain_images
    equal lrp of each target's score built here from the relevance mode."""
    model = shipped()
    xs = _digits(2, 20).astype(np.float32)
    corpus, foil = _digits(6, 40).astype(np.float32), _digits(8, 60).astype(np.float32)
    result = pipeline.explain_images(model, xs, corpus=corpus, foil=foil, targets=("cocoa", "corpus"),
                                     methods=("lrp",))
    maps = np.asarray(result.maps["lrp"])
    assert maps.shape == (2, 2, 32, 32, 1)
    encode = jax.jit(model.encode_fn)
    corpus_reps, foil_reps = encode(model.params, corpus), encode(model.params, foil)
    for k, target in enumerate((targets.cocoa(corpus_reps, foil_reps), targets.corpus(corpus_reps))):
        f = targets.explain_fn(lambda xb: model.encode_fn.modes["relevance"](model.params, xb), target)
        for i in range(2):
            expected = np.asarray(attribution.lrp(f, jnp.asarray(xs[i])))  # one target: f(v) is a scalar
            # float32, vmapped there: 1-2e-7 relative L2 measured
            assert np.linalg.norm(maps[i, k] - expected) < 1e-5 * np.linalg.norm(expected)
