"""The official COCOA pipeline's WORK, restated in PyTorch, with its encoder passes counted.

Written from a reading of suinleelab/cl-explainability (`scripts/run_loop.py`, `scripts/run.py`,
`scripts/attribute.py`, `scripts/eval.py`, `src/cl_explain/...`); no code copied. What it does,
for each attribution method and each of the 4 explanation targets (a separate `attribute.py`
run followed by a separate `eval.py` run, nothing shared between runs):

attribute (per class):
  * the explanation model is built, which ENCODES at construction: COCOA (contrastive corpus
    similarity) the corpus twice and the foil twice (representations, then their normalised
    mean, each a fresh encoder pass); corpus similarity the corpus twice; contrastive label-free
    the foil twice; label-free nothing;
  * explicands in batches of `batch_size` (run_loop.py: 1 for IG and GradientSHAP, 32 for
    RISE); label-free targets first encode the batch once (`generate_weight`); the blurred
    explicand is the baseline;
  * IG: Captum `IntegratedGradients(model).attribute(x, baselines=blur)` (50 Gauss-Legendre
    steps, one batch); GradientSHAP: Captum `GradientShap`, n_samples=50, stdevs=0.2; RISE:
    n_masks iterations, each ONE mask per explicand of the batch (4x4 grid, p=0.5, one random
    crop offset per iteration) and one forward pass of the batch;
  * the target's forward is one encoder pass, except contrastive label-free: two (its weight
    similarity encodes the input, then the foil term encodes it again).
evaluate (per class, batch 32):
  * builds CorpusMajorityProb (corpus through encoder + head once) and, with --comprehensive
    (as run_loop.py passes), two ContrastiveCorpusSimilarity models (cosine and dot; each the
    corpus twice and the eval foil twice);
  * per explicand batch: |a| optional, channel mean; insertion and deletion, each n_steps + 1
    steps; per step 3 models x 1 pass + PredProb and RepShift x 2 passes (original AND
    ablated explicand) = 7 encoder passes of the batch; then one pass of the explicand
    (`rep_zero_prop`).

Like the official scripts, nothing runs under `torch.no_grad`: the encoder's parameters require
gradients and every forward pass records an autograd graph (outputs are detached afterwards);
`grad_mode="inference"` runs the forward-only work under `torch.no_grad` with frozen parameters
instead, to measure what that costs (`inference_mode` tensors cannot enter Captum's autograd).
Images are held in memory, preprocessed once (the official data loaders re-apply ToTensor +
Normalize per item; that cost is not counted here).

Counting: `CountingEncoder` counts images through the encoder per phase, forward passes when they
run and backward passes when a gradient actually flows back through an output (tensor hook).
`expected_passes` gives the same counts in closed form (tested against the hooks).

Captum is used when installed; otherwise IG and GradientSHAP are computed the way Captum does
(IG: Gauss-Legendre nodes and weights on [0, 1], all steps in one batch; GradientSHAP: per sample a
random baseline pick, Gaussian noise of stdev 0.2 on the input, a uniform alpha, one batch), and
`RunResult.captum` says which was used.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable

import numpy as np

TARGETS = ("contrastive_corpus", "self_weighted", "contrastive_self_weighted", "corpus")  # run_loop.py order
METHODS = ("gradient_shap", "int_grad", "rise")  # run_loop.py order
# run_loop.py's --batch-size per method; eval.py always runs with 32 (run.py).
ATTRIBUTION_BATCH = {"int_grad": 1, "gradient_shap": 1, "rise": 32}
EVAL_BATCH = 32
# Encoder passes of one target forward: contrastive label-free encodes its input twice.
FORWARD_PASSES = {"contrastive_corpus": 1, "self_weighted": 1, "contrastive_self_weighted": 2, "corpus": 1}
# Passes over the corpus / foil when a target's explanation model is built.
BUILD_CORPUS = {"contrastive_corpus": 2, "self_weighted": 0, "contrastive_self_weighted": 0, "corpus": 2}
BUILD_FOIL = {"contrastive_corpus": 2, "self_weighted": 0, "contrastive_self_weighted": 2, "corpus": 0}
EVAL_MODELS, EVAL_MEASURE_PASSES = 3, 4  # per step: 3 models x 1 pass, 2 measures x 2 passes
EVAL_BUILD_CORPUS, EVAL_BUILD_FOIL = 1 + 2 * 2, 2 * 2  # majority prob: 1; two CCS models: 2 + 2 each


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one protocol run does (per class: `explicands` explicands, a corpus, a foil)."""

    classes: tuple = (0,)
    explicands: int = 2
    corpus_size: int = 100
    foil_size: int = 100
    ig_steps: int = 50
    gs_samples: int = 50
    gs_stdev: float = 0.2
    rise_masks: int = 1000
    rise_grid: int = 4
    rise_keep_prob: float = 0.5
    eval_steps: int = 50
    targets: tuple = TARGETS
    methods: tuple = METHODS


