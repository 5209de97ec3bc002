"""The evaluation-metric vocabulary: one table of `Metric` records that every front end reads.

`evaluate` (the API), `cocoa-jax evaluate`, the sweep's `metrics: [...]` columns, docs/metrics.md
and the tests take metric names, titles, directions, capability flags and option defaults from
`METRICS`. Adding a metric is its function (one file per family in `cocoa_jax/evaluation/`), one
`register(Metric(...))` entry, and its tests against Quantus or an independent float64 statement.

The contract of a metric function (read by every metric file):

    metric.fn(ctx, x, maps, key, **options) -> (K,) float scores of ONE explicand

      ctx:  a `Context` (below) for this explicand: its K targets, baseline, optional mask,
            the encoder and what the capability flags asked for.
      x:    (H, W, C) the explicand, pixels as the encoder takes them.
      maps: (M, H, W) or (M, H, W, C), M = K (map k scored against target k) or M = 1 (ONE map
            scored against every target: `evaluate` passes M = 1 when it is given one map per
            explicand or K identical maps, so that a perturbed input built from the map is
            encoded once for the K targets). `pixel_scores(maps)` gives the (M, H, W) channel
            mean the ranking metrics read. A function written for (K, ...) maps serves M = 1 by
            broadcasting; it may return (1,) when its score reads only the map (complexity,
            localisation), `evaluate` broadcasts that to (K,).
      key:  a PRNG key for this explicand (`evaluate` folds the explicand's index into the
            caller's key, so scores do not depend on batch size or device count); metrics with
            `uses_key=False` ignore it.
      options: the record's `options` defaults, overridden by the caller's.

    The function is pure JAX: `evaluate` vmaps it over explicands and jits it. It must not
    branch on traced values in Python; options are static Python values.

`Context` (a pytree: `target`, `baseline`, `mask`, `segments`, `alternative_target` are
per-explicand data vmapped with the explicand; `params` and `randomized_params` are shared data;
the callables, `batch_size` and `num_segments` are static):

    ctx.encode(images (B, H, W, C), params=None) -> (B, D)   encode_fn(params or ctx.params, images)
    ctx.score(images (B, H, W, C), params=None) -> (B, K)    the K target values, ONE encoder pass
    ctx.score_many(images (P, H, W, C)) -> (P, K)            the same in chunks of `ctx.batch_size`
    ctx.target          a stacked `targets.Target` of K targets (ctx.num_targets = K)
    ctx.baseline        (H, W, C) the image removed pixels take (the blurred explicand by default)
    ctx.mask            (H, W) float {0, 1} localisation mask, or None          (`needs_mask`)
    ctx.segments        (H, W) int32 superpixel ids in [0, ctx.num_segments), or None (`needs_segments`;
                        None: the metric falls back on its own regular grid)
    ctx.explain(x, key, params=None) -> (K, H, W[, C])  the explainer's maps of x for the same K
                        targets under `params` (default ctx.params)             (`needs_explainer`);
                        the explainer is `explainer(encode, target, x, baseline, key)`, e.g.
                        `evaluation.method_explainer("integrated_gradients", n_steps=16)` (any method
                        of `cocoa_jax.methods`)
    ctx.randomized_params  tuple of parameter pytrees of randomised models for `ctx.encode_fn`, e.g.
                        a cascade (`needs_randomized_model`)
    ctx.alternative_target  a stacked Target of K other targets of the same kind, or None
                        (`needs_alternative_target`, for random logit)

A metric whose flags ask for something the caller did not give is refused by `evaluate` before
any work, with an error naming the missing argument.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from cocoa_jax import batching
from cocoa_jax.targets import Target

DIRECTIONS = ("higher", "lower")
ARROWS = {"higher": "↑", "lower": "↓"}
FAMILIES = ("faithfulness", "robustness", "complexity", "randomisation", "localisation")


@dataclasses.dataclass(frozen=True)
class Metric:
    """One evaluation metric of attribution maps.

    Attributes:
      name: the table key, a config key and a column name ("road_morf", ...).
      title: its name in tables and papers ("ROAD (MoRF)").
      family: one of `FAMILIES`.
      direction: "higher" or "lower": which score means a better map.
      fn: `fn(ctx, x, maps, key, **options) -> (K,)` (module docstring).
      summary: one line: what it asks.
      reference: the paper (authors, venue, year).
      quantus: the Quantus 0.6 class it corresponds to ("quantus.ROAD"), or "" if none.
      options: option defaults (static Python values); the caller overrides them by name.
      uses_key: the score depends on `key` (random perturbations).
      needs_explainer: the metric calls `ctx.explain` (sensitivity, MPRT).
      needs_mask: the metric reads `ctx.mask` (localisation).
      needs_randomized_model: the metric reads `ctx.randomized_params` (MPRT).
      needs_alternative_target: the metric reads `ctx.alternative_target` (random logit).
      needs_segments: the metric reads `ctx.segments` when given (IROF).
      reads_model: the metric calls the encoder or the explainer (False: a score of the maps alone,
        complexity and localisation; `evaluate` then runs such metrics without the model's
        parameters, every explicand in one program call).
    """

    name: str
    title: str
    family: str
    direction: str
    fn: Callable
    summary: str = ""
    reference: str = ""
    quantus: str = ""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    uses_key: bool = False
    needs_explainer: bool = False
    needs_mask: bool = False
    needs_randomized_model: bool = False
    needs_alternative_target: bool = False
    needs_segments: bool = False
    reads_model: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"`name` must be an identifier (a config key and a column name), got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Metric {self.name!r}: `direction` must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"Metric {self.name!r}: `family` must be one of {FAMILIES}, got {self.family!r}")
        if not callable(self.fn):
            raise TypeError(f"Metric {self.name!r}: `fn` must be callable")

    @property
    def arrow(self) -> str:
        """"↑" (higher is better) or "↓" (lower is better)."""
        return ARROWS[self.direction]

    def resolved_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The record's defaults overridden by `options`; an unknown option is refused by name."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"metric {self.name!r} has no option {unknown}; its options are "
                             f"{sorted(self.options) or 'none'}")
        return {**self.options, **options}


METRICS: dict[str, Metric] = {}


def register(metric: Metric, *, replace: bool = False) -> Metric:
    """Add `metric` to the table; `evaluate`, `cocoa-jax evaluate --metrics NAME` and the sweep's
    `metrics:` then offer it. A name already in the table is refused unless `replace`."""
    if not isinstance(metric, Metric):
        raise TypeError(f"`metric` must be an evaluation.Metric, got {type(metric).__name__}")
    if metric.name in METRICS and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered (pass replace=True to replace it)")
    METRICS[metric.name] = metric
    return metric


def get(name: str) -> Metric:
    """The record of metric `name`; an unknown name is refused with the known ones."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {sorted(METRICS)}")
    return METRICS[name]


