"""The attribution-method vocabulary: one table of `Method` records that every front end reads.

Every front end (the API's `attribute`, the sweep, `cocoa-jax explain` / `localize` /
`augmentations`, the benchmarks, the tests' invariance checks) takes method names, titles,
option flags and help, and how maps are shown from `METHODS`. Defaults live only in the
signatures of `cocoa_jax.attribution`; `defaults(name)` reads them from there. Adding a method
is its function, one `register(Method(...))` (or one entry below), and its tests.

The common signature:

    method.fn(f, x, baseline, key, *, batch_size=None, mesh=None, **options)
        f: one input (H, W, C) -> scalar or (K,);  x, baseline: (H, W, C);  key: a PRNG key
        (ignored by deterministic methods) -> (H, W, C) or (H, W) maps, with a leading K axis
        when f returns (K,).

Every method here explains a target. The evaluation's random reference (U[0, 1) per pixel, it
never calls f) is not a method: it is a reference map generator of the evaluation,
`cocoa_jax.metrics.RANDOM_REFERENCE`.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import inspect
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from cocoa_jax import _checks, attribution

# Keyword arguments of the common signature that are not method options.
_EXECUTION_ARGS = ("batch_size", "mesh")
# Options a caller of `attribute` never sets: they change the return type.
_HIDDEN_ARGS = ("return_delta", "return_passes")


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """How an option is offered to users: help text, and how a command-line string becomes its
    value (`parse=None`: not offered as a flag, e.g. an array). `flag` overrides the flag name
    (default `--` + the option name with dashes)."""

    help: str
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    flag: str | None = None
    none: str = "auto"  # how a default of None reads in help ("auto": chosen by the method; "off")


def parse_pair(text: str) -> tuple[int, int]:
    """'4' -> (4, 4); '4x6' -> (4, 6) (grid sizes, windows, strides)."""
    parts = str(text).lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise ValueError(f"expected N or HxW (integers), got {text!r}")
    values = tuple(int(p) for p in parts)
    return values * 2 if len(values) == 1 else values


def parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


# Options with one name mean one thing in every method (n_samples, stdev, ...), so their help
# lives here once. A registered method may add its own (`Method.option_specs`).
OPTION_SPECS: dict[str, OptionSpec] = {
    "n_steps": OptionSpec("integration points along the path", int, "N"),
    "method": OptionSpec("IG quadrature rule: gausslegendre, riemann_left, riemann_right, riemann_middle or "
                         "riemann_trapezoid", str, "RULE", flag="--ig-rule"),
    "n_samples": OptionSpec("noise samples / coalitions", int, "N"),
    "stdev": OptionSpec("noise standard deviation", float, "SIGMA"),
    "antithetic": OptionSpec("antithetic pairs (needs an even count)", parse_bool, "BOOL"),
    "stratified_alpha": OptionSpec("GradientSHAP: stratified path positions", parse_bool, "BOOL"),
    "n_masks": OptionSpec("RISE masks", int, "N"),
    "grid_size": OptionSpec("RISE grid cells per side, N or HxW (default: the paper's grid for the image size)",
                            parse_pair, "N"),
    "keep_prob": OptionSpec("RISE probability of keeping a grid cell", float, "P"),
    "centered": OptionSpec("RISE: subtract the masks' mean score (a control variate)", parse_bool, "BOOL"),
    "sampler": OptionSpec("RISE grid sampler: bernoulli or stratified", str, "NAME"),
    "superpixel": OptionSpec("KernelSHAP / LIME feature size: superpixels of N x N pixels", int, "N"),
    "feature_mask": OptionSpec("(H, W) integer feature labels (API only)"),
    "efficient": OptionSpec("KernelSHAP: attributions sum exactly to f(x) - f(baseline)", parse_bool, "BOOL"),
    "alpha": OptionSpec("LIME Lasso regularisation", float, "A"),
    "kernel_width": OptionSpec("LIME similarity kernel width", float, "W"),
    "window": OptionSpec("Occlusion window, N or HxW pixels (default: an 8x8 grid of windows)", parse_pair, "N"),
    "stride": OptionSpec("Occlusion stride, N or HxW pixels (default: the window)", parse_pair, "N"),
    "tolerance": OptionSpec("sample in rounds and stop when the map's relative standard error is below this "
                            "(RISE, GradientSHAP, SmoothGrad, SmoothGrad-IG, KernelSHAP, LIME; the count is then the budget; "
                            "default: off, the fixed count)", float, "TOL", none="off"),
    "head_fusion": OptionSpec("rollout: how heads are fused per block, mean, max or min", str, "NAME"),
    "removal": OptionSpec("RISE / Occlusion / KernelSHAP: how a patch is removed, blend (with the baseline) or token_drop "
                          "(ViTs: the patch's token is left out of the sequence)", str, "HOW"),
    "round_size": OptionSpec("samples per round with --tolerance (default: RISE 100, KernelSHAP and LIME 200, "
                             "SmoothGrad-IG 5, others 10)", int, "N"),
}


@dataclasses.dataclass(frozen=True)
class Method:
    """An attribution method in the common signature, with what front ends need to offer it.

    Attributes:
      name: the table key ("integrated_gradients", ...).
      title: the name in papers and figures ("IG", ...).
      fn: the common-signature adapter.
      source: the function whose keyword-only defaults are the method's options (None: none).
      uses_key: whether the result depends on `key`.
      per_channel: True if maps are (H, W, C) (gradient methods), False if (H, W).
      centred: maps carry a constant offset (RISE: the mean masked score), so figures, positive
        mass and pointing scores use each map minus its mean (`pixel_map`); rankings are
        unaffected by a constant.
      complete: attributions sum to f(x) - f(baseline) up to quadrature error (IG), so front
        ends report the completeness gap.
      count_option: the option that sets how many samples/steps/masks the method draws (its passes
        grow with it): what a time budget scales down (`cost.fit_budget`); None: a fixed count.
      local: the map reads the score's gradient at the explicand only (no path, no noise, no
        perturbation), so a target at its maximum there (`targets.stationary_at_explicand`: the
        label-free cosine target) gets an all-zero map; front ends say so (`zero_map_pairs`).
      summary: one line for help and docs (what it is, when to use it).
      option_specs: help/parsing of options `OPTION_SPECS` does not know (registered methods).
      auto_options: `fn(image_shape) -> {option: value}`, what options left at None resolve to
        for an image shape (RISE's paper grid, Occlusion's window), so records state them.
      passes: `fn(resolved options, image_shape) -> (forward, gradient)`, the encoder passes of
        one explicand (images through the encoder without / with a backward pass); what
        `cocoa_jax.cost` previews and tests/test_cost.py counts.
      model_mode: the encoder mode `f` must be built in (None: the plain encoder): "lrp" for
        AttnLRP, whose gradient x input is relevance only through the LRP rules' backward;
        "relevance" for LRP of the ResNets, whose input gradient itself is relevance; the
        explicand program builds f from `encode_fn.modes[model_mode]` (models that lack the mode
        are refused, naming the method).
      token_access: `fn(options) -> bool`, whether the method with these options reads a ViT's
        tokens (token drop, attention maps): `f` must then be a `token_drop.TokenScorer`, which
        the explicand program builds once from the encoder's `encode_fn.token_access`.
    """

    name: str
    title: str
    fn: Callable
    source: Callable | None
    uses_key: bool
    per_channel: bool
    centred: bool = False
    complete: bool = False
    local: bool = False
    count_option: str | None = None
    summary: str = ""
    option_specs: Mapping[str, OptionSpec] = dataclasses.field(default_factory=dict)
    auto_options: Callable[[tuple], dict] | None = None
    passes: Callable[[Mapping[str, Any], tuple], tuple[int, int]] | None = None
    token_access: Callable[[Mapping[str, Any]], bool] | None = None
    model_mode: str | None = None

    def option_spec(self, option: str) -> OptionSpec:
        if option in self.option_specs:
            return self.option_specs[option]
        if option in OPTION_SPECS:
            return OPTION_SPECS[option]
        default = defaults(self.name).get(option)
        parse = {bool: parse_bool, int: int, float: float, str: str}.get(type(default))
        return OptionSpec(f"{self.title} option `{option}`", parse, option.upper())


def _integrated_gradients(f, x, baseline, key, **options):
    del key  # deterministic
    return attribution.integrated_gradients(f, x, baseline, **options)


def _gradient_shap(f, x, baseline, key, **options):
    # One baseline (the blurred image) is a baseline distribution of one sample.
    return attribution.gradient_shap(f, x, jnp.asarray(baseline)[None], key, **options)


def _rise(f, x, baseline, key, **options):
    return attribution.rise(f, x, baseline, key, **options)


def _smoothgrad(f, x, baseline, key, **options):
    del baseline  # noise around x
    return attribution.smoothgrad(f, x, key, **options)


def _vanilla_gradients(f, x, baseline, key, *, batch_size=None, mesh=None):
    del baseline, key, batch_size, mesh  # one gradient: nothing to batch or shard
    return attribution.vanilla_gradients(f, x)


def _kernel_shap(f, x, baseline, key, **options):
    return attribution.kernel_shap(f, x, baseline, key, **options)


def _lime(f, x, baseline, key, **options):
    return attribution.lime(f, x, baseline, key, **options)


def _occlusion(f, x, baseline, key, **options):
    del key  # deterministic
    return attribution.occlusion(f, x, baseline, **options)


def _rollout(f, x, baseline, key, *, batch_size=None, mesh=None, **options):
    del batch_size, mesh  # one forward pass reading the attention maps
    return attribution.rollout(f, x, baseline, key, **options)


def _attn_lrp(f, x, baseline, key, *, batch_size=None, mesh=None):
    del baseline, key, batch_size, mesh  # one forward and one backward: nothing to batch or shard
    return attribution.attn_lrp(f, x)


def _lrp(f, x, baseline, key, *, batch_size=None, mesh=None):
    del baseline, key, batch_size, mesh  # one forward and one backward: nothing to batch or shard
    return attribution.lrp(f, x)


def _occlusion_window(shape):
    from cocoa_jax.attribution_methods.occlusion import default_window

    return tuple(default_window(shape[:2]))


def _smooth_integrated_gradients(f, x, baseline, key, **options):
    return attribution.smooth_integrated_gradients(f, x, baseline, key, **options)


# Encoder passes of one explicand, `Method.passes`: (forward-only images, images with a gradient).
def _path_points(options, shape):
    from cocoa_jax.attribution_methods.quadrature import quadrature

    return 0, len(quadrature(options["method"], options["n_steps"]).alphas)


def _kernel_shap_passes(options, shape):
    from cocoa_jax.attribution_methods._perturbation import feature_labels
    from cocoa_jax.attribution_methods.kernel_shap import enumerates

    m = feature_labels(shape, options["superpixel"], options["feature_mask"])[1]
    if m == 1:
        return 2, 0  # f(x) and f(baseline) only
    return (2 ** m if enumerates(options["n_samples"], m, options["efficient"]) else options["n_samples"]), 0


def _lime_passes(options, shape):
    return 1 + options["n_samples"], 0  # f(x) centres the scores


def _occlusion_passes(options, shape):
    from cocoa_jax.attribution_methods.occlusion import occlusion_windows

    return 1 + len(occlusion_windows(tuple(shape[:2]), options["window"], options["stride"])), 0


def _smooth_ig_passes(options, shape):
    return 0, options["n_samples"] * _path_points(options, shape)[1]


def _drops_tokens(options) -> bool:
    return options.get("removal") == "token_drop"


METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add `method` to the table; every front end then offers it (`explain --methods NAME`, the
    sweep config, the benchmarks' dispatch, the tests' invariance checks). Returns it.

    A name already in the table is refused unless `replace`.
    """
    if not isinstance(method, Method):
        raise TypeError(f"`method` must be a methods.Method, got {type(method).__name__}")
    if not isinstance(method.name, str) or not method.name.isidentifier():
        raise ValueError(f"`method.name` must be an identifier (it is a config key and a file-name part), "
                         f"got {method.name!r}")
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered (pass replace=True to replace it)")
    if not callable(method.fn):
        raise TypeError(f"`method.fn` of {method.name!r} must be callable")
    METHODS[method.name] = method
    return method


