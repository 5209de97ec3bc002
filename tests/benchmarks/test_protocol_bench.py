"""The protocol benchmark: the official pipeline's pass counts, and an end-to-end smoke run.

No timing assertion: the counts are checked against closed forms (independently derived from the
official scripts' structure), and the smoke run only that every section produced finite figures.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.reference import official_pipeline as O  # noqa: E402
from tests.reference.torch_side import blur  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


class _TinyEncoder(torch.nn.Module):
    """(B, 3, H, W) -> (B, 8) representation, or (B, 3) head logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x, apply_head=False):
        rep = torch.relu(self.conv(x)).mean((2, 3)) + 0.1
        return self.fc(rep) if apply_head else rep


def _data():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(45, 3, 12, 12)).astype(np.float32)
    test = rng.normal(size=(12, 3, 12, 12)).astype(np.float32)
    return train, np.arange(45) % 3, test, np.arange(12) % 3


SETTINGS = O.Settings(classes=(0, 2), explicands=2, corpus_size=4, foil_size=5, ig_steps=3, gs_samples=2,
                      rise_masks=3, eval_steps=1)


def test_closed_form_counts_by_hand():
    """The official structure in numbers (per class): attribution builds corpus 2+2 (COCOA, corpus)
    and foil 2+2 (COCOA, contrastive label-free) per method; evaluation builds corpus 5, foil 4 per
    (method, target); 7 passes per step and one more per explicand."""
    s = O.Settings(classes=(0,), explicands=2, corpus_size=100, foil_size=100, rise_masks=1000)
    counts = O.expected_passes(s)
    # 3 methods x (4 corpus + 4 foil) + 12 evaluations x (5 corpus + 4 foil) passes of 100 images:
    # the corpus 72 times and the foil 60 times (the "~66 times").
    assert counts["corpus_foil"]["forward"] == (3 * 4 + 12 * 5) * 100 + (3 * 4 + 12 * 4) * 100
    # IG: 50 points per explicand and target, contrastive label-free twice (5 passes), + 2 weight passes.
    assert counts["attribution:int_grad"] == {"forward": 2 * (50 * 5 + 2), "backward": 2 * 50 * 5}
    assert counts["attribution:rise"] == {"forward": 2 * (1000 * 5 + 2), "backward": 0}
    assert counts["evaluation"]["forward"] == 12 * 2 * (2 * 51 * 7 + 1)


@pytest.mark.slow  # ~10 s on a quiet 2-core machine, ~50 s on a loaded one
@pytest.mark.parametrize("grad_mode", ["official", "inference"])
def test_hook_counts_equal_closed_form(grad_mode):
    result = O.run_official(_TinyEncoder(), blur, *_data(), SETTINGS, grad_mode=grad_mode)
    assert result.passes == O.expected_passes(SETTINGS)
    assert result.explicands == 4
    assert set(result.aucs) == {f"{m}/{t}" for m in O.METHODS for t in O.TARGETS}
    assert all(math.isfinite(v) for v in result.aucs.values())
    assert result.seconds["total"] > 0


def test_restated_estimators_match_captum():
    captum = pytest.importorskip("captum.attr")
    model = _TinyEncoder().eval()
    direction = torch.randn(8)
    f = lambda x: (model(x) * direction).sum(-1)
    x = torch.randn(2, 3, 12, 12)
    base = blur(x)
    ours = O.integrated_gradients(f, x, base, 7)
    ref = captum.IntegratedGradients(f).attribute(x, baselines=base, n_steps=7)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-6)
    # GradientSHAP with zero noise and one baseline: alpha-weighted gradients x (x - b); compare
    # the sample mean against Captum's with a shared RNG stream is impossible (different draw
    # order), so check the estimator's definition directly at stdev 0 and a linear model, where
    # every sample's term equals grad . (x - b) exactly.
    linear = torch.nn.Conv2d(3, 1, 1)
    g = lambda z: linear(z).mean((1, 2, 3))
    gs = O.gradient_shap(g, x, base[:1], 5, 0.0, torch.Generator().manual_seed(0))
    ref = captum.GradientShap(g).attribute(x, baselines=base[:1], n_samples=5, stdevs=0.0)
    assert torch.allclose(gs, ref, rtol=1e-4, atol=1e-6)