@dataclasses.dataclass
class RunResult:
    seconds: dict  # phase -> seconds ("corpus_foil", "attribution:<method>", "evaluation", "total")
    passes: dict  # phase -> {"forward": images, "backward": images}
    explicands: int  # explicands attributed (over classes)
    captum: str  # "captum <version>" or "restated (captum absent)"
    device: str
    grad_mode: str
    aucs: dict = dataclasses.field(default_factory=dict)  # (method, target) -> mean insertion AUC of the majority prob


def _torch():
    import torch
    return torch


# ----------------------------------------------------------------------------- counting


class CountingEncoder:
    """Wraps an encoder `module(x, apply_head=False)`; counts images per phase.

    Called as the official encoder is: `enc(x)` -> representation, `enc(x, apply_eval_head=True)`
    -> head logits. `phase` names where the current passes are booked.
    """

    def __init__(self, module):
        self.module = module
        self.phase = "other"
        self.counts = collections.defaultdict(lambda: {"forward": 0, "backward": 0})

    def parameters(self):
        return self.module.parameters()

    def __call__(self, x, apply_eval_head: bool = False):
        out = self.module(x, apply_head=apply_eval_head)
        n, phase = int(x.shape[0]), self.phase
        self.counts[phase]["forward"] += n
        if out.requires_grad:  # booked only if a gradient really flows back through it
            out.register_hook(lambda grad, phase=phase, n=n: self._backward(phase, n))
        return out

    def _backward(self, phase, n):
        self.counts[phase]["backward"] += n


def expected_passes(settings: Settings) -> dict:
    """Closed-form encoder passes (images) per phase for `settings`, as `run_official` books them."""
    n_classes = len(settings.classes)
    n, c, f = settings.explicands, settings.corpus_size, settings.foil_size
    counts = collections.defaultdict(lambda: {"forward": 0, "backward": 0})
    steps = 2 * (settings.eval_steps + 1)
    for method in settings.methods:
        for target in settings.targets:
            build = counts["corpus_foil"]
            build["forward"] += n_classes * (BUILD_CORPUS[target] * c + BUILD_FOIL[target] * f)
            build["forward"] += n_classes * (EVAL_BUILD_CORPUS * c + EVAL_BUILD_FOIL * f)
            attr = counts[f"attribution:{method}"]
            per_eval = FORWARD_PASSES[target]
            if target in ("self_weighted", "contrastive_self_weighted"):
                attr["forward"] += n_classes * n  # generate_weight
            if method == "rise":
                attr["forward"] += n_classes * n * settings.rise_masks * per_eval
            else:
                points = settings.ig_steps if method == "int_grad" else settings.gs_samples
                attr["forward"] += n_classes * n * points * per_eval
                attr["backward"] += n_classes * n * points * per_eval
            counts["evaluation"]["forward"] += n_classes * n * (steps * (EVAL_MODELS + EVAL_MEASURE_PASSES) + 1)
    return {k: dict(v) for k, v in counts.items()}