for _method in (
    Method("integrated_gradients", "IG", _integrated_gradients, attribution.integrated_gradients, False, True,
           complete=True, passes=_path_points, count_option="n_steps", summary="path integral of gradients from the blurred baseline; deterministic, complete"),
    Method("gradient_shap", "GradientSHAP", _gradient_shap, attribution.gradient_shap, True, True,
           passes=lambda options, shape: (0, options["n_samples"]), count_option="n_samples",
           summary="expected gradients at noisy random path points (Captum's GradientShap)"),
    Method("rise", "RISE", _rise, attribution.rise, True, False, centred=True,
           auto_options=lambda shape: {"grid_size": tuple(attribution.paper_grid_size(shape))},
           passes=lambda options, shape: (options["n_masks"], 0), token_access=_drops_tokens, count_option="n_masks",
           summary="mean score under random upsampled masks; black-box; add centered=True for fewer masks"),
    Method("smoothgrad", "SmoothGrad", _smoothgrad, attribution.smoothgrad, True, True,
           passes=lambda options, shape: (0, options["n_samples"]), count_option="n_samples",
           summary="gradients averaged over noisy copies of the input"),
    Method("vanilla_gradients", "Gradients", _vanilla_gradients, attribution.vanilla_gradients, False, True,
           passes=lambda options, shape: (0, 1), local=True,
           summary="one input gradient; the cheapest, noisiest map"),
    Method("kernel_shap", "KernelSHAP", _kernel_shap, attribution.kernel_shap, True, False, passes=_kernel_shap_passes,
           token_access=_drops_tokens, count_option="n_samples",
           summary="Shapley values of (super)pixels by weighted regression (Captum's KernelShap); "
                   "efficient=True sums to f(x) - f(baseline)"),
    Method("lime", "LIME", _lime, attribution.lime, True, False, passes=_lime_passes, count_option="n_samples",
           summary="sparse local linear surrogate (Lasso) of (super)pixels; a few salient regions"),
    Method("occlusion", "Occlusion", _occlusion, attribution.occlusion, False, False,
           auto_options=lambda shape: {"window": _occlusion_window(shape), "stride": _occlusion_window(shape)},
           passes=_occlusion_passes, token_access=_drops_tokens,
           summary="score drop when each window is blurred; deterministic, one pass per window"),
    Method("smooth_integrated_gradients", "SmoothGrad-IG", _smooth_integrated_gradients,
           attribution.smooth_integrated_gradients, True, True, passes=_smooth_ig_passes, count_option="n_samples",
           summary="IG averaged over noisy inputs (the official smooth_int_grad)"),
    Method("attn_lrp", "AttnLRP", _attn_lrp, attribution.attn_lrp, False, True, model_mode="lrp",
           passes=lambda options, shape: (0, 1), local=True,
           summary="LRP relevance of a ViT (AttnLRP rules) in one forward and one backward pass; ViT ports only"),
    Method("lrp", "LRP", _lrp, attribution.lrp, False, True, model_mode="relevance",
           passes=lambda options, shape: (0, 1), local=True,
           summary="LRP relevance of a ResNet (zennit's EpsilonPlusFlat: flat first conv, z+ with BatchNorm folded) "
                   "in one forward and one backward pass; the ResNets only (ports and digits)"),
    Method("rollout", "Rollout", _rollout, attribution.rollout, False, False,
           passes=lambda options, shape: (1, 0), token_access=lambda options: True,
           summary="attention rollout (class token over patches, 0.5 A + 0.5 I per block); one forward pass; "
                   "ViT ports only; the same map for every target"),
):
    register(_method)


