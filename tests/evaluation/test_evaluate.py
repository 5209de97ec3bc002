"""`evaluation.evaluate`: argument checks (one-line errors naming the argument), map layouts, K targets
sharing passes, targets built from corpus / foil, and invariance of scores to batch size and devices."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import evaluation, targets
from tests.support.xla import child_flags

H = W = 12
C = 2
N = 3
KEY = jax.random.key(11)
METRICS = ("deletion", "pixel_flipping", "road_morf", "faithfulness_correlation", "irof")
OPTIONS = {"deletion": {"n_steps": 8}, "pixel_flipping": {"features_in_step": 12},
           "road_morf": {"percentages": [20, 60]}, "faithfulness_correlation": {"nr_runs": 6, "subset_size": 24},
           "irof": {"cell": 4}}


def options(names):
    return {name: OPTIONS[name] for name in names}


def _weights():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.normal(0, 0.3, (H * W * C, 6)), jnp.float32)


def encode(x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ _weights())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(N, H, W, C)).astype(np.float32)
    maps = rng.normal(size=(N, 2, H, W)).astype(np.float32)
    directions = rng.normal(size=(2, 6)).astype(np.float32)
    target = targets.stack([targets.Target(jnp.asarray(directions[0]), True),
                            targets.Target(jnp.asarray(directions[1]), False)])
    scores = evaluation.evaluate(encode, images, maps, target=target, metrics=METRICS, options=OPTIONS, key=KEY)
    return dict(images=images, maps=maps, target=target, directions=directions, scores=scores)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_every_metric_gives_finite_n_by_k_scores(data):
    for name in METRICS:
        assert data["scores"][name].shape == (N, 2), name
        assert np.all(np.isfinite(data["scores"][name])), name


def test_the_k_targets_share_a_call_and_each_equals_its_own_run(data):
    """Target k's column equals a run with target k alone and its map alone."""
    k, names = 1, ("deletion", "faithfulness_correlation", "irof")
    alone = evaluation.evaluate(encode, data["images"], data["maps"][:, k],
                                target=targets.Target(jnp.asarray(data["directions"][k]), False),
                                metrics=names, options=options(names), key=KEY)
    for name in names:
        np.testing.assert_allclose(alone[name][:, 0], data["scores"][name][:, k], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_scores_do_not_depend_on_batch_size(data):
    names = ("pixel_flipping", "road_morf", "faithfulness_correlation")  # the metrics that chunk their steps
    chunked = evaluation.evaluate(encode, data["images"], data["maps"], target=data["target"], metrics=names,
                                  options=options(names), key=KEY, batch_size=3)
    for name in names:
        np.testing.assert_allclose(chunked[name], data["scores"][name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_targets_by_name_from_corpus_and_foil_images():
    rng = np.random.default_rng(2)
    images, corpus, foil = (rng.uniform(size=(m, H, W, C)).astype(np.float32) for m in (2, 4, 5))
    maps = rng.normal(size=(2, H, W)).astype(np.float32)
    by_name = evaluation.evaluate(encode, images, maps, targets=("cocoa", "label_free"), corpus=corpus, foil=foil,
                                  metrics=("deletion",), options=options(["deletion"]))["deletion"]
    cocoa = targets.cocoa(encode(corpus), encode(foil))
    for i in range(2):
        given = targets.stack([cocoa, targets.label_free(encode(images[i:i + 1])[0])])
        one = evaluation.evaluate(encode, images[i:i + 1], maps[i:i + 1], target=given, metrics=("deletion",),
                                  options=options(["deletion"]))["deletion"]
        np.testing.assert_allclose(by_name[i], one[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("maps, message", [
    (np.ones((N, H + 1, W)), r"`maps` must have shape"),
    (np.ones((N + 1, H, W)), r"`maps` has 4 explicands, `images` has 3"),
    (np.where(np.arange(H * W).reshape(H, W) == 5, np.nan, 1.0)[None].repeat(N, 0), r"`maps` has NaN or inf"),
    (np.concatenate([np.ones((2, H, W)), np.zeros((1, H, W))]), r"`maps` is all zeros at explicand 2, map 0"),
])
def test_bad_maps_give_one_line_errors_naming_the_argument(maps, message):
    images = np.zeros((N, H, W, C), np.float32)
    with pytest.raises(ValueError, match=message) as err:
        evaluation.evaluate(encode, images, maps, target=targets.Target(jnp.ones(6), True), metrics=("deletion",))
    assert "\n" not in str(err.value)


def test_allow_zero_maps_scores_a_constant_map_by_pixel_order():
    """The sweep scores its methods' own maps, all-zero ones included: ranked by pixel order."""
    images = np.random.default_rng(3).uniform(size=(1, H, W, C)).astype(np.float32)
    target = targets.Target(jnp.ones(6), True)
    zero = evaluation.evaluate(encode, images, np.zeros((1, H, W)), target=target, metrics=("deletion",),
                               options=options(["deletion"]), allow_zero_maps=True)["deletion"]
    order = -np.arange(H * W, dtype=np.float32).reshape(1, H, W)  # the same order, written out
    np.testing.assert_allclose(zero, evaluation.evaluate(encode, images, order, target=target, metrics=("deletion",),
                                                         options=options(["deletion"]))["deletion"], rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(metrics=("nope",)), r"`metrics` has unknown metric 'nope'"),
    (dict(metrics=()), r"`metrics` is empty"),
    (dict(metrics=("road_morf",)), r"metric 'road_morf' needs `key`"),
    (dict(metrics=("deletion",), options={"deletion": {"steps": 3}}), r"metric 'deletion' has no option \['steps'\]"),
    (dict(metrics=("deletion",), options={"irof": {}}), r"`options` has metric 'irof', which is not in `metrics`"),
    (dict(metrics=("deletion",), baseline="grey"), r"baseline"),
])
def test_bad_arguments_are_refused_before_work(kwargs, message):
    images = np.zeros((N, H, W, C), np.float32)
    with pytest.raises(ValueError, match=message):
        evaluation.evaluate(encode, images, np.ones((N, H, W)), target=targets.Target(jnp.ones(6), True), **kwargs)


def test_the_table_records_directions_and_quantus_names():
    for record in evaluation.METRICS.values():
        assert record.direction in ("higher", "lower") and record.arrow in ("↑", "↓")
        assert record.reference and record.summary
    assert evaluation.get("road_morf").quantus == "quantus.ROAD"
    with pytest.raises(ValueError, match="already registered"):
        evaluation.register(evaluation.get("deletion"))


_DEVICES_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from cocoa_jax import evaluation, meshes, targets
    import test_evaluate as t
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(t.N, t.H, t.W, t.C)).astype(np.float32)
    maps = rng.normal(size=(t.N, t.H, t.W)).astype(np.float32)
    target = targets.Target(jax.numpy.asarray(rng.normal(size=6), jax.numpy.float32), True)
    run = lambda mesh: evaluation.evaluate(t.encode, images, maps, target=target, metrics=t.METRICS,
                                           options=t.OPTIONS, key=t.KEY, mesh=mesh)
    assert jax.device_count() == 2
    one, two = run(meshes.make_mesh(jax.devices()[:1])), run(meshes.make_mesh(jax.devices()))
    for name in t.METRICS:
        np.testing.assert_allclose(one[name], two[name], rtol=1e-5, atol=1e-6, err_msg=name)
    print("DEVICES_OK")
""")


@pytest.mark.slow
def test_scores_do_not_depend_on_the_device_count():
    """One subprocess with 2 forced CPU host devices: a 1-device mesh and a 2-device mesh agree."""
    env = dict(os.environ, XLA_FLAGS=child_flags(2), JAX_PLATFORMS="cpu")
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT, here], env=env, capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(here)))
    assert "DEVICES_OK" in done.stdout, done.stderr[-3000:]


def test_map_layouts_get_a_target_axis():
    shape = (N, H, W, C)
    ones = lambda *s: np.ones(s, np.float32)
    assert evaluation.maps_with_target_axis(ones(N, H, W), shape).shape == (N, 1, H, W)
    assert evaluation.maps_with_target_axis(ones(N, H, W, C), shape).shape == (N, 1, H, W, C)
    assert evaluation.maps_with_target_axis(ones(N, 4, H, W), shape).shape == (N, 4, H, W)
    assert evaluation.maps_with_target_axis(ones(N, 4, H, W, C), shape, 4).shape == (N, 4, H, W, C)
    with pytest.raises(ValueError, match="`maps` has 3 maps per explicand; expected 1 or the 4 targets"):
        evaluation.maps_with_target_axis(ones(N, 3, H, W), shape, 4)
    with pytest.raises(ValueError, match="`maps` must be a real array"):
        evaluation.maps_with_target_axis(np.full((N, H, W), "a"), shape)


_CONCRETE_CALLS: list[int] = []


def watched_encode(x):
    """`encode`, noting every call on concrete images (work; tracing to read shapes is not)."""
    if not isinstance(x, jax.core.Tracer):
        _CONCRETE_CALLS.append(len(x))
    return encode(x)


_MASK = np.zeros((N, H, W), bool)
_MASK[:, 2:5, 3:7] = True
_GOOD = dict(metrics=("pointing_game",), masks=_MASK)


@pytest.mark.parametrize("kwargs, message", [
    (dict(_GOOD, masks=np.ones((N, H, W + 1))), r"`masks` must have shape \(N=3, 12, 12\)"),
    (dict(_GOOD, masks=np.ones((N + 1, H, W))), r"`masks` must have shape \(N=3, 12, 12\)"),
    (dict(_GOOD, masks=np.full((N, H, W), 0.5)), r"`masks` must hold only 0/1"),
    (dict(_GOOD, masks=np.where(_MASK, np.nan, 0.0)), r"`masks` must hold only 0/1"),
    (dict(_GOOD, masks=np.full((N, H, W), "a")), r"`masks` must be boolean or 0/1 numbers"),
    (dict(_GOOD, masks=np.concatenate([_MASK[:2], np.zeros((1, H, W), bool)])), r"`masks` has 1 empty mask"),
    (dict(metrics=("deletion",), masks=np.ones((N, H, W + 1))), r"`masks` must have shape"),  # checked when given
    (dict(metrics=("deletion",), target=targets.Target(jnp.ones(5), True)),
     r"`target` has representation dimension 5; the model gives 6"),
    (dict(metrics=("deletion",), target=targets.Target(jnp.full(6, jnp.nan), True)), r"`target` contains 6 NaN"),
    (dict(metrics=("random_logit",), explainer=lambda *a: None, key=KEY,
          alternative_target=targets.stack([targets.Target(jnp.ones(6), True)] * 2)),
     r"`alternative_target` has 2 targets; `target` has 1"),
    (dict(metrics=("road_morf",), key=3), r"`key` must be one PRNG key"),
    (dict(metrics=("max_sensitivity",), key=KEY, explainer="integrated_gradients"), r"`explainer` must be callable"),
    (dict(metrics=("mprt",), key=KEY, explainer=lambda *a: None, randomized_params=({"w": np.ones(2)},)),
     r"`randomized_params\[0\]` does not have the model's parameter structure"),
    (dict(metrics=("deletion",), target=None, targets=("nope",)), r"`targets` has unknown target 'nope'"),
    (dict(metrics=("deletion",), target=None, targets=("cocoa",), corpus=np.zeros((2, H, W, C), np.float32)),
     r"target 'cocoa' needs `foil` \(images\) or `foil_reps`"),
    (dict(metrics=("deletion",), target=None, targets=("corpus",), corpus=np.zeros((2, H, W + 1, C), np.float32)),
     r"`corpus` images must have the explicands' shape"),
    (dict(metrics=("deletion",), target=None, targets=("corpus",), corpus_reps=np.ones((2, 4), np.float32)),
     r"`corpus_reps` has representation dimension 4; the model gives 6"),
    (dict(metrics=("irof",), segments=np.full((N, H, W), -1)), r"`segments` must be non-negative integer ids"),
    (dict(metrics=("deletion",), foil=np.zeros((2, H, W, C), np.float32)), r"`foil` is not read when `target` is given"),
    (dict(metrics=("deletion",), images=np.zeros((N, 8, 8, C), np.float32), maps=np.ones((N, 8, 8)),
          model=lambda x: watched_encode(jnp.tile(x, (1, 2, 2, 1))[:, :H, :W])),  # an encoder of any size
     r"`baseline`='blur' \(GaussianBlur\(21, 5\)\) needs images larger than 10 pixels"),
    (dict(metrics=("deletion",), images=np.full((N, H, W, C), np.inf, np.float32)), r"`images` contains"),
    (dict(metrics=("deletion",), images=np.zeros((N, H, W, C + 1), np.float32), maps=np.ones((N, H, W))),
     r"`model` cannot encode `images` of shape \(12, 12, 3\)"),
    (dict(metrics=("deletion",), model=3), r"`model` must be a LoadedModel"),
    (dict(metrics=("deletion",), mesh="cpu"), r"`mesh` must be a jax.sharding.Mesh"),
])
def test_every_argument_is_checked_before_any_work_in_one_line(kwargs, message):
    """Each argument of evaluate: a one-line error naming it, raised before anything is encoded."""
    call = {**dict(model=watched_encode, images=np.zeros((N, H, W, C), np.float32), maps=np.ones((N, H, W)),
                   target=targets.Target(jnp.ones(6), True)), **kwargs}
    _CONCRETE_CALLS.clear()
    with pytest.raises((ValueError, TypeError), match=message) as err:
        evaluation.evaluate(call.pop("model"), call.pop("images"), call.pop("maps"), **call)
    assert "\n" not in str(err.value)
    assert not _CONCRETE_CALLS, "images were encoded before the error"
