"""The attribution-method vocabulary: one table, name -> method with one common signature.

Every front end (the sweep, `cocoa-jax explain`, the benchmarks) dispatches through
`METHODS` / `attribute`, so a method's name, its title and its defaults exist once. Defaults
live only in the signatures of `cocoa_jax.attribution`; `defaults(name)` reads them from there.

The common signature:

    method.fn(f, x, baseline, key, *, batch_size=None, mesh=None, **options)
        f: one input (H, W, C) -> scalar or (K,);  x, baseline: (H, W, C);  key: a PRNG key
        (ignored by deterministic methods) -> (H, W, C) or (H, W) maps, with a leading K axis
        when f returns (K,).

`random` is the evaluation's random-attribution benchmark (U[0, 1) per pixel, the same map for
every target); it never calls f.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from cocoa_jax import attribution, metrics

# Keyword arguments of the common signature that are not method options.
_EXECUTION_ARGS = ("batch_size", "mesh")
# Options a caller of `attribute` never sets: they change the return type.
_HIDDEN_ARGS = ("return_delta",)


@dataclasses.dataclass(frozen=True)
class Method:
    """An attribution method in the common signature.

    Attributes:
      name: the table key ("integrated_gradients", ...).
      title: the name in papers and figures ("IG", ...).
      fn: the common-signature adapter.
      source: the `cocoa_jax.attribution` function whose keyword defaults are the method's.
      uses_key: whether the result depends on `key`.
      per_channel: True if maps are (H, W, C) (gradient methods), False if (H, W).
    """

    name: str
    title: str
    fn: Callable
    source: Callable | None
    uses_key: bool
    per_channel: bool


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


def _random(f, x, baseline, key, *, batch_size=None, mesh=None):
    del f, baseline, batch_size, mesh
    return metrics.random_attribution(key, jnp.shape(x))


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("integrated_gradients", "IG", _integrated_gradients, attribution.integrated_gradients, False, True),
    Method("gradient_shap", "GradientSHAP", _gradient_shap, attribution.gradient_shap, True, True),
    Method("rise", "RISE", _rise, attribution.rise, True, False),
    Method("smoothgrad", "SmoothGrad", _smoothgrad, attribution.smoothgrad, True, True),
    Method("vanilla_gradients", "Gradients", _vanilla_gradients, attribution.vanilla_gradients, False, True),
    Method("random", "Random", _random, None, True, False),
)}
RANDOM = "random"
# Methods that explain a target (everything but the random benchmark).
ATTRIBUTION_METHODS = tuple(name for name in METHODS if name != RANDOM)


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
        batch_size = attribution._checks.check_optional_batch_size(batch_size)
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
        return method.fn(_dummy_scores, x, baseline, jax.random.key(0), batch_size=None, **options)

    try:
        jax.eval_shape(trace, image, image)
    except (ValueError, TypeError) as err:
        reraise(err)
    return dict(options)


def resolved_options(name: str, options: dict | None = None) -> dict[str, Any]:
    """`defaults(name)` updated with `options` (checked): what a run with `options` uses."""
    out = defaults(name)
    out.update(check_options(name, options or {}))
    return out


def attribute(name: str, f: Callable, x, baseline, key, *, batch_size: int | None = None,
              mesh: jax.sharding.Mesh | None = None, **options):
    """Run method `name` in the common signature (see the module docstring)."""
    method = get(name)
    check_options(name, options)
    return method.fn(f, x, baseline, key, batch_size=batch_size, mesh=mesh, **options)


def stream_id(name: str) -> int:
    """A stable 31-bit id of a method name for PRNG streams (`jax.random.fold_in`).

    A hash of the name, not a list position: adding or reordering methods never changes
    another method's random draws, so resumed sweeps stay consistent.
    """
    return int.from_bytes(hashlib.sha256(f"cocoa-jax/method/{name}".encode()).digest()[:4], "big") >> 1
