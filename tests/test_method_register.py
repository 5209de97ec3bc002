"""A user's own method, added with `methods.register`, works in every front end with no other edit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import methods, pipeline, targets
from cocoa_jax.cli import main
from cocoa_jax.sweep.config import SweepConfig


def input_times_gradient(f, x, baseline, key, *, scale=1.0, batch_size=None, mesh=None):
    """(x - baseline) * grad f(x): a toy method, per channel, deterministic."""
    del key, batch_size, mesh
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        raise ValueError(f"`scale` must be a positive number, got {scale!r}")
    jac = jax.jacrev(lambda z: jnp.atleast_1d(f(z)))(x)                 # (K, H, W, C)
    out = scale * (x - baseline)[None] * jac
    return out if jnp.ndim(f(x)) else out[0]


@pytest.fixture
def toy():
    method = methods.register(methods.Method(
        "input_x_gradient", "Input x Gradient", input_times_gradient, input_times_gradient,
        uses_key=False, per_channel=True, summary="(x - baseline) times the gradient at x"))
    yield method
    del methods.METHODS[method.name]


def test_registered_method_is_in_the_table_and_checked_by_value(toy):
    assert "input_x_gradient" in methods.ATTRIBUTION_METHODS
    assert methods.defaults("input_x_gradient") == {"scale": 1.0}
    with pytest.raises(ValueError, match="--scale"):
        methods.check_values("input_x_gradient", {"scale": -1.0}, (32, 32, 1), names={"scale": "--scale"})
    with pytest.raises(ValueError, match="already registered"):
        methods.register(toy)


def test_registered_method_through_the_pipeline_equals_its_definition(toy):
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(48, 4)), jnp.float32)
    encode = lambda params, xb: jnp.tanh(xb.reshape(xb.shape[0], -1) @ params)
    xs = jnp.asarray(rng.uniform(size=(3, 4, 4, 3)), jnp.float32)
    target = targets.cocoa(encode(w, xs + 1.0), encode(w, xs * 0.3))
    keys = pipeline.method_keys(jax.random.key(0), "input_x_gradient", 3)
    got = pipeline.attribute(encode, w, xs, 0.5 * xs, target, "input_x_gradient", keys, options={"scale": 2.0})
    for i in range(3):  # float64 finite differences of the target, times (x - b) * 2
        f = lambda z: float(target(np.asarray(encode(w, jnp.asarray(z[None], jnp.float32)))[0]))
        x = np.asarray(xs[i], np.float64)
        grad = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[idx] = 1e-3
            grad[idx] = (f(x + e) - f(x - e)) / 2e-3
        np.testing.assert_allclose(got[i, 0], 2.0 * 0.5 * x * grad, rtol=2e-2, atol=2e-4)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_registered_method_in_explain_and_the_sweep_config(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", "--methods", "input_x_gradient,rise", "--option", "input_x_gradient.scale=3",
                 "--n-masks", "16", "--explicands", "2", "--corpus-size", "10", "--foil-size", "20",
                 "--targets", "cocoa,label_free", "--out", str(out), "--quiet"]) == 0
    with np.load(out / "attributions.npz") as data:
        assert data["input_x_gradient"].shape == (2, 2, 32, 32, 1)
        assert np.abs(data["input_x_gradient"]).max() > 0
    assert main(["explain", "--methods", "input_x_gradient", "--option", "input_x_gradient.scale=-3",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "scale" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    config = SweepConfig(methods={"input_x_gradient": {"scale": 0.5}})
    assert config.method_options("input_x_gradient") == {"scale": 0.5}
    assert "input_x_gradient" in config.result_fields()["method_streams"]
