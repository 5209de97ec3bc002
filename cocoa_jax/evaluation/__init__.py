"""Scoring attribution maps from anywhere: the metric table and `evaluate`.

    from cocoa_jax import evaluation
    scores = evaluation.evaluate(model, images, maps, metrics=("deletion", "road_morf"),
                                 corpus=corpus, foil=foil, key=jax.random.key(0))   # {metric: (N, K)}

`table` holds the `Metric` records (`METRICS`, `register`) and the contract every metric function
follows (its docstring); one module per family registers its metrics on import; docs/metrics.md
says what each metric asks, its formula, reference and direction.
"""
from cocoa_jax.evaluation.table import (ARROWS, DIRECTIONS, FAMILIES, METRICS, Context, Metric, get, pixel_scores,
                                        register)
# Each family module registers its metrics when imported: the table is complete once this package is.
from cocoa_jax.evaluation import faithfulness  # noqa: E402,F401
from cocoa_jax.evaluation import complexity, localisation, randomisation, robustness  # noqa: E402,F401

# `evaluate` and its helpers run models (meshes, the pipeline): loaded on first use, so reading the
# table (the sweep's config checks, report) does not import the device layer.
_RUNNERS = ("BASELINES", "check_metrics", "evaluate", "explicand_keys", "maps_with_target_axis", "method_explainer")


def __getattr__(name):
    if name in _RUNNERS:
        import importlib

        module = importlib.import_module("cocoa_jax.evaluation.scoring")
        globals().update({n: getattr(module, n) for n in _RUNNERS})
        return globals()[name]
    raise AttributeError(f"module 'cocoa_jax.evaluation' has no attribute {name!r}")

__all__ = ["ARROWS", "BASELINES", "Context", "DIRECTIONS", "FAMILIES", "METRICS", "Metric", "check_metrics",
           "complexity", "evaluate", "explicand_keys", "faithfulness", "get", "localisation",
           "maps_with_target_axis", "method_explainer", "pixel_scores", "randomisation", "register", "robustness"]