def pixel_scores(maps: jax.Array) -> jax.Array:
    """(K, H, W) or (K, H, W, C) maps -> (K, H, W): the channel mean (what ranking metrics read)."""
    return jnp.mean(maps, axis=-1) if maps.ndim == 4 else maps


@dataclasses.dataclass(frozen=True)
class Context:
    """What a metric function reads about one explicand (module docstring). A pytree."""

    target: Target
    baseline: jax.Array
    params: Any = ()
    mask: jax.Array | None = None
    segments: jax.Array | None = None
    alternative_target: Target | None = None
    randomized_params: tuple = ()
    encode_fn: Callable = dataclasses.field(default=None, metadata=dict(static=True))
    explainer: Callable | None = dataclasses.field(default=None, metadata=dict(static=True))
    batch_size: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    num_segments: int | None = dataclasses.field(default=None, metadata=dict(static=True))

    @property
    def num_targets(self) -> int:
        return len(self.target.normalize)

    def encode(self, images: jax.Array, params: Any = None) -> jax.Array:
        """(B, H, W, C) -> (B, D) under `params` (default: the model's own)."""
        return self.encode_fn(self.params if params is None else params, images)

    def score(self, images: jax.Array, params: Any = None) -> jax.Array:
        """(B, H, W, C) -> (B, K): one encoder pass, K target values."""
        return self.target(self.encode(images, params))

    def score_many(self, images: jax.Array) -> jax.Array:
        """(P, H, W, C) -> (P, K), `batch_size` images per encoder call (rolled `lax.map`)."""
        return batching.map_in_batches(self.score, images, self.batch_size)

    def explain(self, x: jax.Array, key: jax.Array, params: Any = None) -> jax.Array:
        """The explainer's (K, H, W[, C]) maps of x for the K targets under `params` (default ctx.params)."""
        if self.explainer is None:
            raise ValueError("this metric needs an explainer: pass `explainer=` to evaluate")
        params = self.params if params is None else params
        return self.explainer(lambda images: self.encode_fn(params, images), self.target, x, self.baseline, key)


jax.tree_util.register_dataclass(
    Context, data_fields=["target", "baseline", "params", "mask", "segments", "alternative_target",
                          "randomized_params"],
    meta_fields=["encode_fn", "explainer", "batch_size", "num_segments"])


__all__ = ["ARROWS", "Context", "DIRECTIONS", "FAMILIES", "METRICS", "Metric", "get", "pixel_scores", "register"]
