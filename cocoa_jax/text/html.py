"""The HTML page of token attributions: one row per sentence x target x method, each token's background
coloured by its score on the row's own scale (red positive, blue negative, white 0; the scale, +-max |score|
of the row, printed at the row's end). Every text (tokens, titles) is HTML-escaped."""
from __future__ import annotations

import html

import numpy as np

from cocoa_jax import files, methods
from cocoa_jax.targets import TARGET_TITLES

__all__ = ["token_colour", "token_page", "write_token_page"]


def token_colour(value: float, scale: float) -> tuple[int, int, int]:
    """RGB of a score on a row scale: (255, 255(1-a), 255(1-a)) for a >= 0, (255(1-a), 255(1-a), 255) below."""
    a = 0.0 if scale <= 0 else float(np.clip(abs(value) / scale, 0.0, 1.0))
    fade = int(round(255 * (1.0 - a)))
    return (255, fade, fade) if value >= 0 else (fade, fade, 255)


def _row(label: str, tokens, scores) -> str:
    scores = np.asarray(scores, np.float64)
    scale = float(np.abs(scores).max()) if scores.size else 0.0
    cells = "".join(
        f'<span class="tok" style="background:rgb{token_colour(s, scale)}" title="{s:+.4g}">{html.escape(t)}</span>'
        for t, s in zip(tokens, scores))
    return (f'<tr><th>{html.escape(label)}</th><td>{cells}</td>'
            f'<td class="scale">scale &plusmn;{scale:.3g}</td></tr>')


def token_page(explanation, title: str = "Token attributions") -> str:
    """The page of a `TextExplanation` (or any object with its `tokens`, `scores_by_method`,
    `target_names` and `method_names`), as one HTML string."""
    rows = []
    for i, tokens in enumerate(explanation.tokens):
        for k, target in enumerate(explanation.target_names):
            for method in explanation.method_names:
                title = methods.METHODS[method].title if method in methods.METHODS else method
                label = f"sentence {i + 1} / {TARGET_TITLES.get(target, target)} / {title}"
                rows.append(_row(label, tokens, explanation.scores_by_method[method][i][k]))
    style = ("body{font-family:sans-serif} th{text-align:left;padding-right:1em;font-weight:normal}"
             ".tok{display:inline-block;padding:4px 6px;margin:1px;font-size:20px} .scale{padding-left:1em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Red: the token raises the target; blue: lowers it; each row on its own scale.</p>"
            f"<table>{''.join(rows)}</table></body></html>")


def write_token_page(path: str, explanation, title: str = "Token attributions") -> None:
    """`token_page` written atomically to `path`."""
    files.atomic_write_text(path, token_page(explanation, title))
