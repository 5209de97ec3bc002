"""Scoring attribution maps from anywhere: the metric table and `evaluate`.

    from cocoa_jax import evaluation
    scores = evaluation.evaluate(encode, images, maps, target=target, metrics=("deletion", "road_morf"),
                                 key=jax.random.key(0))   # {metric: (N, K)}

`table` holds the `Metric` records (`METRICS`, `register`) and the contract every metric function
follows (its docstring); one module per family registers its metrics on import.
"""
from cocoa_jax.evaluation.table import (ARROWS, DIRECTIONS, FAMILIES, METRICS, Context, Metric, get, pixel_scores,
                                        register)


__all__ = ["ARROWS", "Context", "DIRECTIONS", "FAMILIES", "METRICS", "Metric", "get", "pixel_scores", "register"]
