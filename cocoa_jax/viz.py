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


LEGEND = ("red: supports the target (positive attribution); blue: opposes it. Each panel has its own "
          "colour scale, symmetric around 0 up to that panel's largest |value|; gradient maps are summed "
          "over channels.")
CENTRED_NOTE = ("Rows marked (mean-subtracted) show the map minus its spatial mean (RISE maps carry the "
                "mean score as a constant offset).")


def attribution_grid(path: str, explicands: np.ndarray, rows: Sequence[tuple[str, np.ndarray, bool]],
                     *, column_titles: Sequence[str] | None = None, title: str | None = None,
                     legend: str | None = LEGEND, dpi: int = 100) -> str:
    """Write a PNG: first row the explicands, then one row per (label, maps, centre).

    explicands: (N, H, W[, C]) in [0, 1]. Each row's maps: (N, H, W) or (N, H, W, C).
    centre=True rows are drawn mean-subtracted and labelled so. Below the grid: a colour bar
    (blue = opposes, red = supports the target, per-panel scale) and `legend` (None: neither).
    Returns `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    explicands = np.asarray(explicands)
    n = explicands.shape[0]
    n_rows = 1 + len(rows)
    legend_height = 0.0
    if legend is not None:
        if any(centre for _, _, centre in rows):
            legend = f"{legend} {CENTRED_NOTE}"
        legend_height = 1.4  # inches: colour bar, its two-line tick labels, the wrapped text
    width = max(1.5 * n + 1.6, 4.5) if legend is not None else 1.5 * n + 1.6
    fig = Figure(figsize=(width, 1.5 * n_rows + (0.4 if title else 0.0) + legend_height))
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
        axes[i, 0].set_ylabel(f"{label}\n(mean-subtracted)" if centre else label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    height = fig.get_figheight()
    bottom = legend_height / height
    # Leave room at the top for the suptitle above the column titles, and below for the legend.
    fig.tight_layout(rect=(0, bottom, 1, 1 - (0.35 / height if title else 0.0)))
    if legend is not None:
        _draw_legend(fig, legend, legend_height / height)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _draw_legend(fig, text: str, height: float) -> None:
    """A blue-white-red colour bar (opposes / 0 / supports) and `text`, in the bottom `height`."""
    import textwrap

    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.add_axes((0.2, height * 0.8, 0.6, height * 0.08))
    colorbar = fig.colorbar(ScalarMappable(Normalize(-1.0, 1.0), cmap="bwr"), cax=bar, orientation="horizontal")
    colorbar.set_ticks([-1.0, 0.0, 1.0])
    colorbar.set_ticklabels(["-max |value|\nopposes target", "0", "+max |value|\nsupports target"], fontsize=6)
    chars = max(int(fig.get_figwidth() * 14), 40)
    fig.text(0.5, height * 0.02, textwrap.fill(text, chars), ha="center", va="bottom", fontsize=5.5)
