"""Attribution figures (matplotlib, no pyplot state: safe in scripts, tests and servers)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def to_heatmap(attribution: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) attribution -> (H, W) map for display (channels summed)."""
    a = np.asarray(attribution, np.float64)
    if a.ndim == 3:
        a = a.sum(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"attribution must have shape (H, W) or (H, W, C), got {a.shape}")
    return a


def overlay(ax, image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.6, centre: bool = False):
    """Draw a greyscale image with a signed heatmap on top (red > 0, blue < 0).

    image: (H, W) or (H, W, 1|3) in [0, 1]; heatmap: (H, W). The colour scale is symmetric
    around 0, scaled to this heatmap's largest |value|. centre=True subtracts the spatial mean
    first (for RISE, whose maps carry a constant offset, the mean score).
    """
    img = np.asarray(image, np.float64)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    h = np.asarray(heatmap, np.float64)
    if centre:
        h = h - h.mean()
    scale = float(np.max(np.abs(h))) if h.size else 0.0
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.imshow(h, cmap="bwr", vmin=-scale, vmax=scale, alpha=alpha, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def attribution_grid(path: str, explicands: np.ndarray, rows: Sequence[tuple[str, np.ndarray, bool]],
                     *, column_titles: Sequence[str] | None = None, title: str | None = None,
                     dpi: int = 100) -> str:
    """Write a PNG: first row the explicands, then one row per (label, maps, centre).

    explicands: (N, H, W[, C]) in [0, 1]. Each row's maps: (N, H, W) or (N, H, W, C).
    Returns `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    explicands = np.asarray(explicands)
    n = explicands.shape[0]
    n_rows = 1 + len(rows)
    fig = Figure(figsize=(1.5 * n + 1.6, 1.5 * n_rows + (0.4 if title else 0.0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n, squeeze=False)
    for j in range(n):
        ax = axes[0, j]
        img = explicands[j]
        ax.imshow(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img, cmap="gray",
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if column_titles is not None:
            ax.set_title(column_titles[j], fontsize=8)
    axes[0, 0].set_ylabel("explicand", fontsize=8)
    for i, (label, maps, centre) in enumerate(rows, start=1):
        maps = np.asarray(maps)
        if maps.shape[0] != n:
            raise ValueError(f"row {label!r} has {maps.shape[0]} maps for {n} explicands")
        for j in range(n):
            overlay(axes[i, j], explicands[j], to_heatmap(maps[j]), centre=centre)
        axes[i, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    # Leave room at the top for the suptitle above the column titles.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if title else None)
    fig.savefig(path, dpi=dpi)
    return path