class _LiveNames(collections.abc.Sequence):
    """Names of the methods in the table, read from it at each use, so methods registered later
    are included."""

    def _names(self):
        return tuple(METHODS)

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    def __contains__(self, name):
        return name in self._names()

    def __getitem__(self, index):
        return self._names()[index]

    def index(self, name, *args):
        return self._names().index(name, *args)

    def __eq__(self, other):
        return self._names() == tuple(other)

    def __hash__(self):
        return hash(self._names())

    def __repr__(self):
        return repr(self._names())


# The table's method names, live (every method explains a target).
ATTRIBUTION_METHODS = _LiveNames()


def pixel_map(name: str, maps, *, centre: bool = True):
    """Maps of method `name` as one value per pixel, as figures and mass-based scores show them:
    (..., H, W, C) per-channel maps -> channel mean (..., H, W); centred methods' maps minus each
    map's mean (`centre=False` keeps the offset). Works on NumPy and JAX arrays."""
    method = get(name)
    maps = maps.mean(axis=-1) if method.per_channel else maps
    if centre and method.centred:
        maps = maps - maps.mean(axis=(-2, -1), keepdims=True)
    return maps


def reads_tokens(name: str, options: Mapping[str, Any]) -> bool:
    """Whether method `name` with `options` needs `f` with token access (`Method.token_access`)."""
    method = get(name)
    return method.token_access is not None and bool(method.token_access(dict(options)))


