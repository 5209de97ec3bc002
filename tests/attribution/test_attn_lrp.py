"""AttnLRP on every ported ViT (DINO: the layout without registers; DINOv2 with LayerScale and
registers; CLIP's image tower; SigLIP's image tower with its attention-pooling head) at tiny sizes
with random weights:

* the LRP mode changes only the backward: its forward is the plain forward, bit for bit;
* conservation, in float64: the input relevance plus the relevance the rules leave to additive
  parameters (biases, LayerNorm shifts, positional embeddings, class and register tokens), to
  each softmax's linearisation bias and to the linear layers' epsilon sums to f(x), to 1e-9;
* equality with lxt 2.1's AttnLRP code on the same weights (tests/reference/lxt_side.py; not SigLIP,
  whose attention-pooling head the reference does not build: conservation and the rules cover it);
* the method through the explicand program (jit, vmap over explicands, K targets sharing the
  forward) equals x * the modified gradient, and an encoder without an LRP mode is refused.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import attribution, pipeline, targets
from cocoa_jax.attribution_methods import lrp_rules
from cocoa_jax.models import architectures, loaded, vit
from cocoa_jax.models.clip import ClipConfig
from cocoa_jax.models.siglip import SiglipConfig

SIZE, PATCH = 16, 4
DINO = {**vit.DEFAULT_CONFIG, "embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": PATCH, "pos_grid": 4,
        "image_size": SIZE, "layer_scale": False, "ffn_hidden": 32}
CASES = {
    "dino": ("dino_vit", DINO),
    # DINOv2 = DINO's layout + LayerScale (+ registers); "dino" covers the layout without registers.
    # One block where two add nothing the rules see (dino has two: the residual stream between blocks).
    "dinov2_registers": ("dinov2_vit", {**DINO, "layer_scale": True, "num_register_tokens": 2, "depth": 1}),
    "clip": ("clip_vit", dataclasses.asdict(ClipConfig(
        embed_dim=8, image_resolution=SIZE, vision_layers=1, vision_width=16, vision_patch_size=PATCH,
        context_length=8, vocab_size=64, transformer_width=16, transformer_layers=1, vision_head_width=8))),
    "siglip": ("siglip", dataclasses.asdict(SiglipConfig(
        image_size=SIZE, patch_size=PATCH, vision_width=16, vision_layers=1, vision_heads=2, vision_mlp=32,
        vocab_size=16, context_length=8, text_width=8, text_layers=1, text_heads=2, text_mlp=8, projection_size=8))),
}
LXT_CASES = [case for case in CASES if case != "siglip"]
# Additive parameters: biases, LayerNorm shifts, positions, class/register tokens; SigLIP's position
# table (an nn.Embed's `embedding`), its pooling probe and the probe attention's fused q/k/v bias.
ADDITIVE = {"bias", "cls_token", "pos_embed", "register_tokens", "class_embedding", "positional_embedding",
            "embedding", "probe", "in_proj_bias"}


@functools.lru_cache(maxsize=None)
def tiny(case: str):
    """(LoadedModel, heads) with weights N(0, 0.3^2) (LayerNorm scales 1 + that)."""
    arch, config = CASES[case]
    spec = architectures.spec_of(arch)
    module = spec.build(config)
    # Only the shapes: every leaf is redrawn below, and an eager Flax init compiles each op once
    # (5-20 s per model on the loaded 2-core host); the weights are the same as with the full init.
    variables = jax.eval_shape(lambda: spec.init(module, config, tuple(spec.input_shape(config))))
    leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    leaves = [0.3 * jax.random.normal(k, leaf.shape, leaf.dtype) + (1.0 if "scale" in str(path[-1]) else 0.0)
              for k, (path, leaf) in zip(keys, leaves)]
    model = loaded.make_loaded(arch, config, jax.tree_util.tree_unflatten(tree, leaves))
    heads = ClipConfig(**config).vision_heads if arch == "clip_vit" else config.get("num_heads")
    return model, heads


def _images(n=2, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, SIZE, SIZE, 3))


def _network(model, lrp: bool):
    """The raw network (normalised input) with or without the LRP mode: (params, x (N,H,W,C)) -> (N, D)."""
    module = model.module.clone(lrp=lrp)
    method = "encode_image" if model.name in ("clip_vit", "siglip") else None
    return lambda params, x: module.apply(params, x, method=method)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("case", list(CASES))
def test_lrp_mode_forward_is_the_plain_forward_bit_for_bit(case):
    model, _ = tiny(case)
    x = _images()
    # Jitted, as every front end runs them (the rules' forwards are the plain operations, so
    # XLA gets the same program).
    assert np.array_equal(np.asarray(jax.jit(model.encode_fn.modes["lrp"])(model.params, x)),
                          np.asarray(jax.jit(model.encode_fn)(model.params, x)))
    # The module's default is the plain mode (every existing caller unchanged).
    assert model.module.lrp is False


def _recording(rule_name, record):
    """A copy of lrp_rules.<rule_name> whose backward is the real rule's and which records the
    relevance the rule does not pass on (sum of R_out minus sum of R_in)."""
    real = getattr(lrp_rules, rule_name)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def rule(x, arg=None):
        return real(x) if arg is None else real(x, arg)

    def fwd(x, arg=None):
        return rule(x, arg), x

    def bwd(arg, x, g):
        out, vjp = jax.vjp(lambda a: real(a) if arg is None else real(a, arg), x)
        gx, = vjp(g)
        jax.debug.callback(lambda d: record.append(float(d)), jnp.sum(out * g) - jnp.sum(x * gx))
        return (gx,)

    rule.defvjp(fwd, bwd)
    return rule


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("case", list(CASES))
def test_conservation_up_to_biases_softmax_and_epsilon(case, monkeypatch):
    model, _ = tiny(case)
    deficits = []
    monkeypatch.setattr(lrp_rules, "softmax", _recording("softmax", deficits))
    monkeypatch.setattr(lrp_rules, "epsilon", _recording("epsilon", deficits))
    direction = np.random.default_rng(1).normal(size=model.representation_dim)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), model.params)
        x = jnp.asarray(model.preprocess.normalize(_images(1)), jnp.float64)
        net = _network(model, lrp=True)
        score = lambda p, xi: jnp.dot(net(p, xi)[0], jnp.asarray(direction))
        value, (g_params, g_x) = jax.jit(jax.value_and_grad(score, argnums=(0, 1)))(params, x)
        value = float(value)
        leaves = jax.tree_util.tree_leaves_with_path(jax.tree_util.tree_map(lambda a, g: jnp.sum(a * g), params,
                                                                            g_params))
        pixels = float(jnp.sum(x * g_x))
        additive = sum(float(v) for path, v in leaves if str(getattr(path[-1], "key", "")) in ADDITIVE)
    assert len(deficits) >= 2  # the softmax and epsilon rules ran
    total = pixels + additive + sum(deficits)
    assert abs(total - value) <= 1e-9 * max(1.0, abs(value)), (total, value, pixels, additive, sum(deficits))
    # The accounting is not vacuous: the pixels alone do not hold all of f(x).
    assert abs(pixels - value) > 1e-6


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("case", LXT_CASES)
def test_equals_lxt_on_the_same_weights(case):
    pytest.importorskip("torch")
    pytest.importorskip("lxt")
    from tests.reference import lxt_side

    model, heads = tiny(case)
    direction = np.random.default_rng(2).normal(size=model.representation_dim).astype(np.float32)
    x = model.preprocess.normalize(_images(1, seed=3))
    net = _network(model, lrp=True)
    relevance = jax.jit(lambda p, xi: attribution.attn_lrp(lambda v: jnp.dot(net(p, v[None])[0], direction), xi))
    ours = np.asarray(relevance(model.params, x[0]))
    params = jax.tree_util.tree_map(np.asarray, model.params)
    theirs, _ = lxt_side.relevance(model.name, params, np.asarray(x[0]), direction, heads=heads)
    scale = np.abs(theirs).max()
    assert np.linalg.norm(ours - theirs) <= 1e-4 * np.linalg.norm(theirs)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * scale, rtol=0)
    if case == "dino":  # not plain gradient x input: the rules change the map
        plain_net = _network(model, False)
        plain = np.asarray(jax.jit(lambda p, xi: attribution.attn_lrp(
            lambda v: jnp.dot(plain_net(p, v[None])[0], direction), xi))(model.params, x[0]))
        assert np.linalg.norm(plain - theirs) > 1e-2 * np.linalg.norm(theirs)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_method_through_the_explicand_program_k_targets_share_the_forward():
    model, _ = tiny("dinov2_registers")
    xs = _images(2, seed=4)
    directions = jnp.asarray(np.random.default_rng(5).normal(size=(2, model.representation_dim)), jnp.float32)
    target = targets.Target(directions, (True, False))
    keys = jax.random.split(jax.random.key(0), 2)
    maps = pipeline.attribute(model.encode_fn, model.params, xs, xs, target, "attn_lrp", keys)
    assert maps.shape == (2, 2, SIZE, SIZE, 3)

    @jax.jit
    def reference(xs):
        # x * the modified gradient, each of the K targets alone, and the plain encoder's
        # gradient x input (which the program must NOT have computed).
        def one(x, encode, k):
            single = targets.Target(directions[k:k + 1], (target.normalize[k],))
            return attribution.attn_lrp(lambda v: targets.explain_fn(lambda xb: encode(model.params, xb), single)(v)[0], x)

        modes = (model.encode_fn.modes["lrp"], model.encode_fn)
        return [jnp.stack([jax.vmap(lambda x: one(x, encode, k))(xs) for k in range(2)], axis=1) for encode in modes]

    expected, plain = (np.asarray(a) for a in reference(xs))
    atol = 1e-6 * np.abs(expected).max()
    np.testing.assert_allclose(maps, expected, rtol=2e-4, atol=atol)
    assert not np.allclose(maps, plain, rtol=1e-2, atol=atol)


def test_encoder_without_lrp_mode_is_refused():
    model, _ = tiny("dino")
    target = targets.Target(jnp.ones((1, model.representation_dim)), (True,))
    xs = _images(1)
    plain = lambda params, x: model.encode_fn(params, x)  # no `.modes`
    with pytest.raises(ValueError, match="attn_lrp.*'lrp' mode"):
        pipeline.attribute(plain, model.params, xs, xs, target, "attn_lrp", jax.random.split(jax.random.key(0), 1))
    # explain_images refuses it before encoding anything.
    calls = []
    encoder = type("Plain", (), {"params": model.params,
                                 "encode_fn": staticmethod(lambda p, x: calls.append(1) or plain(p, x))})()
    with pytest.raises(ValueError, match="attn_lrp.*'lrp' mode"):
        pipeline.explain_images(encoder, np.asarray(xs), targets=("label_free",), methods=("attn_lrp",))
    assert calls == []
