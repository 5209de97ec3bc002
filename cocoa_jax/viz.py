"""Attribution figures: the one place cocoa-jax draws (matplotlib, Agg canvas, no pyplot).

`plot_attributions(images, attributions, ...)` is the public entry point: a grid with the
images in the top row (one column per image) and one row of overlays per attribution map
(a target, a method, ...), every panel coloured on a SHARED scale (per row by default, or one
for the whole figure) with numbered colour bars aligned to the rows, and a note under the grid
saying what the colours and the scale mean. The scale's end is a percentile of |value| (99 by
default: a few extreme pixels saturate instead of blanking the rest); display modes in the
manner of Captum's `visualize_image_attr`: sign (all, positive, negative, absolute), overlay,
heat map, masked image, top mass; `panels_dir` / `save_panels` write one PNG per panel. It returns the
`matplotlib.figure.Figure`; with `path=` it also writes a PNG atomically.
`plot_attribution_blocks` stacks several such grids in one figure (the `augmentations`
command: one block per original image). `save_figure` writes any figure atomically.
The sweep report's figures are drawn here too: `plot_insertion_deletion` (curves.png),
`plot_size_sensitivity` and `plot_cascade` (its studies; `cocoa_jax.sweep.studies` gives the data).
`plot_metric_scores` draws `cocoa-jax evaluate`'s scores.png (`commands.evaluate.figure_panels`).

Nothing here touches `matplotlib.pyplot`: figures are `Figure` objects on their own Agg
canvas, so the module is safe in scripts, tests, notebooks (display the returned figure) and
servers, and never changes the global backend or leaks open figures.

Axes of a returned figure carry labels (`ax.get_label()`) so they can be found again:
"image {b} {j}" (block b's image j), "map {r} {j}" (map row r, counted over the whole figure,
image j), "colorbar {r}" (the colour bar of map row r; with scale="figure" one per block,
labelled by its block's first map row). The overlay of a map panel is the AxesImage labelled
"attribution"; its `get_array()` is exactly the plotted map and its `norm` the colour scale.
"""
from __future__ import annotations

import os
import textwrap
from typing import NamedTuple, Sequence

import numpy as np

SCALES = ("row", "figure", "panel")
DEFAULT_CMAP = "bwr"
# Display modes (the semantics of Captum's `visualize_image_attr`, written for shared row scales):
SIGNS = ("all", "positive", "negative", "absolute")      # which part of the map is shown
MODES = ("overlay", "heat_map", "masked", "top_mass")    # how it is drawn
SIGN_CMAPS = {"all": DEFAULT_CMAP, "positive": "Reds", "negative": "Blues", "absolute": "Purples"}
# The colour scale's end m is this percentile of |shown value| over the maps sharing the scale:
# on 224-px photos a few pixels of IG / GradientSHAP carry 6-10x the 99th percentile and would
# otherwise wash every other pixel out to white. Larger values saturate at the scale's end.
DEFAULT_CLIP = 99.0
DEFAULT_TOP_MASS = 0.2
_DIM = 0.15  # brightness of the pixels top_mass leaves out
FONT = 9          # titles and row labels (pt)
SMALL = 8         # colour-bar numbers and the note (pt)
TITLE_FONT = 10.5

# Layout, in inches.
_GAP = 0.07          # between panels
_BAR_GAP = 0.1       # between the last column and a colour bar
_BAR_WIDTH = 0.13
_BAR_LABELS = 0.62   # room for the colour bars' numbers
_MIN_WIDTH = 6.0
_CHARS_PER_INCH = {SMALL: 15.5, FONT: 13.5, TITLE_FONT: 11.5}  # safe wrap widths


class Block(NamedTuple):
    """One grid of `plot_attribution_blocks`: images (N, H, W, C) or None, maps as in
    `plot_attributions`, and that block's labels."""
    images: object
    attributions: object
    method: object = None
    centre: object = None
    titles: Sequence[str] | None = None
    row_titles: Sequence[str] | None = None
    image_label: str | None = "image"


# ---------------------------------------------------------------------------------------------
# Input checks and map preparation