def get(name: str) -> Method:
    """The method called `name`; an unknown name is a ValueError listing the known ones."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown attribution method {name!r}; expected one of {list(METHODS)}")
    return METHODS[name]


def defaults(name: str) -> dict[str, Any]:
    """The method's options and their defaults, read from its `cocoa_jax.attribution` signature."""
    method = get(name)
    if method.source is None:
        return {}
    out = {}
    for parameter in inspect.signature(method.source).parameters.values():
        if (parameter.kind is parameter.KEYWORD_ONLY and parameter.name not in _EXECUTION_ARGS
                and parameter.name not in _HIDDEN_ARGS):
            out[parameter.name] = parameter.default
    return out


def _type_ok(value, default) -> bool:
    if default is None:
        return True  # None means "decide from the input": any value the method accepts
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str) or not isinstance(value, (int, float, bool, list, tuple, dict))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True


def _type_name(default) -> str:
    if default is None:
        return "any"
    if isinstance(default, (tuple, list)):
        return "list"
    return "number" if isinstance(default, float) else type(default).__name__


def check_options(name: str, options: dict, where: str | None = None) -> dict:
    """Validate `options` for method `name`: every key an option of the method, every value
    of the default's type (values: `check_values`). Returns a copy. `where` names the options
    in messages as a dotted prefix (e.g. "methods.rise" -> `methods.rise.n_masks`)."""
    label = where or f"options of {name!r}"
    if not isinstance(options, dict):
        raise TypeError(f"`{label}` must be a dict of options, got {type(options).__name__}")
    known = defaults(name)
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"`{label}` has unknown option {key!r}; valid options of {name!r}: "
                             f"{sorted(known) or 'none'}")
        if not _type_ok(value, known[key]):
            option = f"{where}.{key}" if where else key
            raise TypeError(f"`{option}` must be of type {_type_name(known[key])} "
                            f"(default {known[key]!r}), got {value!r}")
    return dict(options)


