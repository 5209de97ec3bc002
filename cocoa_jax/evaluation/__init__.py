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
from cocoa_jax.evaluation.evaluate import (BASELINES, check_metrics, evaluate, explicand_keys,  # noqa: E402
                                           maps_with_target_axis, method_explainer)

__all__ = ["ARROWS", "BASELINES", "Context", "DIRECTIONS", "FAMILIES", "METRICS", "Metric", "check_metrics",
           "complexity", "evaluate", "explicand_keys", "faithfulness", "get", "localisation",
           "maps_with_target_axis", "method_explainer", "pixel_scores", "randomisation", "register", "robustness"]