def _images(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (N, H, W, C) with C = 1 or 3, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf")
    return x


def _split_rows(attributions, n: int, hw: tuple[int, int] | None, channels: int | None) -> list[np.ndarray]:
    """attributions -> list of rows, each (N, H, W) or (N, H, W, C) (channel axis kept)."""
    if isinstance(attributions, (list, tuple)):
        if not attributions:
            raise ValueError("attributions is an empty sequence; give at least one row of maps")
        rows = []
        for r, a in enumerate(attributions):
            a = np.asarray(a, dtype=np.float64)
            if a.ndim not in (3, 4):
                raise ValueError(f"attributions[{r}] must have shape (N, H, W) or (N, H, W, C), got {a.shape}")
            rows.append(a)
    else:
        a = np.asarray(attributions, dtype=np.float64)
        if a.ndim == 3:
            rows = [a]
        elif a.ndim == 4:
            per_channel = hw is not None and a.shape[1:3] == hw and a.shape[3] in (1, channels)
            stacked = hw is not None and a.shape[2:4] == hw
            if hw is None:  # no images: (N, H, W, C) cannot be told from (N, K, H, W)
                raise ValueError(f"attributions of shape {a.shape} is ambiguous without images; pass a list of "
                                 f"(N, H, W[, C]) rows or a 5-d (N, K, H, W, C) array")
            if per_channel and stacked:
                raise ValueError(f"attributions of shape {a.shape} is ambiguous for images of size {hw} "
                                 f"((N, H, W, C) or (N, K, H, W)); pass a list of rows instead")
            if not (per_channel or stacked):
                raise ValueError(f"attributions of shape {a.shape} matches neither (N, H, W, C) nor (N, K, H, W) "
                                 f"for images of size {hw[0]}x{hw[1]} with {channels} channel(s)")
            rows = [a] if per_channel else [a[:, k] for k in range(a.shape[1])]
        elif a.ndim == 5:
            rows = [a[:, k] for k in range(a.shape[1])]
        else:
            raise ValueError("attributions must have shape (N, H, W), (N, H, W, C), (N, K, H, W) or "
                             f"(N, K, H, W, C), got {a.shape}")
    for r, a in enumerate(rows):
        if a.shape[0] != n:
            raise ValueError(f"attributions row {r} has {a.shape[0]} maps for {n} images")
        if hw is not None and a.shape[1:3] != hw:
            raise ValueError(f"attributions row {r} has maps of size {a.shape[1]}x{a.shape[2]}, "
                             f"the images are {hw[0]}x{hw[1]}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"attributions row {r} contains NaN or inf")
    return rows


def _per_row(value, n_rows: int, name: str) -> list:
    if value is None or isinstance(value, (str, bool, np.bool_)):
        return [value] * n_rows
    value = list(value)
    if len(value) != n_rows:
        raise ValueError(f"{name} has {len(value)} entries for {n_rows} rows of maps")
    return value


def prepare_maps(rows: list[np.ndarray], method=None, centre=None) -> tuple[list[np.ndarray], list[bool]]:
    """Rows of maps -> (rows of (N, H, W) maps as shown, whether each row was mean-subtracted).

    Per-channel maps are reduced by their channel mean. A row is centred (each map minus its
    own mean) when `centre` says so, else when its method's `centred` flag is set
    (`cocoa_jax.methods.pixel_map`, e.g. RISE, whose maps carry the mean score as an offset).
    """
    from cocoa_jax import methods as methods_mod

    names = _per_row(method, len(rows), "method")
    centres = _per_row(centre, len(rows), "centre")
    shown, centred = [], []
    for a, name, c in zip(rows, names, centres):
        if a.ndim == 4:
            a = a.mean(axis=-1)
        if name is not None:
            m = methods_mod.get(name)  # ValueError listing the known methods
            if c is None:
                a = methods_mod.pixel_map(name, a[..., None] if m.per_channel else a)
                c = bool(m.centred)
            elif c:
                a = a - a.mean(axis=(-2, -1), keepdims=True)
        elif c:
            a = a - a.mean(axis=(-2, -1), keepdims=True)
        shown.append(np.asarray(a, dtype=np.float64))
        centred.append(bool(c))
    return shown, centred


def _aspect(shown: list[np.ndarray]) -> float:
    """Height / width of the maps (so each panel is exactly its image), within [0.25, 4]."""
    h, w = shown[0].shape[-2:]
    return float(np.clip(h / w, 0.25, 4.0))


def _limit(values) -> float:
    v = float(np.max(np.abs(values))) if np.size(values) else 0.0
    return v if np.isfinite(v) and v > 0 else 1.0


def signed_values(maps, sign: str = "all") -> np.ndarray:
    """The values a `sign` mode shows, float64: "all" the map a; "positive" max(a, 0); "negative"
    the size of its negative part, max(-a, 0) (drawn in blue, labelled with negative numbers);
    "absolute" |a|. Every mode but "all" gives values >= 0."""
    _check_choice("sign", sign, SIGNS)
    a = np.asarray(maps, dtype=np.float64)
    return {"all": lambda: a, "positive": lambda: np.maximum(a, 0.0), "negative": lambda: np.maximum(-a, 0.0),
            "absolute": lambda: np.abs(a)}[sign]()


def display_limit(values, clip: float | None = DEFAULT_CLIP) -> float:
    """The end m of a colour scale shared by `values` (every map that shares it): the `clip`-th
    percentile (numpy's linear interpolation) of the NONZERO |values|, so the few largest values
    saturate instead of setting the scale; clip=None or 100: the largest |value|. Exact zeros
    carry no attribution and are left out: the positive part of a map (half zeros) or a sparse
    map keeps the scale of the values it has. An all-zero map gets 1."""
    if clip is not None:
        clip = float(clip)
        if not 0.0 < clip <= 100.0:
            raise ValueError(f"clip must be a percentile in (0, 100] or None, got {clip}")
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    nonzero = magnitude[magnitude > 0]
    if clip is not None and clip < 100.0 and nonzero.size:
        m = float(np.percentile(nonzero, clip))
        if np.isfinite(m) and m > 0:
            return m
    return _limit(magnitude)


def normalised_values(values, m: float, sign: str = "all") -> np.ndarray:
    """`signed_values` on the colour scale, clipped: sign "all" values / m in [-1, 1], the other
    signs in [0, 1] (1 = at or beyond the scale's end m)."""
    _check_choice("sign", sign, SIGNS)
    low = -1.0 if sign == "all" else 0.0
    return np.clip(np.asarray(values, dtype=np.float64) / float(m), low, 1.0)


def top_mass_mask(magnitude, fraction: float = DEFAULT_TOP_MASS) -> np.ndarray:
    """The fewest pixels, largest first, whose values hold `fraction` of the map's total:
    magnitude (..., H, W) >= 0 -> boolean (..., H, W). Ties keep row-major pixel order; an
    all-zero map keeps nothing."""
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top_mass must be a fraction in (0, 1], got {fraction}")
    v = np.asarray(magnitude, dtype=np.float64)
    if (v < 0).any():
        raise ValueError("top_mass_mask needs values >= 0 (a sign mode other than 'all')")
    flat = v.reshape(-1, v.shape[-2] * v.shape[-1])
    keep = np.zeros(flat.shape, dtype=bool)
    for i, row in enumerate(flat):
        total = row.sum()
        if total <= 0:
            continue
        order = np.argsort(-row, kind="stable")
        count = int(np.searchsorted(np.cumsum(row[order]), fraction * total, side="left")) + 1
        keep[i, order[:min(count, row.size)]] = True
    return keep.reshape(v.shape)


def panel_rgb(image, values, m: float, *, sign: str = "all", mode: str = "overlay", cmap: str | None = None,
              overlay_alpha: float = 0.6, top_mass: float = DEFAULT_TOP_MASS) -> np.ndarray:
    """One map panel as RGB pixels (H, W, 3) in [0, 1], as the figure draws it: `values` from
    `signed_values`, `m` from `display_limit`. Modes: "heat_map" the colour map alone;
    "overlay" the colour map over the greyscale image with opacity `overlay_alpha`; "masked" the
    image times `normalised_values` (bright where the shown values are large); "top_mass" the
    image where `top_mass_mask` keeps a pixel, darkened elsewhere."""
    import matplotlib

    _check_choice("mode", mode, MODES)
    values = np.asarray(values, dtype=np.float64)
    if mode in ("masked", "top_mass"):
        if sign == "all":
            raise ValueError(f"mode {mode!r} shows one magnitude per pixel; choose sign 'positive', 'negative' "
                             f"or 'absolute', not 'all'")
        if image is None:
            raise ValueError(f"mode {mode!r} draws the image: give images")
        img = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
        img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
        if mode == "masked":
            return img * normalised_values(values, m, sign)[..., None]
        return img * np.where(top_mass_mask(values, top_mass), 1.0, _DIM)[..., None]
    colour_map = matplotlib.colormaps[cmap or SIGN_CMAPS[sign]]
    low = -m if sign == "all" else 0.0
    heat = colour_map(np.clip((values - low) / (m - low), 0.0, 1.0))[..., :3]
    if mode == "heat_map" or image is None:
        return heat
    grey = _grey(np.asarray(image, dtype=np.float64))[..., None]
    return (1.0 - overlay_alpha) * grey + overlay_alpha * heat


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def format_value(v: float) -> str:
    """A colour-bar number: 3 significant digits, scientific outside [0.01, 1000)."""
    if v == 0:
        return "0"
    return f"{v:.3g}" if 1e-2 <= abs(v) < 1e3 else f"{v:.2e}".replace("e-0", "e-").replace("e+0", "e")


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.clip(img, 0.0, 1.0)
    return img[..., 0] if img.shape[-1] == 1 else img @ np.array([0.299, 0.587, 0.114])


def _show_image(img: np.ndarray):
    img = np.clip(img, 0.0, 1.0)
    return (img[..., 0], "gray") if img.shape[-1] == 1 else (img, None)


def scale_description(scale: str, clip: float | None = None, sign: str = "all") -> str:
    """What the colour scale means, for the note under a figure."""
    end = ("the largest |value|" if clip is None or float(clip) >= 100.0 else
           f"the {float(clip):g}th percentile of the nonzero |values| (larger values saturate)")
    span = "-m..+m" if sign == "all" else "0..m"
    kind = "symmetric colour scale" if sign == "all" else "colour scale"
    return {"row": f"one {kind} per row, shared by its panels: {span}, m = {end} of the row's maps (numbers on "
                   f"the row's colour bar)",
            "figure": f"one {kind} for the whole figure: {span}, m = {end} of every panel (numbers on the "
                      f"colour bar)",
            "panel": f"each panel on its own {kind} {span}, m = {end} of that panel (printed in its corner; "
                     f"colour bars in units of m): compare shapes, not values, across panels"}[scale]


def sign_description(sign: str, mode: str, top_mass: float) -> str:
    """What the colours (or the brightness) of the map panels mean, for the note."""
    if mode == "masked":
        return (f"Image times the {_SIGN_WORDS[sign]} attribution on the colour scale: bright where it is large "
                f"(at or beyond m: the full image), dark where it is 0.")
    if mode == "top_mass":
        return (f"Image kept where the pixels holding the top {100 * float(top_mass):g}% of the {_SIGN_WORDS[sign]} "
                f"attribution mass lie (largest first), darkened elsewhere.")
    if sign == "all":
        return "red: positive attribution (supports the target), blue: negative (opposes it), white: 0."
    size = " (its size; the colour bar gives the values)" if sign == "negative" else ""
    return (f"Colour: the {_SIGN_WORDS[sign]} attribution{size}, from 0 (light) to m (dark); other values are not "
            f"shown.")


_SIGN_WORDS = {"all": "signed", "positive": "positive", "negative": "negative", "absolute": "absolute"}


# ---------------------------------------------------------------------------------------------
# Figures

def preload():
    """Import what drawing a figure needs (matplotlib, its Agg canvas, fonts, PNG writer) on a
    daemon thread and return the thread; join it before drawing (matplotlib is not thread-safe).

    `cocoa-jax explain` starts it before the attributions: their compiling and computing
    release the GIL, so the ~0.5-1 s of imports (more under load) overlap them instead of
    adding to the figure's time. Failures are left to the real drawing, which raises them.
    """
    import threading

    def work():
        try:
            import io

            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.cm import ScalarMappable  # noqa: F401 (imported for later)
            from matplotlib.colors import Normalize  # noqa: F401
            from matplotlib.figure import Figure
            from matplotlib.lines import Line2D  # noqa: F401
            from matplotlib.patches import Patch  # noqa: F401

            fig = Figure(figsize=(0.5, 0.5), dpi=20)
            FigureCanvasAgg(fig)
            fig.text(0.1, 0.1, "0", fontsize=FONT)
            fig.savefig(io.BytesIO(), format="png")  # the font, Agg and the PNG writer loaded once
        except Exception:  # pragma: no cover - the real figure reports it
            pass

    thread = threading.Thread(target=work, name="cocoa-jax-viz-preload", daemon=True)
    thread.start()
    return thread


def plot_attributions(images, attributions, *, method=None, centre=None, titles=None, row_titles=None,
                      scale: str = "row", cmap: str | None = None, overlay_alpha: float = 0.6,
                      path=None, suptitle: str | None = None, note: bool = True, caption: str | None = None,
                      image_label: str | None = "image", panel_size: float = 1.5, dpi: int = 100,
                      sign: str = "all", clip: float | None = DEFAULT_CLIP, mode: str = "overlay",
                      top_mass: float = DEFAULT_TOP_MASS, panels_dir=None):
    """Draw attribution maps over their images on a shared, stated colour scale.

    images: (N, H, W, C), C = 1 or 3, values in [0, 1] (one column per image; the first row
      shows them), or None (maps only; then `attributions` must be a list of rows or 5-d).
    attributions: the maps, one row of panels per map of each image:
      (N, H, W) one row; (N, H, W, C) one row of per-channel maps; (N, K, H, W) or
      (N, K, H, W, C) K rows; or a list of K arrays (N, H, W) / (N, H, W, C) (rows may differ,
      e.g. an IG row and a RISE row). Per-channel maps are shown as their channel mean.
    method: a `cocoa_jax.methods` name, or one per row. Rows of a method whose `centred` flag
      is set (RISE: its maps carry the mean score as a constant offset) are shown minus each
      map's mean (`methods.pixel_map`) and labelled "(minus mean)". Default titles of rows:
      the method's title.
    centre: True/False, or one per row, overrides the method's flag (for maps of your own).
    titles: one per image (column titles); row_titles: one per row.
    scale: "row" (default: every panel of a row shares one scale -m..+m, with a numbered
      colour bar at the row's right end), "figure" (one scale for every panel, one colour bar)
      or "panel" (each panel its own scale, m printed in its corner; colour bars then read in
      units of m).
    clip: m is this percentile of |shown value| over the maps sharing the scale (default 99:
      the few extreme pixels of IG / GradientSHAP on photos saturate instead of washing the
      rest out; `display_limit`); None or 100: the largest |value|.
    sign: which part of each map is shown (`signed_values`): "all" (default, signed, scale
      -m..+m), "positive", "negative" (its size) or "absolute" (scale 0..m).
    mode: "overlay" (default: the colour map over the greyscale image, opacity
      `overlay_alpha`), "heat_map" (the colour map alone), "masked" (the image times the
      shown value on the scale) or "top_mass" (the image where the pixels holding the top
      `top_mass` fraction of the shown mass lie, darkened elsewhere); "masked" and "top_mass"
      need images and a sign other than "all". See `panel_rgb`.
    cmap: a matplotlib colour map (default by sign: "bwr" for "all": red > 0 supports the
      target, blue < 0 opposes it, white 0; "Reds", "Blues", "Purples" for the others).
    overlay_alpha: opacity of the map over the greyscale image (1: the map alone).
    panels_dir: also write every panel as its own PNG at the maps' resolution, for papers
      (`save_panels`: image_<j>.png, map_<r>_<j>.png and panels.json with each row's scale).
    path: a file name (written atomically, see `cocoa_jax.files`) or a binary file object
      to write a PNG to; None writes nothing.
    suptitle: title above the grid. note: print under the grid what colours, scale and
      centring mean; caption: more text for that note.
    Returns the matplotlib Figure (not attached to pyplot: in a notebook, display it, or
    call `fig.savefig`). Shapes or names that do not fit raise a ValueError naming the argument.
    """
    block = Block(images, attributions, method, centre, titles, row_titles, image_label)
    return plot_attribution_blocks([block], scale=scale, cmap=cmap, overlay_alpha=overlay_alpha, path=path,
                                   suptitle=suptitle, note=note, caption=caption, panel_size=panel_size, dpi=dpi,
                                   sign=sign, clip=clip, mode=mode, top_mass=top_mass, panels_dir=panels_dir)


def plot_attribution_blocks(blocks: Sequence[Block], *, scale: str = "row", cmap: str | None = None,
                            overlay_alpha: float = 0.6, path=None, suptitle: str | None = None,
                            note: bool = True, caption: str | None = None, panel_size: float = 1.5,
                            dpi: int = 100, sign: str = "all", clip: float | None = DEFAULT_CLIP,
                            mode: str = "overlay", top_mass: float = DEFAULT_TOP_MASS, panels_dir=None):
    """Several `plot_attributions` grids stacked in one figure (same column count in each);
    scale="figure" shares one scale over every block. Arguments as in `plot_attributions`
    (with several blocks, `panels_dir` gets one sub-folder per block, block_<b>)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_choice("scale", scale, SCALES)
    _check_choice("sign", sign, SIGNS)
    _check_choice("mode", mode, MODES)
    if mode in ("masked", "top_mass") and sign == "all":
        raise ValueError(f"mode {mode!r} shows one magnitude per pixel; choose sign 'positive', 'negative' or "
                         f"'absolute', not 'all'")
    display_limit(0.0, clip)  # checks clip
    top_mass_mask(np.ones((1, 1)), top_mass)  # checks top_mass
    cmap = cmap or SIGN_CMAPS[sign]
    if not 0.0 <= float(overlay_alpha) <= 1.0:
        raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
    if float(panel_size) <= 0:
        raise ValueError(f"panel_size must be positive, got {panel_size}")
    import matplotlib

    try:
        matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"cmap {cmap!r} is not a matplotlib colour map") from None
    if not blocks:
        raise ValueError("blocks is empty")

    prepared = []
    any_centred = any_channels = False
    for b in blocks:
        images = None if b.images is None else _images(b.images)
        if images is None:
            first = b.attributions[0] if isinstance(b.attributions, (list, tuple)) else b.attributions
            n = int(np.shape(first)[0])
        else:
            n = images.shape[0]
        hw = None if images is None else images.shape[1:3]
        channels = None if images is None else images.shape[3]
        rows = _split_rows(b.attributions, n, hw, channels)
        shown, centred = prepare_maps(rows, b.method, b.centre)
        shown = [signed_values(m, sign) for m in shown]
        if mode in ("masked", "top_mass") and images is None:
            raise ValueError(f"mode {mode!r} draws the images: give images")
        names = _per_row(b.method, len(rows), "method")
        if b.row_titles is not None:
            row_titles = [str(t) for t in _per_row(b.row_titles, len(rows), "row_titles")]
        else:
            from cocoa_jax import methods as methods_mod

            row_titles = [methods_mod.get(m).title if m else (f"map {k}" if len(rows) > 1 else "attribution")
                          for k, m in enumerate(names)]
        row_titles = [t + "\n(minus mean)" if c else t for t, c in zip(row_titles, centred)]
        if b.titles is not None and len(list(b.titles)) != n:
            raise ValueError(f"titles has {len(list(b.titles))} entries for {n} images")
        prepared.append((images, shown, row_titles, b.titles, b.image_label, n))
        any_centred = any_centred or any(centred)
        any_channels = any_channels or any(r.ndim == 4 for r in rows)
    n_cols = prepared[0][5]
    if any(p[5] != n_cols for p in prepared):
        raise ValueError("every block must have the same number of images (columns)")

    # Colour limits: one m per scale, from every value that shares it.
    if scale == "figure":
        top = display_limit(np.concatenate([m.ravel() for p in prepared for m in p[1]]), clip)
        limits = [[[top] * n_cols for _ in p[1]] for p in prepared]
    elif scale == "row":
        limits = [[[display_limit(m, clip)] * n_cols for m in p[1]] for p in prepared]
    else:
        limits = [[[display_limit(m[j], clip) for j in range(n_cols)] for m in p[1]] for p in prepared]
    panel_paths = []
    if panels_dir is not None:
        for b_index, (p, block_limits) in enumerate(zip(prepared, limits)):
            panel_paths += _write_panels(os.path.join(os.fspath(panels_dir), f"block_{b_index}") if len(prepared) > 1
                          else os.fspath(panels_dir), p[0], p[1], p[2], block_limits, sign=sign, mode=mode,
                          cmap=cmap, overlay_alpha=overlay_alpha, top_mass=top_mass, clip=clip, scale=scale)

    # Geometry (inches).
    panel = float(panel_size)
    label_lines = [line for p in prepared for t in p[2] for line in t.split("\n")]
    label_lines += [line for p in prepared if p[4] for line in str(p[4]).split("\n")]
    left = 0.25 + 0.075 * max([len(s) for s in label_lines] + [4]) * FONT / 9
    grid_width = n_cols * panel + (n_cols - 1) * _GAP
    width = left + grid_width + _BAR_GAP + _BAR_WIDTH + _BAR_LABELS + 0.1
    if width < _MIN_WIDTH:  # room for the title and the note: centre a narrow grid
        left += (_MIN_WIDTH - width) / 2
        width = _MIN_WIDTH
    wrap_title = int(width * _CHARS_PER_INCH[TITLE_FONT])
    title_text = "\n".join(textwrap.fill(part, wrap_title) for part in suptitle.split("\n")) if suptitle else ""
    note_text = ""
    if note:
        note_text = sign_description(sign, mode, top_mass)
        if mode != "top_mass":
            note_text += f" Colour scale: {scale_description(scale, clip, sign)}."
        if any_channels:
            note_text += " Per-channel maps are shown as their channel mean."
        if any_centred:
            note_text += " Rows marked (minus mean) show each map minus its mean (a constant offset removed)."
        if caption:
            note_text += " " + caption
        note_text = textwrap.fill(note_text, int(width * _CHARS_PER_INCH[SMALL]))
    elif caption:
        note_text = textwrap.fill(caption, int(width * _CHARS_PER_INCH[SMALL]))

    def col_title_height(titles):
        if not titles:
            return 0.0
        return 0.08 + 0.17 * max(str(t).count("\n") + 1 for t in titles)

    top_margin = 0.12 + (0.2 * (title_text.count("\n") + 1) + 0.1 if title_text else 0.0)
    bottom_margin = 0.12 + (0.16 * (note_text.count("\n") + 1) + 0.12 if note_text else 0.0)
    block_heights = []
    for images, shown, _, titles, _, _ in prepared:
        n_panel_rows = len(shown) + (images is not None)
        ph = panel * _aspect(shown)
        block_heights.append(col_title_height(titles) + n_panel_rows * ph + (n_panel_rows - 1) * _GAP)
    block_sep = 0.3
    height = top_margin + sum(block_heights) + block_sep * (len(prepared) - 1) + bottom_margin

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    from matplotlib.colors import Normalize

    def add_axes(x_in, y_top_in, w_in, h_in, label):
        return fig.add_axes((x_in / width, 1 - (y_top_in + h_in) / height, w_in / width, h_in / height),
                            label=label)

    def col_x(j):
        return left + j * (panel + _GAP)

    bar_x = left + grid_width + _BAR_GAP
    y = top_margin
    map_row = 0
    for b_index, ((images, shown, row_titles, titles, image_label, n), block_limits) in enumerate(
            zip(prepared, limits)):
        y += col_title_height(titles)
        ph = panel * _aspect(shown)  # panel height: the images' own aspect ratio, no gaps
        first_row_axes = []
        if images is not None:
            for j in range(n):
                ax = add_axes(col_x(j), y, panel, ph, f"image {b_index} {j}")
                data, grey_cmap = _show_image(images[j])
                ax.imshow(data, cmap=grey_cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                first_row_axes.append(ax)
            if image_label:
                first_row_axes[0].set_ylabel(image_label, fontsize=FONT)
            y += ph + _GAP
        first_map_y = y
        for r, (maps, title, row_limits) in enumerate(zip(shown, row_titles, block_limits)):
            row_axes = []
            for j in range(n):
                ax = add_axes(col_x(j), y, panel, ph, f"map {map_row} {j}")
                if mode in ("masked", "top_mass"):
                    overlay = ax.imshow(panel_rgb(images[j], maps[j], row_limits[j], sign=sign, mode=mode,
                                                  top_mass=top_mass), vmin=0.0, vmax=1.0, interpolation="nearest")
                else:
                    if images is not None and overlay_alpha < 1.0 and mode == "overlay":
                        ax.imshow(_grey(images[j]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                    low = -row_limits[j] if sign == "all" else 0.0
                    overlay = ax.imshow(maps[j], cmap=cmap, norm=Normalize(low, row_limits[j]),
                                        alpha=overlay_alpha if images is not None and mode == "overlay" else 1.0,
                                        interpolation="nearest")
                overlay.set_label("attribution")
                if scale == "panel":
                    ax.text(0.03, 0.97, f"m={format_value(row_limits[j])}", transform=ax.transAxes, ha="left",
                            va="top", fontsize=SMALL, bbox=dict(facecolor="white", alpha=0.75, pad=1.5,
                                                                edgecolor="none"))
                ax.set_xticks([])
                ax.set_yticks([])
                row_axes.append(ax)
            row_axes[0].set_ylabel(title, fontsize=FONT)
            if r == 0 and images is None:
                first_row_axes = row_axes
            if scale != "figure" and mode != "top_mass":
                cax = add_axes(bar_x, y + 0.04 * ph, _BAR_WIDTH, 0.92 * ph, f"colorbar {map_row}")
                m = 1.0 if scale == "panel" else row_limits[0]
                _colorbar(fig, cax, m, "gray" if mode == "masked" else cmap, relative=scale == "panel", sign=sign)
            y += ph + (_GAP if r < len(shown) - 1 else 0.0)
            map_row += 1
        if scale == "figure" and shown and mode != "top_mass":
            span = y - first_map_y
            cax = add_axes(bar_x, first_map_y + 0.02 * span, _BAR_WIDTH, 0.96 * span,
                           f"colorbar {map_row - len(shown)}")
            _colorbar(fig, cax, block_limits[0][0], "gray" if mode == "masked" else cmap, relative=False,
                      sign=sign)
        if titles is not None:
            for ax, t in zip(first_row_axes, titles):
                ax.set_title(str(t), fontsize=FONT)
        y += block_sep
    if title_text:
        fig.text(0.5, 1 - 0.12 / height, title_text, ha="center", va="top", fontsize=TITLE_FONT)
    if note_text:
        fig.text(0.1 / width, 0.12 / height, note_text, ha="left", va="bottom", fontsize=SMALL)
    fig.panel_paths = panel_paths  # the files `panels_dir` wrote (none without it)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def _colorbar(fig, cax, m: float, cmap: str, *, relative: bool, sign: str = "all"):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    low = -m if sign == "all" else 0.0
    bar = fig.colorbar(ScalarMappable(Normalize(low, m), cmap=cmap), cax=cax)
    ticks = [-m, -m / 2, 0.0, m / 2, m] if sign == "all" else [0.0, m / 2, m]
    bar.set_ticks(ticks)
    # "negative" shows the size of the negative part: its bar reads in the map's own (negative) values.
    flip = -1.0 if sign == "negative" else 1.0
    if relative:
        names = {-m: "-m", -m / 2: "-m/2", 0.0: "0", m / 2: "m/2", m: "+m"}
        bar.set_ticklabels([("-" + names[t].lstrip("+") if flip < 0 and t else names[t]) for t in ticks])
    else:
        bar.set_ticklabels([format_value(flip * v) for v in ticks])
    bar.ax.tick_params(labelsize=SMALL, length=2.5, pad=1.5)
    bar.outline.set_linewidth(0.5)
    return bar


def save_panels(images, attributions, out_dir, *, method=None, centre=None, row_titles=None,
                scale: str = "row", sign: str = "all", clip: float | None = DEFAULT_CLIP, mode: str = "overlay",
                cmap: str | None = None, overlay_alpha: float = 0.6, top_mass: float = DEFAULT_TOP_MASS) -> list[str]:
    """Every panel of `plot_attributions` as its own PNG in `out_dir` (created), at the maps'
    resolution, for papers: image_<j>.png (the images), map_<r>_<j>.png (row r, image j; the
    same scale, sign and mode as the figure) and panels.json (per row: its title and scale m, with
    sign, clip, mode, colour map). Arguments as in `plot_attributions`. Returns the paths written."""
    return plot_attributions(images, attributions, method=method, centre=centre, row_titles=row_titles,
                             scale=scale, sign=sign, clip=clip, mode=mode, cmap=cmap, overlay_alpha=overlay_alpha,
                             top_mass=top_mass, panels_dir=out_dir, note=False).panel_paths


def _write_panels(out_dir: str, images, shown, row_titles, limits, *, sign, mode, cmap, overlay_alpha, top_mass,
                  clip, scale) -> list[str]:
    import io
    import json

    from PIL import Image

    from cocoa_jax.files import Outputs

    def png(rgb):
        buffer = io.BytesIO()
        Image.fromarray(np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    os.makedirs(out_dir, exist_ok=True)
    outputs, paths = Outputs(), []
    if images is not None:
        for j, img in enumerate(images):
            rgb = np.repeat(np.clip(img, 0, 1), 3, axis=-1) if img.shape[-1] == 1 else np.clip(img, 0, 1)
            paths.append(os.path.join(out_dir, f"image_{j}.png"))
            outputs.add_bytes(paths[-1], png(rgb))
    record = {"sign": sign, "clip": clip, "mode": mode, "cmap": cmap, "scale": scale,
              "overlay_alpha": overlay_alpha if mode == "overlay" and images is not None else None,
              "top_mass": top_mass if mode == "top_mass" else None, "rows": []}
    for r, (maps, title, row_limits) in enumerate(zip(shown, row_titles, limits)):
        record["rows"].append({"title": title.replace("\n", " "), "m": [float(m) for m in row_limits]})
        for j, values in enumerate(maps):
            rgb = panel_rgb(None if images is None else images[j], values, row_limits[j], sign=sign, mode=mode,
                            cmap=cmap, overlay_alpha=overlay_alpha, top_mass=top_mass)
            paths.append(os.path.join(out_dir, f"map_{r}_{j}.png"))
            outputs.add_bytes(paths[-1], png(rgb))
    paths.append(os.path.join(out_dir, "panels.json"))
    outputs.add_bytes(paths[-1], json.dumps(record, indent=2).encode())
    outputs.commit()
    return paths


def save_figure(fig, path, *, dpi: int = 100, format: str = "png"):
    """Write `fig` to a file name (atomically: readers see the old file or the whole new one,
    no temporary is left behind) or to a binary file object. Returns `path`."""
    if isinstance(path, (str, os.PathLike)):
        from cocoa_jax.files import atomic_write_rendered

        atomic_write_rendered(os.fspath(path), lambda f: fig.savefig(f, dpi=dpi, format=format))
    else:
        fig.savefig(path, dpi=dpi, format=format)
    return path


# ---------------------------------------------------------------------------------------------
# Insertion / deletion curves (the sweep report's curves.png)

LINE_STYLES = ("-", "--", "-.", ":", (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)))
REFERENCE_STYLE = dict(color="0.4", linestyle=(0, (5, 2)), linewidth=1.8)


def plot_insertion_deletion(fractions, curves, *, measures: Sequence[tuple[str, str]],
                            kinds: Sequence[str] = ("insertion", "deletion"), reference: str | None = None,
                            n_seeds: int | None = None, suptitle: str | None = None, path=None, dpi: int = 110,
                            better: Sequence[Sequence[str]] | None = None):
    """One panel per measure (rows) x kind (columns) of mean insertion/deletion curves.

    fractions: (S+1,) fraction of pixels inserted/deleted at each step.
    curves: {(method, target): (mean, halfwidth)}, mean of shape (len(kinds), S+1, len(measures))
      and halfwidth the same shape (95% CI half-width, drawn as a band) or None (no band).
      Methods are told apart by colour, targets by line style; the (method, target) whose
      method is `reference` (the random attribution) is drawn dashed grey.
    measures: (name, y-label) per panel row.
    better: per measure, one "higher" / "lower" per kind: which area is better (panel titles);
      None: each measure's direction in `cocoa_jax.metrics.MEASURES` when `name` is one of its
      keys, else higher for insertion and lower for deletion. One legend below the panels (nothing covers
    the curves). Returns the Figure; `path`: file name (atomic) or file object, as
    `save_figure`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1:
        raise ValueError(f"fractions must have shape (S+1,), got {fractions.shape}")
    if not curves:
        raise ValueError("curves is empty")
    for key, (mean, half) in curves.items():
        expected = (len(kinds), fractions.size, len(measures))
        if np.shape(mean) != expected or (half is not None and np.shape(half) != expected):
            raise ValueError(f"curves[{key!r}] must have shape {expected} (kinds, steps, measures), "
                             f"got {np.shape(mean)}")
    if better is None:
        from cocoa_jax.metrics import MEASURES

        better = [tuple(MEASURES[name].better(k) if name in MEASURES else
                        ("higher" if k == "insertion" else "lower") for k in kinds) for name, _ in measures]
    better = [tuple(b) for b in better]
    if len(better) != len(measures) or any(len(b) != len(kinds) or set(b) - {"higher", "lower"} for b in better):
        raise ValueError(f"better must give 'higher' or 'lower' for each of {len(kinds)} kinds of each of "
                         f"{len(measures)} measures, got {better!r}")
    methods = list(dict.fromkeys(m for m, _ in curves if m != reference))
    targets = list(dict.fromkeys(t for m, t in curves if m != reference))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    styles = {t: LINE_STYLES[i % len(LINE_STYLES)] for i, t in enumerate(targets)}

    n_legend = len(methods) + len(targets) + (reference is not None) + 1
    n_cols_legend = min(n_legend, 4)
    legend_height = 0.3 + 0.24 * -(-n_legend // n_cols_legend)
    panel_w, panel_h = 4.6, 3.0
    width = len(kinds) * panel_w + 0.4
    title_h = 0.45 if suptitle else 0.15
    height = title_h + len(measures) * panel_h + legend_height + 0.15
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(measures), len(kinds), squeeze=False)
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.15 / width, top=1 - title_h / height,
                        bottom=(legend_height + 0.55) / height, hspace=0.45, wspace=0.28)
    any_band = False
    for i, (_, label) in enumerate(measures):
        for j, kind in enumerate(kinds):
            ax = axes[i, j]
            for (method, target), (mean, half) in curves.items():
                if method == reference:
                    style = dict(REFERENCE_STYLE, zorder=3)
                else:
                    style = dict(color=colours[method], linestyle=styles[target], linewidth=1.5, zorder=2)
                y = np.asarray(mean)[j, :, i]
                ax.plot(fractions, y, **style)
                if half is not None and np.all(np.isfinite(np.asarray(half)[j, :, i])):
                    h = np.asarray(half)[j, :, i]
                    ax.fill_between(fractions, y - h, y + h, color=style["color"], alpha=0.1, linewidth=0,
                                    zorder=1)
                    any_band = True
            verb = "inserted" if kind == "insertion" else "deleted"
            ax.set_title(f"{kind.capitalize()} ({better[i][j]} area is better)", fontsize=FONT + 1)
            ax.set_xlabel(f"fraction of pixels {verb}", fontsize=FONT)
            ax.set_ylabel(label, fontsize=FONT)
            ax.set_xlim(float(fractions[0]), float(fractions[-1]))
            ax.tick_params(labelsize=SMALL)
            ax.grid(alpha=0.3, linewidth=0.5)
    handles = [Line2D([], [], color=colours[m], linewidth=2.5, label=m) for m in methods]
    handles += [Line2D([], [], color="black", linestyle=styles[t], linewidth=1.5, label=f"target: {t}")
                for t in targets]
    if reference is not None and any(m == reference for m, _ in curves):
        handles.append(Line2D([], [], label=reference, **REFERENCE_STYLE))
    if any_band:
        handles.append(Patch(color="0.5", alpha=0.3, label=f"95% CI over {n_seeds} seeds (t)" if n_seeds
                             else "95% CI (t)"))
    elif n_seeds is not None and n_seeds < 2:
        handles.append(Patch(color="none", label="1 seed: no CI band"))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.1 / height),
               ncol=n_cols_legend, fontsize=FONT, frameon=False, handlelength=3.0, columnspacing=1.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=TITLE_FONT, y=1 - 0.08 / height)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