def _dummy_scores(x):
    # Two targets, so the checks of the K-target code path run too.
    return jnp.stack([jnp.sum(x), jnp.mean(x)])


def _dummy_token_scores(shape):
    # 1-px patches (the real patch size is the model's): the checks that need none run.
    from cocoa_jax.attribution_methods import token_drop

    length = 1 + shape[0] * shape[1]
    return token_drop.TokenScorer(lambda x, keep: _dummy_scores(x), lambda x: jnp.ones((1, 1, length, length)), 1)


def check_values(name: str, options: dict, image_shape, *, batch_size: int | None = None,
                 names: str | Mapping[str, str] | None = None) -> dict:
    """Validate the VALUES of `options` for method `name` on (H, W, C) images, before any work.

    The method is traced abstractly (`jax.eval_shape`, a dummy 2-target `f`, nothing computed),
    so every argument check of its `cocoa_jax.attribution` function runs with the real image
    shape: counts, keep_prob, rule and sampler names, grid_size vs the image, antithetic
    with odd counts, batch_size. The function's own ValueError/TypeError is re-raised with the
    option named as the caller knows it: `names` is a prefix ("methods.rise" ->
    `methods.rise.n_masks`) or a dict option -> name ({"n_masks": "--n-masks"}).
    Returns the checked options (a copy). Costs milliseconds (a trace, no compilation).
    """
    options = check_options(name, options, where=names if isinstance(names, str) else None)

    def display(option: str) -> str:
        if isinstance(names, str):
            return f"{names}.{option}"
        if isinstance(names, Mapping) and option in names:
            return names[option]
        return option

    def reraise(err):
        # The attribution checks name the argument first, in backticks: rename it.
        message = re.sub(r"`(\w+)`", lambda m: f"`{display(m.group(1))}`", str(err), count=1)
        raise type(err)(message) from None

    try:
        batch_size = _checks.check_optional_batch_size(batch_size)
    except ValueError as err:
        reraise(err)
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"`image_shape` must be (H, W, C) positive sizes, got {image_shape!r}")
    method = get(name)
    if method.source is None:
        return dict(options)
    image = jax.ShapeDtypeStruct(shape, jnp.float32)

    def trace(x, baseline):
        # batch_size is checked above by the methods' own check and plays no part in the other
        # checks; tracing one batch keeps the cost flat (unrolled chunks would scale with n/batch).
        f = _dummy_token_scores(shape) if reads_tokens(name, options) else _dummy_scores
        return method.fn(f, x, baseline, jax.random.key(0), batch_size=None, **options)

    try:
        jax.eval_shape(trace, image, image)
    except (ValueError, TypeError) as err:
        reraise(err)
    return dict(options)