def test_device_blur_matches_the_reference_blur():
    from cocoa_jax.baselines import gaussian_blur  # tested against torchvision's GaussianBlur(21, 5)

    x = torch.rand(2, 3, 32, 32)
    reference = np.asarray(gaussian_blur(x.numpy().transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(O.gaussian_blur(x).numpy(), reference, atol=1e-5)
    assert torch.allclose(O.gaussian_blur(x), blur(x), atol=1e-6)
    # A constant image stays constant (taps sum to 1, reflect padding).
    assert torch.allclose(O.gaussian_blur(torch.full((1, 3, 32, 32), 0.3)), torch.full((1, 3, 32, 32), 0.3))


def test_rise_masks_follow_the_official_generator():
    gen = torch.Generator().manual_seed(0)
    masks = O.rise_masks(6, 32, 4, 0.5, gen)
    assert masks.shape == (6, 1, 32, 32)
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1 + 1e-6
    # keep_prob 1: every grid cell kept, so the upsampled crop is 1 everywhere; ~0: nothing kept.
    assert torch.allclose(O.rise_masks(3, 32, 4, 1.0, gen), torch.ones(3, 1, 32, 32))
    assert float(O.rise_masks(3, 32, 4, 1e-9, gen).abs().max()) == 0.0
    # RISE of a score that is the mean of the masked input, baseline 0: E[m m] / p is proportional
    # to x at every pixel; with many masks the map correlates with x.
    x = torch.rand(1, 1, 16, 16) + 0.5
    sal = O.rise(lambda z: z.mean((1, 2, 3)), x, torch.zeros_like(x), 400, 4, 0.5, gen)
    assert sal.shape == x.shape and bool(torch.all(sal > 0))


def test_bad_grad_mode_and_shapes_are_named():
    with pytest.raises(ValueError, match="grad_mode"):
        O.run_official(_TinyEncoder(), blur, *_data(), SETTINGS, grad_mode="fast")
    train, ytrain, test, ytest = _data()
    with pytest.raises(ValueError, match="train_images"):
        O.run_official(_TinyEncoder(), blur, train[0], ytrain, test, ytest, SETTINGS)


def test_profile_config_leaves_the_profile_its_options():
    from benchmarks.suites import protocol as P
    from cocoa_jax import methods
    from cocoa_jax.sweep.config import SweepConfig

    s = P.SETTINGS["issue"]
    paper = P.sweep_config(s, "/data", "/enc", "/probe", [0])
    assert "estimators" not in paper and paper["methods"]["rise"] == {"n_masks": 1000}
    fast = P.sweep_config(s, "/data", "/enc", "/probe", [0], estimators="fast")
    assert fast["estimators"] == "fast"
    for key, (method, option) in P.SETTING_OPTIONS.items():  # set by the profile -> left out, else kept
        expected = methods.PROFILES["fast"].get(method, {}).get(option, s[key])
        assert P.profile_settings(s, "fast")[key] == expected
        assert (option in fast["methods"][method]) == (option not in methods.PROFILES["fast"].get(method, {}))
    assert P.profile_settings(s, "fast")["gs_samples"] == 50 and P.profile_settings(s, "paper") == s
    resolved = SweepConfig.from_dict(fast)  # the sweep reads it with the profile's counts
    assert [resolved.method_options(m)[o] for m, o in P.SETTING_OPTIONS.values()] == [16, 50, 416]
    assert resolved.method_options("rise")["centered"] is True
    # The smoke run's counts, given explicitly, win over the profile's; its other options stay.
    smoke = SweepConfig.from_dict(P.sweep_config(P.SETTINGS["smoke"], "/data", "/enc", "/probe", [0],
                                                 estimators="fast", counts=P.PROFILE_COUNTS["smoke"]))
    assert [smoke.method_options(m)[o] for m, o in P.SETTING_OPTIONS.values()] == [4, 4, 8]
    assert smoke.method_options("rise")["centered"] is True


@pytest.mark.parametrize("value", ["paper", "turbo"])
def test_estimators_flag_refuses_paper_and_unknown(value, capsys):
    # The suite's argument checks, in this process (the smoke run below runs the module as __main__).
    from benchmarks.suites import protocol as P

    with pytest.raises(SystemExit) as refused:
        P._parse_args(["--estimators", value, "--out", "/dev/null/x"])
    assert refused.value.code == 2 and "--estimators must be one of ['fast']" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_protocol_benchmark_writes_results(tmp_path, capsys):
    out = tmp_path / "RESULTS_protocol_smoke.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suites.protocol", "--settings", "smoke", "--skip-official",
                           "--estimators", "fast", "--out", str(out), "--work-dir", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    text = out.read_text()
    for heading in ("## Wall time by phase", "## Encoder passes per explicand", "Bound from encoder-pass counts",
                    "## FLOP roofline fraction"):
        assert heading in text, heading
    results = json.loads(out.with_suffix(".json").read_text())
    for run in ("cold", "warm"):
        sweep = results["sweep"][run]
        assert sweep["units"] == 3 and sweep["wall_s"] > 0
        assert all(v > 0 for v in sweep["attribution_s"].values()) and sweep["evaluation_s"] > 0
    analysis = results["analysis"]
    assert math.isfinite(analysis["bound"]) and analysis["bound"] > 1
    # The fast profile's sweeps ran under the profile at the smoke's own counts (PROFILE_COUNTS: the
    # profile's 416 masks would only time numerics), recorded as what ran beside the profile's own
    # counts, for the settings' one explicand; each sweep's resolved config says the profile applied
    # (centred RISE, which the paper profile does not set) with the recorded counts.
    profile = results["profile"]
    own = profile["profile_settings"]
    assert profile["name"] == "fast" and (own["ig_steps"], own["rise_masks"]) == (16, 416)
    assert (profile["settings"]["ig_steps"], profile["settings"]["rise_masks"]) == (4, 8)
    assert all(profile["sweep"][run]["units"] == 3 for run in ("cold", "warm"))
    assert results["explicands_total"] == 1 and profile["passes"]["attribution:rise"]["forward"] == 8
    for run in ("cold", "warm"):
        [run_dir] = tmp_path.glob(f"protocol_smoke_*/run_fast_{run}")
        resolved = json.loads((run_dir / "config.json").read_text())["identity"]["config"]
        assert resolved["estimators"] == "fast" and resolved["methods"]["rise"]["centered"] is True
        assert resolved["methods"]["rise"]["n_masks"] == profile["settings"]["rise_masks"]
        assert resolved["methods"]["integrated_gradients"]["n_steps"] == profile["settings"]["ig_steps"]
    assert "**Estimator profile `fast`**" in text and "`--estimators fast` warm" in text
    # A ratio of two timings (the phase's FLOP rate over a matmul peak measured in the same run): a
    # loaded host can push it past 1, so only its presence and sign are asserted, not its size.
    fraction = analysis["roofline"]["cocoa-jax warm"]["evaluation"]
    assert math.isfinite(fraction) and fraction > 0
    # A second run may not replace the file silently (refused by the argument checks, before any
    # work: called in this process, a fresh one would only add its start-up).
    from benchmarks.suites import protocol as P

    with pytest.raises(SystemExit) as again:
        P._parse_args(["--settings", "smoke", "--out", str(out)])
    assert again.value.code == 2 and "--overwrite" in capsys.readouterr().err