# ---------------------------------------------------------------------------------------------
# Sweep studies: AUC per corpus / foil size, Spearman correlation per cascade step


class Series(NamedTuple):
    """One line of a study panel: `mean` and 95% half-width `ci` (nan: no band) per x position;
    `reference` draws it as the dashed grey reference (the random attribution)."""

    label: str
    mean: np.ndarray
    ci: np.ndarray
    reference: bool = False


def _study_figure(n_rows: int, n_cols: int, figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def _band(ax, x, series: Series, line) -> None:
    ci = np.asarray(series.ci, dtype=float)
    if np.isfinite(ci).any():
        ax.fill_between(x, series.mean - ci, series.mean + ci, color=line.get_color(), alpha=0.18, linewidth=0)


def plot_size_sensitivity(sizes, panels, *, xlabel: str, suptitle: str):
    """AUC vs corpus / foil size (the paper's Figures 4-7; `cocoa_jax.sweep.studies`): sizes
    evenly spaced on x, one panel per `panels[row][column]` = (y-label, [Series, ...]), methods in
    the colour cycle, a reference series dashed grey, one legend below. Returns the Figure."""
    import matplotlib

    panels = [list(row) for row in panels]
    fig, axes = _study_figure(len(panels), len(panels[0]), (4.2 * len(panels[0]), 3.2 * len(panels)))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(sizes), dtype=float)  # evenly spaced sizes: 100 and 120 stay readable
    handles = {}
    for i, row in enumerate(panels):
        for j, (ylabel, lines) in enumerate(row):
            ax = axes[i, j]
            colour = 0
            for series in lines:
                if series.reference:
                    style = dict(color="0.4", linestyle=(0, (5, 2)), linewidth=1.8)
                else:
                    style = dict(color=colors[colour % len(colors)], linewidth=1.8, marker="o", markersize=3.5)
                    colour += 1
                line, = ax.plot(x, series.mean, label=series.label, **style)
                _band(ax, x, series, line)
                handles[series.label] = line
            ax.set_xticks(x)
            ax.set_xticklabels([str(s) for s in sizes], fontsize=8)
            ax.set_xlabel(xlabel, fontsize=9)
            ax.set_ylabel(ylabel, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(suptitle, fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def plot_cascade(steps, panels, *, suptitle: str):
    """Spearman correlation with the trained maps vs cascade step (`cocoa_jax.sweep.studies`):
    x = steps ("trained", then one more block randomised per step), one panel per
    `panels[row][column]` = (title, [Series, ...]) (None: left empty) with one line per target in
    the axes' colour cycle, y in [-1, 1] with the zero line, one legend below. Returns the Figure."""
    panels = [list(row) for row in panels]
    fig, axes = _study_figure(len(panels), len(panels[0]), (4.6 * len(panels[0]), 3.0 * len(panels)))
    x = np.arange(len(steps), dtype=float)
    handles = {}
    for j in range(len(panels[0])):  # column by column: the legend lists targets as the first column met them
        for i, row in enumerate(panels):
            if row[j] is None:  # no method: an empty panel
                continue
            title, lines = row[j]
            ax = axes[i, j]
            for series in lines:
                line, = ax.plot(x, series.mean, marker="o", markersize=3.5, linewidth=1.6, label=series.label)
                _band(ax, x, series, line)
                handles.setdefault(series.label, line)
            ax.axhline(0.0, color="0.5", linewidth=0.8)
            ax.set_ylim(-1.05, 1.05)
            ax.set_xticks(x)
            ax.set_xticklabels(["trained"] + [f"+{s}" for s in steps[1:]], rotation=35, ha="right", fontsize=7)
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("Spearman vs trained", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(suptitle, fontsize=9)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return fig


# ---------------------------------------------------------------------------------------------
# Evaluation metrics (`cocoa-jax evaluate`'s scores.png)


def plot_metric_scores(panels, *, suptitle: str = "", path=None, dpi: int = 110):
    """One panel per metric: a dot at the mean with its 95% CI bar for each row (maps, target).

    panels: [(title, xlabel, [(label, mean, ci95), ...]), ...]; the x-label states the metric's
      direction, e.g. "Deletion AUC (↓ lower is better)"; ci95 nan draws no bar. Rows read top
      down in the order given. Axes are labelled "metric {i}"; the i-th panel's error bar
      container holds exactly the plotted means (`ax.containers[0].lines[0].get_xdata()`).
    Returns the Figure; `path`: file name (atomic) or file object, as `save_figure`.
    """
    panels = list(panels)
    if not panels:
        raise ValueError("`panels` is empty: nothing to draw")
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    n_points = max(len(points) for _, _, points in panels)
    fig, axes = _study_figure(n_rows, n_cols, (4.2 * n_cols, 0.9 + n_rows * (0.9 + 0.32 * n_points)))
    for i, (title, xlabel, points) in enumerate(panels):
        ax = axes[i // n_cols, i % n_cols]
        ax.set_label(f"metric {i}")
        y = -np.arange(len(points), dtype=float)
        means = np.array([p[1] for p in points], dtype=float)
        cis = np.array([p[2] for p in points], dtype=float)
        ax.errorbar(means, y, xerr=np.where(np.isfinite(cis), cis, 0.0), fmt="o", color="C0", ecolor="0.35",
                    elinewidth=1.2, capsize=3, markersize=5)
        ax.set_yticks(y)
        ax.set_yticklabels([p[0] for p in points], fontsize=SMALL)
        ax.set_ylim(y.min() - 0.6, 0.6)
        ax.set_title(title, fontsize=FONT)
        ax.set_xlabel(xlabel, fontsize=SMALL)
        ax.tick_params(axis="x", labelsize=SMALL)
        ax.grid(axis="x", alpha=0.3)
    for j in range(len(panels), n_rows * n_cols):  # a grid not filled: the rest left blank
        axes[j // n_cols, j % n_cols].set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=FONT)
    fig.tight_layout(rect=(0, 0, 1, 0.94 if suptitle else 1))
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


# ---------------------------------------------------------------------------------------------
# Token attributions (`cocoa-jax explain --text`, the PNG twin of cocoa_jax.text.html)


def token_rgb(value: float, scale: float) -> tuple[float, float, float]:
    """A token's colour in [0, 1]^3 on its row's scale: white at 0, red (1, 0, 0) at +scale, blue at -scale
    (the same colours as the HTML page)."""
    a = 0.0 if scale <= 0 else float(np.clip(abs(value) / scale, 0.0, 1.0))
    return (1.0, 1.0 - a, 1.0 - a) if value >= 0 else (1.0 - a, 1.0 - a, 1.0)


def plot_token_attributions(rows, *, suptitle: str = "", path=None):
    """One line of coloured tokens per row, each row on its own symmetric scale (+-max |score|, printed at
    the row's end). rows: sequence of (title, tokens (C,) str, scores (C,)). Returns the Figure; with `path`
    also writes a PNG atomically."""
    rows = list(rows)
    if not rows:
        raise ValueError("`rows` is empty")
    for i, (_, tokens, scores) in enumerate(rows):
        if len(tokens) != len(np.ravel(scores)):
            raise ValueError(f"`rows[{i}]` has {len(tokens)} tokens but {len(np.ravel(scores))} scores")
    width = max(sum(len(t) + 2 for t in tokens) for _, tokens, _ in rows)
    fig, axes = _study_figure(1, 1, (min(4.0 + 0.12 * width, 30.0), 0.9 + 0.45 * len(rows)))
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows), -0.5)
    renderer = fig.canvas.get_renderer()
    extent = lambda label: label.get_window_extent(renderer=renderer).transformed(ax.transAxes.inverted())
    titles = [ax.text(0.0, r, title, fontsize=SMALL, va="center", ha="left") for r, (title, _, _) in enumerate(rows)]
    start = max(extent(t).width for t in titles) + 0.02   # tokens begin right of the longest row title
    for r, (title, tokens, scores) in enumerate(rows):
        scores = np.asarray(scores, np.float64).ravel()
        scale = float(np.abs(scores).max()) if scores.size else 0.0
        x = start
        for token, value in zip(tokens, scores):
            face = token_rgb(value, scale)
            label = ax.text(x, r, token, fontsize=FONT, va="center", ha="left", color="white" if min(face) < 0.4 else "black",
                            bbox=dict(boxstyle="square,pad=0.25", facecolor=face, edgecolor="none"))
            x += extent(label).width + 0.012
        ax.text(x + 0.01, r, f"scale ±{format_value(scale)}", fontsize=SMALL, va="center", ha="left", color="0.3")
    if suptitle:
        fig.suptitle(suptitle, fontsize=FONT)
    if path is not None:
        save_figure(fig, path)
    return fig