def resolved_options(name: str, options: dict | None = None, image_shape=None) -> dict[str, Any]:
    """`defaults(name)` updated with `options` (checked): what a run with `options` uses. With
    `image_shape` (H, W, C), options left at None that the method decides from the image
    (`Method.auto_options`) are filled in with what it will use."""
    out = defaults(name)
    out.update(check_options(name, options or {}))
    method = get(name)
    if image_shape is not None and method.auto_options is not None:
        for option, value in method.auto_options(tuple(image_shape)).items():
            if out.get(option) is None:
                out[option] = value
    return out


# Estimator profiles: named option sets applied under a run's explicit options. `paper` is the
# signature defaults bit for bit (no options); `fast` the cheaper estimators that measured at
# least as accurate against high-count references (docs/estimators.md, benchmarks/results/RESULTS_estimators.md):
# centred RISE with 416 masks (1/12 of 5000; Spearman 0.96-0.98 vs the paper's 0.23-0.67 on three
# encoders), IG with 16 Gauss-Legendre steps (Spearman >= 0.999 vs a 64-256-step reference);
# GradientSHAP unchanged (no cheaper option reached its 50-sample quality).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    "fast": {"rise": {"centered": True, "n_masks": 416}, "integrated_gradients": {"n_steps": 16}},
}
DEFAULT_PROFILE = "paper"
# The profile of the image commands (`explain`, `localize`, `augmentations`) when `--estimators` is
# not given: `fast`, because on every encoder measured it ranks pixels at least as well as `paper`
# (RISE far better) at 1/12 of RISE's and 1/3 of IG's passes, and on the digits sweep its AUCs lie
# inside paper's 95% CI or beyond it in the better direction (docs/estimators.md). The API's
# functions and the sweep keep `DEFAULT_PROFILE`, the paper's estimators bit for bit.
COMMAND_PROFILE = "fast"