def gaussian_blur(x, kernel_size: int = 21, sigma: float = 5.0):
    """torchvision's GaussianBlur(21, sigma=5) (reflect padding) on (B, C, H, W), on x's device
    (the official baseline runs on the explicand's device)."""
    torch = _torch()
    radius = kernel_size // 2
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    taps = taps / taps.sum()
    c = x.shape[1]
    padded = torch.nn.functional.pad(x, (radius,) * 4, mode="reflect")
    rows = torch.nn.functional.conv2d(padded, taps.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(rows, taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


# ----------------------------------------------------------------------------- explanation models


def _cosine_mean(reps, normalize: bool):
    if normalize:
        reps = reps / reps.norm(dim=-1, keepdim=True)
    return reps.mean(dim=0)


def _encode_all(enc, images, batch_size: int):
    """The official `_encode`: the data loader's batches through the encoder, detached."""
    torch = _torch()
    return torch.cat([enc(images[i:i + batch_size]).detach() for i in range(0, images.shape[0], batch_size)])


class Target:
    """One official explanation model: built (encoding corpus/foil as the official one does), then
    called on a batch -> (B,) scores. `weight` is set per batch for the label-free targets."""

    def __init__(self, name: str, enc, corpus, foil, normalize: bool, batch_size: int):
        self.name, self.enc, self.normalize = name, enc, normalize
        self.weight = None
        self.corpus_mean = self.foil_mean = None
        if BUILD_CORPUS[name]:
            _encode_all(enc, corpus, batch_size)  # the stored representations (pairwise form, unused)
            self.corpus_mean = _cosine_mean(_encode_all(enc, corpus, batch_size), normalize)
        if BUILD_FOIL[name]:
            _encode_all(enc, foil, batch_size)
            self.foil_mean = _cosine_mean(_encode_all(enc, foil, batch_size), normalize)

    def generate_weight(self, x):
        self.weight = self.enc(x).detach()

    def _mean_similarity(self, rep, mean):
        sim = (rep * mean).sum(dim=-1)
        return sim / rep.norm(dim=-1) if self.normalize else sim

    def _weight_similarity(self, x):
        rep = self.enc(x)
        sim = (self.weight * rep).sum(dim=-1)
        return sim / (self.weight.norm(dim=-1) * rep.norm(dim=-1)) if self.normalize else sim

    def __call__(self, x):
        if self.name == "self_weighted":
            return self._weight_similarity(x)
        if self.name == "contrastive_self_weighted":
            weight_term = self._weight_similarity(x)
            return weight_term - self._mean_similarity(self.enc(x), self.foil_mean)  # a second encoder pass
        rep = self.enc(x)
        score = self._mean_similarity(rep, self.corpus_mean)
        if self.name == "contrastive_corpus":
            score = score - self._mean_similarity(rep, self.foil_mean)
        return score


# ----------------------------------------------------------------------------- attribution


def _captum():
    try:
        import captum
        from captum.attr import GradientShap, IntegratedGradients
        return captum.__version__, IntegratedGradients, GradientShap
    except ImportError:
        return None, None, None


def integrated_gradients(f, x, baseline, n_steps: int):
    """Captum's IG (Gauss-Legendre, no internal batching), for when Captum is absent."""
    torch = _torch()
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas = torch.as_tensor(0.5 * (nodes + 1), dtype=x.dtype, device=x.device)
    step = torch.as_tensor(0.5 * weights, dtype=x.dtype, device=x.device)
    b = x.shape[0]
    shape = (n_steps, 1) + (1,) * (x.ndim - 1)
    points = (baseline[None] + alphas.view(shape) * (x - baseline)[None]).reshape((-1,) + x.shape[1:])
    points = points.detach().requires_grad_(True)
    grads, = torch.autograd.grad(f(points).sum(), points)
    grads = grads.view((n_steps, b) + x.shape[1:])
    return (grads * step.view(shape)).sum(0) * (x - baseline)


def gradient_shap(f, x, baselines, n_samples: int, stdev: float, generator=None):
    """Captum's GradientShap (SmoothGrad over InputXGradient of random baseline points)."""
    torch = _torch()
    b = x.shape[0]
    inputs = x.repeat_interleave(n_samples, dim=0)
    noisy = inputs + torch.randn(inputs.shape, generator=generator, device="cpu").to(x.device) * stdev
    pick = torch.randint(0, baselines.shape[0], (inputs.shape[0],), generator=generator).to(x.device)
    base = baselines[pick]
    alpha = torch.rand((inputs.shape[0],) + (1,) * (x.ndim - 1), generator=generator).to(x.device)
    points = (base + alpha * (noisy - base)).detach().requires_grad_(True)
    grads, = torch.autograd.grad(f(points).sum(), points)
    return (grads * (noisy - base)).view((b, n_samples) + x.shape[1:]).mean(1)


def rise_masks(n: int, size: int, grid: int, keep_prob: float, generator):
    """The official per-iteration masks: n masks (n, 1, size, size), one crop offset for all."""
    torch = _torch()
    cell = size // grid
    masks = (torch.rand(n, 1, grid, grid, generator=generator) < keep_prob).float()
    masks = torch.nn.functional.interpolate(masks, size=((grid + 1) * cell,) * 2, mode="bilinear",
                                            align_corners=False)
    dy, dx = torch.randint(0, cell, (2,), generator=generator).tolist()
    return masks[:, :, dy:dy + size, dx:dx + size]


def rise(f, x, baseline, n_masks: int, grid: int, keep_prob: float, generator):
    """The official RISE loop: n_masks iterations, one mask per explicand, one forward each."""
    torch = _torch()
    scores = torch.zeros_like(x)
    for _ in range(n_masks):
        masks = rise_masks(x.shape[0], x.shape[-1], grid, keep_prob, generator).to(x.device)
        score = f(x * masks + baseline * (1 - masks)).detach()
        scores += score.view(-1, 1, 1, 1) * masks
    return scores / n_masks / keep_prob


# ----------------------------------------------------------------------------- evaluation


def step_sizes(n_features: int, n_steps: int) -> list:
    size, rem = divmod(n_features, n_steps)
    return [0] + [size + 1] * rem + [size] * (n_steps - rem)


def ablation_curves(models, measures, x, attribution, baseline, kind: str, n_steps: int):
    """The official ImageAblation.evaluate: per step, every model on the ablated batch and every
    measure on (original, ablated). attribution: (B, 1, H, W). Returns [model curves], [measure curves]."""
    torch = _torch()
    b = x.shape[0]
    flat = attribution.reshape(b, -1)
    order = flat.argsort(descending=True, dim=-1)
    mask = (torch.zeros if kind == "insertion" else torch.ones)(flat.shape, device=x.device)
    fill = 1.0 if kind == "insertion" else 0.0
    model_curves, measure_curves = [[] for _ in models], [[] for _ in measures]
    count = 0
    for size in step_sizes(flat.shape[1], n_steps):
        count += size
        for i in range(b):
            mask[i, order[i, :count]] = fill
        m = mask.view(attribution.shape)
        ablated = x * m + baseline * (1 - m)
        for curve, model in zip(model_curves, models):
            curve.append(model(ablated).detach().cpu())
        for curve, measure in zip(measure_curves, measures):
            curve.append(measure(x, ablated).detach().cpu())
    return [torch.stack(c, -1) for c in model_curves], [torch.stack(c, -1) for c in measure_curves]


def _auc(curves):
    torch = _torch()
    fractions = torch.linspace(0, 1, curves.shape[-1])  # only used as a summary (equal steps up to rounding)
    return torch.trapezoid(curves, fractions, dim=-1)


def evaluation_models(enc, corpus, foil, batch_size: int):
    """CorpusMajorityProb, CCS cosine, CCS dot (built as eval.py does: corpus and foil encoded)."""
    torch = _torch()
    preds = torch.cat([enc(corpus[i:i + batch_size], apply_eval_head=True).argmax(-1).detach()
                       for i in range(0, corpus.shape[0], batch_size)])
    majority = int(preds.mode()[0])

    def majority_prob(x):
        return enc(x, apply_eval_head=True).softmax(-1)[:, majority]

    ccs = [Target("contrastive_corpus", enc, corpus, foil, normalize, batch_size) for normalize in (True, False)]
    return [majority_prob] + ccs


def evaluation_measures(enc):
    def pred_prob(original, ablated):
        label = enc(original, apply_eval_head=True).argmax(-1).detach()
        prob = enc(ablated, apply_eval_head=True).softmax(-1).detach()
        return prob.gather(-1, label[:, None])[:, 0]

    def rep_shift(original, ablated):
        a, b = enc(original).detach(), enc(ablated).detach()
        return ((a - b) ** 2).sum(-1).sqrt()

    return [pred_prob, rep_shift]


# ----------------------------------------------------------------------------- the pipeline


def _split_indices(labels_train, labels_test, settings: Settings, seed: int):
    """Per class: explicands (test split), corpus (train, class) and foil (train, rest)."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in settings.classes:
        explicands = rng.permutation(np.flatnonzero(labels_test == c))[:settings.explicands]
        in_class = rng.permutation(np.flatnonzero(labels_train == c))
        corpus = in_class[:settings.corpus_size]
        leftover = rng.permutation(np.setdiff1d(np.arange(labels_train.size), corpus))
        foil = leftover[:settings.foil_size]
        if explicands.size < settings.explicands or corpus.size < settings.corpus_size or \
                foil.size < settings.foil_size:
            raise ValueError(f"class {c}: not enough images for {settings}")
        out[c] = (explicands, corpus, foil)
    return out


def run_official(module, blur: Callable, train_images: np.ndarray, train_labels: np.ndarray,
                 test_images: np.ndarray, test_labels: np.ndarray, settings: Settings, *, device: str = "cpu",
                 seed: int = 0, grad_mode: str = "official", progress: Callable[[str], None] | None = None
                 ) -> RunResult:
    """The official pipeline's work on in-memory data; timed and counted by phase.

    Args:
      module: torch encoder `module(x (B, C, H, W), apply_head=False)` -> (B, D), or head logits.
      blur: the baseline, (B, C, H, W) -> (B, C, H, W) (GaussianBlur(21, 5)).
      train_images, test_images: (N, C, H, W) float32 (preprocessed); labels (N,) int.
      grad_mode: "official" (autograd on everywhere, as the official scripts) or "inference"
        (forward-only work under torch.no_grad, parameters frozen).
    """
    torch = _torch()
    if grad_mode not in ("official", "inference"):
        raise ValueError(f"`grad_mode` must be 'official' or 'inference', got {grad_mode!r}")
    for name, images in (("train_images", train_images), ("test_images", test_images)):
        if np.ndim(images) != 4:
            raise ValueError(f"`{name}` must be (N, C, H, W), got shape {np.shape(images)}")
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(grad_mode == "official")  # the official encoder is loaded trainable
    enc = CountingEncoder(module)
    captum_version, IntegratedGradients, GradientShap = _captum()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train = torch.as_tensor(np.asarray(train_images, np.float32))
    test = torch.as_tensor(np.asarray(test_images, np.float32))
    split = _split_indices(np.asarray(train_labels), np.asarray(test_labels), settings, seed)
    data = {c: tuple(t.to(device) for t in (test[e], train[co], train[fo])) for c, (e, co, fo) in split.items()}
    seconds = collections.defaultdict(float)
    aucs = {}
    sync = (lambda: torch.cuda.synchronize()) if str(device).startswith("cuda") else (lambda: None)
    forward_only = torch.no_grad if grad_mode == "inference" else torch.enable_grad

    def phase(name):
        enc.phase = name
        return name

    def booked(name, fn):
        phase(name)
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        seconds[name] += time.perf_counter() - start
        return out

    def attribute(method, model, x, baseline):
        x = x.clone().requires_grad_(True)  # attribute.py sets requires_grad on every explicand batch
        if model.name in ("self_weighted", "contrastive_self_weighted"):
            model.generate_weight(x.detach().clone())
        if method == "int_grad":
            if IntegratedGradients is not None:
                # The official call passes no n_steps (Captum's default, 50); explicit here for other settings.
                return IntegratedGradients(model).attribute(x, baselines=baseline, n_steps=settings.ig_steps)
            return integrated_gradients(model, x, baseline, settings.ig_steps)
        if method == "gradient_shap":
            if GradientShap is not None:
                return GradientShap(model).attribute(x, baselines=baseline, n_samples=settings.gs_samples,
                                                     stdevs=settings.gs_stdev)
            return gradient_shap(model, x, baseline, settings.gs_samples, settings.gs_stdev, generator)
        with forward_only():
            return rise(model, x if grad_mode == "official" else x.detach(), baseline, settings.rise_masks,
                        settings.rise_grid, settings.rise_keep_prob, generator)

    start_all = time.perf_counter()
    for method in settings.methods:
        batch = ATTRIBUTION_BATCH[method]
        for target in settings.targets:
            # ---- attribute.py: one run for (target, method)
            attributions = {}
            for c, (xs, corpus, foil) in data.items():
                with forward_only():
                    model = booked("corpus_foil", lambda: Target(target, enc, corpus, foil, True, 32))
                parts = []
                for i in range(0, xs.shape[0], batch):
                    x = xs[i:i + batch]
                    with forward_only():
                        baseline = blur(x)
                    a = booked(f"attribution:{method}", lambda: attribute(method, model, x, baseline))
                    parts.append(a.detach().cpu())
                attributions[c] = torch.cat(parts)
            # ---- eval.py: one run for (target, method), batch 32, comprehensive
            insertion = []
            for c, (xs, corpus, foil) in data.items():
                with forward_only():
                    models = booked("corpus_foil", lambda: evaluation_models(enc, corpus, foil, EVAL_BATCH))
                measures = evaluation_measures(enc)

                def evaluate_class():
                    out = []
                    for i in range(0, xs.shape[0], EVAL_BATCH):
                        x = xs[i:i + EVAL_BATCH]
                        a = attributions[c][i:i + EVAL_BATCH].to(device).mean(dim=1, keepdim=True)
                        baseline = blur(x)
                        curves = {kind: ablation_curves(models, measures, x, a, baseline, kind, settings.eval_steps)
                                  for kind in ("insertion", "deletion")}
                        enc(x)  # rep_zero_prop
                        out.append(_auc(curves["insertion"][0][0]))
                    return out

                with forward_only():
                    insertion += booked("evaluation", evaluate_class)
            aucs[(method, target)] = float(torch.cat(insertion).mean())
            if progress is not None:
                progress(f"official: {method} x {target} done ({time.perf_counter() - start_all:.0f} s)")
    seconds["total"] = time.perf_counter() - start_all
    counts = {k: dict(v) for k, v in enc.counts.items()}
    return RunResult(dict(seconds), counts, settings.explicands * len(settings.classes),
                     f"captum {captum_version}" if captum_version else "restated (captum absent)", str(device),
                     grad_mode, {f"{m}/{t}": v for (m, t), v in aucs.items()})
