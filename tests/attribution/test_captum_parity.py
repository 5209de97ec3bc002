"""Parity with Captum on one small network written in both PyTorch and Flax (same weights)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from cocoa_jax import attribution, targets  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(2)


class TorchEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.fc = torch.nn.Linear(5 * 4 * 4, 6)

    def forward(self, x):  # (N, 3, 8, 8) -> (N, 6)
        h = torch.tanh(self.conv(x))
        h = torch.nn.functional.avg_pool2d(h, 2)
        return torch.nn.functional.softplus(self.fc(h.flatten(1)))


class FlaxEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):  # (N, 8, 8, 3) -> (N, 6)
        h = jnp.tanh(nn.Conv(5, (3, 3), padding=1)(x))
        h = nn.avg_pool(h, (2, 2), (2, 2))
        h = h.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # flatten in torch's (C, H, W) order
        return jax.nn.softplus(nn.Dense(6)(h))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    net = TorchEncoder().double().eval()
    with torch.no_grad():  # larger weights: a clearly non-linear target, so estimators' biases would show
        for p in net.parameters():
            p.mul_(4.0)
    params = {"params": {
        "Conv_0": {"kernel": jnp.asarray(net.conv.weight.detach().numpy().transpose(2, 3, 1, 0), jnp.float32),
                   "bias": jnp.asarray(net.conv.bias.detach().numpy(), jnp.float32)},
        "Dense_0": {"kernel": jnp.asarray(net.fc.weight.detach().numpy().T, jnp.float32),
                    "bias": jnp.asarray(net.fc.bias.detach().numpy(), jnp.float32)},
    }}
    encode = lambda xb: FlaxEncoder().apply(params, xb)
    rng = np.random.default_rng(0)
    corpus = rng.uniform(size=(7, 8, 8, 3)).astype(np.float32)
    foil = rng.uniform(size=(11, 8, 8, 3)).astype(np.float32)
    stacked = targets.stack([targets.cocoa(encode(corpus), encode(foil)), targets.corpus(encode(corpus), "dot")])
    x = rng.uniform(size=(8, 8, 3)).astype(np.float32)
    baseline = (0.2 * x).astype(np.float32)
    direction = torch.tensor(np.asarray(stacked.direction, np.float64))

    def torch_targets(xb):  # (N, 3, 8, 8) -> (N, 2): cosine COCOA, dot corpus
        reps = net(xb)
        cos = (torch.nn.functional.normalize(reps, dim=-1) * direction[0]).sum(-1)
        return torch.stack([cos, (reps * direction[1]).sum(-1)], dim=-1)

    # Same network in both frameworks?
    np.testing.assert_allclose(encode(x[None]), net(torch.tensor(x[None].transpose(0, 3, 1, 2), dtype=torch.float64))
                               .detach().numpy(), rtol=1e-5)
    to_torch = lambda a: torch.tensor(np.asarray(a, np.float64).transpose(2, 0, 1)[None])
    from_torch = lambda t: t.detach().numpy()[0].transpose(1, 2, 0)
    return dict(f=targets.explain_fn(encode, stacked), torch_targets=torch_targets, x=x, baseline=baseline,
                to_torch=to_torch, from_torch=from_torch)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
def test_integrated_gradients_equals_captum(models, method):
    n = 16
    ours = attribution.integrated_gradients(models["f"], models["x"], models["baseline"], n_steps=n, method=method)
    ig = captum_attr.IntegratedGradients(models["torch_targets"])
    for k in range(2):
        theirs = models["from_torch"](ig.attribute(models["to_torch"](models["x"]),
                                                   models["to_torch"](models["baseline"]),
                                                   target=k, n_steps=n, method=method))
        if method == "riemann_trapezoid":
            # Captum's trapezoid weights sum to (n-1)/n; ours are the composite rule (sum 1).
            theirs = theirs * n / (n - 1)
        np.testing.assert_allclose(ours[k], theirs, rtol=2e-4, atol=2e-6 * np.abs(theirs).max())


def _relative_error(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.slow  # 20000-sample reference
def test_gradient_shap_agrees_with_captum_in_expectation(models):
    stdev, n = 0.5, 3000
    truth = attribution.gradient_shap(models["f"], models["x"], models["baseline"][None], jax.random.PRNGKey(0),
                                      n_samples=20000, stdev=stdev)
    ours = attribution.gradient_shap(models["f"], models["x"], models["baseline"][None], jax.random.PRNGKey(1),
                                     n_samples=n, stdev=stdev)
    torch.manual_seed(0)
    gs = captum_attr.GradientShap(models["torch_targets"])
    for k in range(2):
        theirs = models["from_torch"](gs.attribute(models["to_torch"](models["x"]),
                                                   baselines=models["to_torch"](models["baseline"]),
                                                   n_samples=n, stdevs=stdev, target=k))
        ours_error = _relative_error(ours[k], truth[k])  # Monte-Carlo error at n samples
        assert _relative_error(theirs, truth[k]) < max(3 * ours_error, 0.02)
    # and the estimator is not trivially noise-free: a different statistic would differ
    no_noise = attribution.gradient_shap(models["f"], models["x"], models["baseline"][None], jax.random.PRNGKey(1),
                                         n_samples=n, stdev=0.0)
    assert _relative_error(no_noise[0], truth[0]) > 3 * _relative_error(ours[0], truth[0])


@pytest.mark.slow  # 20000-sample reference
def test_smoothgrad_agrees_with_captum_noise_tunnel_in_expectation(models):
    stdev, n = 0.5, 3000
    truth = attribution.smoothgrad(models["f"], models["x"], jax.random.PRNGKey(0), n_samples=20000, stdev=stdev)
    ours = attribution.smoothgrad(models["f"], models["x"], jax.random.PRNGKey(1), n_samples=n, stdev=stdev)
    torch.manual_seed(0)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(models["torch_targets"]))
    for k in range(2):
        theirs = models["from_torch"](tunnel.attribute(models["to_torch"](models["x"]), nt_type="smoothgrad",
                                                       nt_samples=n, stdevs=stdev, target=k, abs=False))
        assert _relative_error(theirs, truth[k]) < max(3 * _relative_error(ours[k], truth[k]), 0.02)