def profile_options(profile: str, name: str) -> dict[str, Any]:
    """The options estimator profile `profile` sets for method `name` (a copy; {} = the signature
    defaults). Explicit options go on top: `{**profile_options(p, name), **options}`."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown estimator profile {profile!r}; expected one of {list(PROFILES)}")
    get(name)
    return dict(PROFILES[profile].get(name, {}))


def with_profile(profile: str, name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`options` of method `name` over estimator profile `profile` (explicit options win)."""
    return {**profile_options(profile, name), **dict(options or {})}


def zero_map_pairs(method_names, target_names, similarity: str = "cosine") -> list[tuple[str, str]]:
    """(method, target) pairs whose map is all zero by construction: a `local` method (the
    gradient at the explicand only) on a target at its maximum there
    (`targets.stationary_at_explicand`). Front ends print one note for them; nothing is refused."""
    from cocoa_jax import targets

    return [(m, t) for m in method_names if get(m).local
            for t in target_names if targets.stationary_at_explicand(t, similarity)]


def zero_map_note(method_names, target_names, similarity: str = "cosine") -> str | None:
    """One line for `zero_map_pairs`, or None when there are none."""
    pairs = zero_map_pairs(method_names, target_names, similarity)
    if not pairs:
        return None
    shown = ", ".join(sorted({get(m).title for m, _ in pairs}))
    names = ", ".join(sorted({t for _, t in pairs}))
    return (f"all-zero maps for {shown} on the {names} target: with cosine similarity its score, the cosine "
            f"of f(x) with f(x), is at its maximum at the explicand, where {shown} reads the gradient "
            f"(use IG, GradientSHAP or RISE for it; docs/methods.md)")


def attribute(name: str, f: Callable, x, baseline, key, *, batch_size: int | None = None,
              mesh: jax.sharding.Mesh | None = None, **options):
    """Run method `name` in the common signature (see the module docstring)."""
    method = get(name)
    hidden = {option: value for option, value in options.items() if option in _HIDDEN_ARGS}
    check_options(name, {option: value for option, value in options.items() if option not in hidden})
    for option in hidden:
        # Hidden options change the return type; only methods whose function has them take them.
        if method.source is None or option not in inspect.signature(method.source).parameters:
            raise ValueError(f"`{option}` is not an option of method {name!r}")
    return method.fn(f, x, baseline, key, batch_size=batch_size, mesh=mesh, **options)


# Options added after runs were stored, and the value that leaves a run as it was: left out of a
# run's identity (the sweep's run hash) at that value, so earlier runs keep their hash.
OFF_VALUES: dict[str, Any] = {"tolerance": None, "round_size": None, "removal": "blend"}


def identity_options(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """Resolved options without those at their `OFF_VALUES` value (what a run hash covers)."""
    return {k: v for k, v in resolved.items() if not (k in OFF_VALUES and v == OFF_VALUES[k])}


def reports_passes(name: str) -> bool:
    """Whether method `name` takes `return_passes=True` (then it returns (maps, passes used ()
    int32): its sampling can stop early, `attribution_methods.adaptive`)."""
    method = get(name)
    return method.source is not None and "return_passes" in inspect.signature(method.source).parameters


def stream_id(name: str) -> int:
    """A stable 31-bit id of a method name for PRNG streams (`jax.random.fold_in`).

    A hash of the name, not a list position: adding or reordering methods never changes
    another method's random draws, so resumed sweeps stay consistent.
    """
    return int.from_bytes(hashlib.sha256(f"cocoa-jax/method/{name}".encode()).digest()[:4], "big") >> 1
