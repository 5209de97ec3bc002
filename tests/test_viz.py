"""cocoa_jax.viz: shapes, shared colour scales, centring, saving; the report's curves figure."""
import os
import sys
import types

import numpy as np
import pytest

from cocoa_jax import methods, viz

N, H, W = 3, 8, 10


def _images(c=1, n=N):
    return np.random.default_rng(0).random((n, H, W, c))


def _maps(*shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape)


def _axes(fig, kind):
    """{(row, col): axes} of the axes labelled '<kind> r j' ('map' or 'image' axes)."""
    out = {}
    for ax in fig.axes:
        parts = ax.get_label().split(" ")
        if parts[0] == kind:
            out[tuple(int(p) for p in parts[1:])] = ax
    return out


def _overlay(ax):
    (im,) = [im for im in ax.images if im.get_label() == "attribution"]
    return im


def _colorbar_limits(fig):
    return {int(ax.get_label().split(" ")[1]): ax.get_ylim() for ax in fig.axes
            if ax.get_label().startswith("colorbar")}


# ---------------------------------------------------------------------------------------------
# Shapes

@pytest.mark.parametrize("shape, rows", [((N, H, W), 1), ((N, H, W, 1), 1), ((N, 4, H, W), 4),
                                         ((N, 2, H, W, 1), 2)])
def test_accepted_shapes_give_one_row_per_map(shape, rows):
    fig = viz.plot_attributions(_images(), _maps(*shape))
    maps = _axes(fig, "map")
    assert sorted(maps) == [(r, j) for r in range(rows) for j in range(N)]
    assert len(_axes(fig, "image")) == N
    for ax in maps.values():
        assert _overlay(ax).get_array().shape == (H, W)


def test_list_of_rows_with_different_channel_layouts():
    fig = viz.plot_attributions(_images(3), [_maps(N, H, W, 3), _maps(N, H, W)],
                                method=["integrated_gradients", "rise"])
    assert len(_axes(fig, "map")) == 2 * N


@pytest.mark.parametrize("images, attributions, kwargs, match", [
    (_images(), _maps(N, H, W, 2), {}, "attributions of shape"),     # 2 channels, images have 1
    (_images(), _maps(N + 1, H, W), {}, r"4 maps for 3 images"),
    (_images(), _maps(N, H, W + 1), {}, "attributions row 0 has maps of size 8x11"),
    (_images(), _maps(N, H), {}, "attributions must have shape"),
    (_images(), _maps(N, 1, 1, H, W, 1), {}, "attributions must have shape"),
    (_images(2), _maps(N, H, W), {}, "images must have shape"),
    (_images()[0], _maps(N, H, W), {}, "images must have shape"),
    (_images(), _maps(N, H, W), {"scale": "column"}, "scale must be one of row, figure, panel"),
    (_images(), _maps(N, H, W), {"method": "gradcam"}, "unknown attribution method 'gradcam'"),
    (_images(), _maps(N, 2, H, W), {"method": ["rise"]}, "method has 1 entries for 2 rows"),
    (_images(), _maps(N, 2, H, W), {"row_titles": ["a"]}, "row_titles has 1 entries for 2 rows"),
    (_images(), _maps(N, H, W), {"titles": ["a"]}, "titles has 1 entries for 3 images"),
    (_images(), _maps(N, H, W), {"overlay_alpha": 2.0}, "overlay_alpha"),
    (_images(), _maps(N, H, W), {"cmap": "no_such_map"}, "cmap 'no_such_map'"),
    (_images(), np.full((N, H, W), np.nan), {}, "NaN"),
    (None, _maps(N, H, W, 1), {}, "ambiguous without images"),
])
def test_refused_inputs_name_the_argument(images, attributions, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_attributions(images, attributions, **kwargs)


# ---------------------------------------------------------------------------------------------
# Scales

def test_row_scale_is_shared_within_each_row_and_differs_between_rows():
    maps = _maps(N, 3, H, W) * np.array([1e-3, 1.0, 50.0])[None, :, None, None]
    fig = viz.plot_attributions(_images(), maps, scale="row")
    axes, bars = _axes(fig, "map"), _colorbar_limits(fig)
    assert sorted(bars) == [0, 1, 2]  # one colour bar per row
    for r in range(3):
        m = np.percentile(np.abs(maps[:, r]), 99)  # the default clip: 99th percentile of the row's |a|
        for j in range(N):
            norm = _overlay(axes[(r, j)]).norm
            assert norm.vmin == pytest.approx(-m) and norm.vmax == pytest.approx(m)
        assert bars[r] == pytest.approx((-m, m))
    # The bar sits beside its row (aligned with the row's panels).
    bar_ax = [ax for ax in fig.axes if ax.get_label() == "colorbar 1"][0]
    row_box, bar_box = axes[(1, 0)].get_position(), bar_ax.get_position()
    assert row_box.y0 <= bar_box.y0 < bar_box.y1 <= row_box.y1 and bar_box.x0 > axes[(1, N - 1)].get_position().x1


def test_figure_scale_is_one_scale_for_every_panel():
    maps = _maps(N, 3, H, W) * np.array([1e-3, 1.0, 50.0])[None, :, None, None]
    fig = viz.plot_attributions(_images(), maps, scale="figure", clip=None)  # None: the largest |value|
    m = np.abs(maps).max()
    for ax in _axes(fig, "map").values():
        assert (_overlay(ax).norm.vmin, _overlay(ax).norm.vmax) == pytest.approx((-m, m))
    bars = _colorbar_limits(fig)
    assert len(bars) == 1 and list(bars.values())[0] == pytest.approx((-m, m))
    assert "whole figure" in " ".join(t.get_text() for t in fig.texts)  # the scale is stated


def test_panel_scale_prints_each_panel_maximum():
    maps = _maps(N, H, W)
    fig = viz.plot_attributions(_images(), maps, scale="panel", clip=99.5)
    for (r, j), ax in _axes(fig, "map").items():
        m = np.percentile(np.abs(maps[j]), 99.5)
        assert _overlay(ax).norm.vmax == pytest.approx(m)
        assert [t.get_text() for t in ax.texts] == [f"m={viz.format_value(m)}"]


def test_row_scale_is_stated_in_the_figure():
    fig = viz.plot_attributions(_images(), _maps(N, H, W))
    text = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "one symmetric colour scale per row" in text and "red" in text


# ---------------------------------------------------------------------------------------------
# What is plotted

def test_centred_method_is_shown_minus_its_mean_and_labelled():
    assert methods.get("rise").centred and not methods.get("integrated_gradients").centred
    maps = _maps(N, H, W) + 5.0  # RISE-like constant offset
    fig = viz.plot_attributions(_images(), [maps, maps], method=["rise", "integrated_gradients"])
    axes = _axes(fig, "map")
    for j in range(N):
        np.testing.assert_allclose(_overlay(axes[(0, j)]).get_array(), maps[j] - maps[j].mean())
        np.testing.assert_allclose(_overlay(axes[(1, j)]).get_array(), maps[j])
    np.testing.assert_allclose(_overlay(axes[(0, 0)]).get_array(), methods.pixel_map("rise", maps)[0])
    assert axes[(0, 0)].get_ylabel() == "RISE\n(minus mean)" and axes[(1, 0)].get_ylabel() == "IG"
    # centre= overrides the method's flag.
    fig = viz.plot_attributions(_images(), maps, method="rise", centre=False)
    np.testing.assert_allclose(_overlay(_axes(fig, "map")[(0, 0)]).get_array(), maps[0])


def test_per_channel_maps_are_reduced_by_channel_mean():
    maps = _maps(N, 2, H, W, 3)
    fig = viz.plot_attributions(_images(3), maps, method="integrated_gradients")
    axes = _axes(fig, "map")
    for r in range(2):
        for j in range(N):
            np.testing.assert_allclose(_overlay(axes[(r, j)]).get_array(), maps[j, r].mean(axis=-1))
    assert "channel mean" in " ".join(t.get_text() for t in fig.texts).replace("\n", " ")


def test_titles_and_fonts_are_readable():
    fig = viz.plot_attributions(_images(), _maps(N, 2, H, W), titles=["a", "b", "c"], row_titles=["x", "y"],
                                suptitle="digits SimCLR encoder")
    images = _axes(fig, "image")
    assert [images[(0, j)].get_title() for j in range(N)] == ["a", "b", "c"]
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text")
                                                   and o.get_text())]
    assert sizes and min(sizes) >= 8


# ---------------------------------------------------------------------------------------------
# Saving

def test_saved_png_exists_and_no_temporaries_remain(tmp_path):
    path = tmp_path / "fig.png"
    fig = viz.plot_attributions(_images(), _maps(N, H, W), path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["fig.png"]
    assert fig.get_figwidth() > 0
    import matplotlib.pyplot  # noqa: F401  (loaded by other tests or not: either way no figure of ours)
    assert matplotlib.pyplot.get_fignums() == []


def test_augmentations_figure_blocks_share_row_scales(tmp_path):
    from cocoa_jax.commands import augmentations as cmd

    n, a = 2, 3
    rng = np.random.default_rng(0)
    result = types.SimpleNamespace(
        views=types.SimpleNamespace(image=rng.random((n, a, H, W, 1))),
        scores=rng.random((n, a, 2)), augmentations=("original", "flip", "erase"),
        attributions={"integrated_gradients": rng.normal(size=(n, a, 2, H, W, 1)),
                      "rise": rng.normal(size=(n, a, 2, H, W)) + 3})
    path = tmp_path / "figure.png"
    fig = cmd.draw_figure(str(path), result, ["one", "two"], ["integrated_gradients", "rise"])
    assert path.is_file() and os.listdir(tmp_path) == ["figure.png"]
    axes = _axes(fig, "map")
    assert len(axes) == n * 4 * a  # blocks x (2 targets x 2 methods) x views
    for r in range(n * 4):
        limits = {_overlay(axes[(r, j)]).norm.vmax for j in range(a)}
        assert len(limits) == 1
    # Block 0, row (COCOA, RISE): centred.
    np.testing.assert_allclose(_overlay(axes[(1, 0)]).get_array(),
                               result.attributions["rise"][0, 0, 0] - result.attributions["rise"][0, 0, 0].mean())


# ---------------------------------------------------------------------------------------------
# The sweep report's curves

def test_report_curves_have_labels_bands_and_an_outside_legend(tmp_path):
    from matplotlib.collections import PolyCollection

    from cocoa_jax.sweep.report import ci95_halfwidth

    steps = np.linspace(0, 1, 6)
    seeds = np.random.default_rng(0).random((3, 2, 6, 2))  # seeds x kinds x steps x measures
    curves = {("IG", "COCOA"): (seeds.mean(0), ci95_halfwidth(seeds, axis=0)),
              ("IG", "Corpus"): (seeds.mean(0) + 0.1, ci95_halfwidth(seeds, axis=0)),
              ("RISE", "COCOA"): (seeds.mean(0) - 0.1, ci95_halfwidth(seeds, axis=0)),
              ("Random attribution", None): (seeds.mean(0) * 0, None)}
    fig = viz.plot_insertion_deletion(steps, curves, measures=[("ccs", "contrastive corpus similarity"),
                                                               ("cmp", "corpus majority probability")],
                                      reference="Random attribution", n_seeds=3)
    axes = [ax for ax in fig.axes]
    assert len(axes) == 4
    assert [ax.get_ylabel() for ax in axes] == ["contrastive corpus similarity"] * 2 + ["corpus majority probability"] * 2
    assert [ax.get_xlabel() for ax in axes[:2]] == ["fraction of pixels inserted", "fraction of pixels deleted"]
    for ax in axes:
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 3  # every curve but the random reference
        lines = ax.get_lines()
        assert [ln.get_color() for ln in lines][-1] == "0.4" and lines[-1].get_linestyle() == "--"
        # Methods by colour, targets by line style.
        assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
        assert lines[0].get_linestyle() != lines[1].get_linestyle()
    # The band is the t-interval: y +- 2.4303 * s / sqrt(3) at one step.
    verts = [c for c in axes[0].collections if isinstance(c, PolyCollection)][0].get_paths()[0].vertices
    y, h = seeds.mean(0)[0, 2, 0], 4.303 * seeds[:, 0, 2, 0].std(ddof=1) / np.sqrt(3)
    assert np.isclose(verts[:, 1], y + h).any() and np.isclose(verts[:, 1], y - h).any()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"
    assert len(legend.get_texts()) == 2 + 2 + 1 + 1  # methods, targets, random, CI band


def test_report_curves_figure_bands_are_t_intervals_over_seeds(monkeypatch):
    """The report's wiring: per-seed curves -> mean and t-interval band per step; the random
    row is the dashed grey reference; measures name the y axes."""
    from matplotlib.collections import PolyCollection

    from cocoa_jax.sweep import report as R
    from cocoa_jax.sweep.config import SweepConfig

    fractions = np.linspace(0, 1, 5)
    rng = np.random.default_rng(0)
    per_seed = {(m, t): {s: rng.random((2, 5, 5)) for s in (0, 1, 2)}
                for m, t in [("integrated_gradients", "cocoa"), ("integrated_gradients", "corpus"),
                             ("rise", "cocoa"), ("rise", "corpus"), ("random", "random")]}
    config = SweepConfig(methods={"integrated_gradients": {}, "rise": {}}, targets=("corpus", "cocoa"),
                         include_random=True, corpus_mode="same")
    monkeypatch.setattr(R, "seed_curves", lambda run_dir: (config, fractions, per_seed))
    fig = R.curves_figure("unused", measures=("ccs", "corpus_majority_prob"))
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["contrastive corpus similarity"] * 2 + ["corpus majority probability"] * 2
    ccs, cmp = R.MEASURE_NAMES.index("ccs"), R.MEASURE_NAMES.index("corpus_majority_prob")
    seeds = np.stack([per_seed[("integrated_gradients", "cocoa")][s] for s in (0, 1, 2)])
    for ax, (kind, measure) in zip(axes, [(0, ccs), (1, ccs), (0, cmp), (1, cmp)]):
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 5  # the random reference has its band too (grey)
        # COCOA comes first (solid line): IG / COCOA is the first curve and band.
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), seeds[:, kind, :, measure].mean(0))
        half = 4.303 * seeds[:, kind, :, measure].std(0, ddof=1) / np.sqrt(3)
        top = bands[0].get_paths()[0].vertices[:, 1]
        assert all(np.isclose(top, v).any() for v in seeds[:, kind, :, measure].mean(0) + half)
        assert ax.get_lines()[-1].get_color() == "0.4"  # the random reference
    assert "3 seed" in fig._suptitle.get_text()


def test_ci95_halfwidth_along_an_axis_matches_the_scalar_helper():
    from cocoa_jax.sweep.report import ci95_halfwidth

    values = np.random.default_rng(0).random((4, 5))
    np.testing.assert_allclose(ci95_halfwidth(values, axis=0), [ci95_halfwidth(values[:, k]) for k in range(5)])
    assert np.isnan(ci95_halfwidth(values[:1], axis=0)).all()
    assert np.isnan(ci95_halfwidth([1.0]))


# ---------------------------------------------------------------------------------------------
# Display modes: outlier clipping, sign, masked image, top mass, per-image PNGs

def _photo_map(seed=0, size=224):
    """A 224-px photo-like map: smooth structure plus noise, and ONE outlier pixel 1000x the rest."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = np.sin(6 * xx) * np.cos(4 * yy) + 0.3 * rng.normal(size=(size, size))
    a[17, 101] = 1000.0
    return a


def test_displayed_range_follows_the_percentile_not_the_outlier_on_a_224_px_map():
    a = _photo_map()
    image = np.random.default_rng(1).random((1, 224, 224, 3))
    fig = viz.plot_attributions(image, a[None], method="integrated_gradients")  # the defaults
    overlay = _overlay(_axes(fig, "map")[(0, 0)])
    m = np.percentile(np.abs(a), 99)  # NumPy's 99th percentile of |a| (no zeros here), linear interpolation
    assert m < 3.0 < 1000.0  # the outlier does not set the scale
    assert (overlay.norm.vmin, overlay.norm.vmax) == pytest.approx((-m, m), rel=1e-12)
    assert _colorbar_limits(fig)[0] == pytest.approx((-m, m), rel=1e-12)
    shown = np.clip(np.ma.getdata(overlay.norm(np.ma.getdata(overlay.get_array()))), 0.0, 1.0)  # to the colour map
    np.testing.assert_allclose(shown, (np.clip(a, -m, m) + m) / (2 * m), rtol=0, atol=1e-12)
    np.testing.assert_allclose(viz.normalised_values(a, m), np.clip(a / m, -1.0, 1.0), rtol=0, atol=1e-15)
    # Readable: most pixels away from white; without clipping almost all of them would be white.
    assert np.median(np.abs(2 * shown - 1)) > 0.2
    unclipped = viz.plot_attributions(image, a[None], clip=None)
    assert _overlay(_axes(unclipped, "map")[(0, 0)]).norm.vmax == 1000.0
    assert np.median(np.abs(a) / 1000.0) < 0.002
    assert "99th percentile" in " ".join(t.get_text() for t in fig.texts).replace("\n", " ")


def test_clip_percentile_is_shared_by_the_row():
    maps = _maps(N, H, W)
    maps[1, 2, 3] = 500.0  # one outlier in one panel moves the row's percentile a little, not to 500
    fig = viz.plot_attributions(_images(), maps, clip=97.0)
    m = np.percentile(np.abs(maps), 97.0)
    for j in range(N):
        assert _overlay(_axes(fig, "map")[(0, j)]).norm.vmax == pytest.approx(m, rel=1e-12)
    assert viz.display_limit(np.zeros((4, 4))) == 1.0
    sparse = np.zeros((10, 10))
    sparse[0, 0], sparse[5, 5] = 3.0, 1.0  # zeros carry no attribution: the percentile of {1, 3}
    assert viz.display_limit(sparse) == pytest.approx(np.percentile([1.0, 3.0], 99), rel=1e-12)
    assert viz.display_limit(sparse, None) == 3.0


@pytest.mark.parametrize("sign, expected, low", [
    ("all", lambda a: a, True), ("positive", lambda a: np.where(a > 0, a, 0.0), False),
    ("negative", lambda a: np.where(a < 0, -a, 0.0), False), ("absolute", lambda a: np.sqrt(a * a), False)])
def test_each_sign_mode_shows_its_part_of_the_map(sign, expected, low):
    maps = _maps(N, H, W)
    fig = viz.plot_attributions(_images(), maps, sign=sign, clip=95.0)
    values = expected(maps)
    m = np.percentile(np.abs(values[values != 0]), 95.0)  # exact zeros (the other sign's part) left out
    for j in range(N):
        overlay = _overlay(_axes(fig, "map")[(0, j)])
        np.testing.assert_allclose(overlay.get_array(), values[j], rtol=0, atol=0)
        assert (overlay.norm.vmin, overlay.norm.vmax) == pytest.approx((-m if low else 0.0, m), rel=1e-12)
    assert overlay.get_cmap().name == viz.SIGN_CMAPS[sign]
    bar = [ax for ax in fig.axes if ax.get_label() == "colorbar 0"][0]
    labels = [t.get_text() for t in bar.get_yticklabels()]
    if sign == "negative":  # the size of the negative part, read in the map's own (negative) values
        assert labels[-1] == viz.format_value(-m) and labels[0] == "0"
    else:
        assert labels[-1] == viz.format_value(m)
    np.testing.assert_array_equal(viz.signed_values(maps, sign), values)


def _top_mass_reference(v, fraction):
    """Fewest pixels, largest first (ties: row-major order), whose sum reaches fraction * total."""
    flat = v.ravel()
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))
    keep, total, acc = np.zeros(flat.size, bool), float(flat.sum()), 0.0
    for i in order:
        if total == 0 or acc >= fraction * total:
            break
        keep[i] = True
        acc += float(flat[i])
    return keep.reshape(v.shape)


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 1.0])
def test_top_mass_keeps_exactly_the_pixels_holding_that_fraction_of_the_mass(fraction):
    rng = np.random.default_rng(3)
    maps = [np.abs(rng.normal(size=(12, 14))) ** 3, rng.integers(0, 4, size=(12, 14)).astype(float)]  # ties
    for v in maps:
        got = viz.top_mass_mask(v, fraction)
        np.testing.assert_array_equal(got, _top_mass_reference(v, fraction))
        kept = np.sort(v[got])
        assert kept.sum() >= fraction * v.sum() - 1e-12
        assert kept[1:].sum() < fraction * v.sum()  # minimal: without its smallest pixel it falls short
    assert not viz.top_mass_mask(np.zeros((3, 3)), 0.5).any()


def test_masked_and_top_mass_panels_are_the_image_times_the_map():
    images, maps = _images(3), _maps(N, H, W)
    m = np.percentile(np.abs(maps), 99)
    fig = viz.plot_attributions(images, maps, sign="absolute", mode="masked")
    for j in range(N):
        np.testing.assert_allclose(_overlay(_axes(fig, "map")[(0, j)]).get_array(),
                                   images[j] * np.clip(np.abs(maps[j]) / m, 0, 1)[..., None], atol=1e-12)
    fig = viz.plot_attributions(images, maps, sign="positive", mode="top_mass", top_mass=0.3)
    for j in range(N):
        keep = _top_mass_reference(np.maximum(maps[j], 0), 0.3)
        np.testing.assert_allclose(_overlay(_axes(fig, "map")[(0, j)]).get_array(),
                                   images[j] * np.where(keep, 1.0, 0.15)[..., None], atol=1e-12)
    assert "top 30%" in " ".join(t.get_text() for t in fig.texts).replace("\n", " ")


def test_heat_map_mode_draws_the_map_alone():
    fig = viz.plot_attributions(_images(), _maps(N, H, W), mode="heat_map")
    ax = _axes(fig, "map")[(0, 0)]
    assert len(ax.images) == 1 and _overlay(ax).get_alpha() == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"sign": "both"}, "sign must be one of all, positive, negative, absolute"),
    ({"mode": "blend"}, "mode must be one of overlay, heat_map, masked, top_mass"),
    ({"clip": 0.0}, r"clip must be a percentile in \(0, 100\]"),
    ({"clip": 150}, r"clip must be a percentile"),
    ({"mode": "masked"}, "choose sign 'positive', 'negative' or 'absolute'"),
    ({"mode": "top_mass", "sign": "absolute", "top_mass": 0.0}, r"top_mass must be a fraction in \(0, 1\]"),
])
def test_display_options_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.plot_attributions(_images(), _maps(N, H, W), **kwargs)
    with pytest.raises(ValueError, match="draws the images"):
        viz.plot_attributions(None, [_maps(N, H, W)], sign="absolute", mode="masked")


def test_per_image_pngs_are_the_figure_panels(tmp_path):
    import json

    from PIL import Image

    images, maps = _images(3), _maps(N, 2, H, W)
    fig = viz.plot_attributions(images, maps, row_titles=["a", "b"], panels_dir=str(tmp_path / "panels"))
    names = sorted(os.listdir(tmp_path / "panels"))
    assert names == sorted([f"image_{j}.png" for j in range(N)] + [f"map_{r}_{j}.png" for r in range(2)
                                                                   for j in range(N)] + ["panels.json"])
    assert sorted(fig.panel_paths) == sorted(str(tmp_path / "panels" / n) for n in names)
    record = json.loads((tmp_path / "panels" / "panels.json").read_text())
    for r in range(2):
        m = np.percentile(np.abs(maps[:, r]), 99)
        assert record["rows"][r]["m"] == pytest.approx([m] * N, rel=1e-12)
        for j in range(N):
            png = np.asarray(Image.open(tmp_path / "panels" / f"map_{r}_{j}.png"))
            assert png.shape == (H, W, 3)
            # NumPy reference: 60% of the bwr colour of clip(a / m) over 40% of the grey image.
            import matplotlib

            heat = matplotlib.colormaps["bwr"]((np.clip(maps[j, r], -m, m) + m) / (2 * m))[..., :3]
            grey = (images[j] @ np.array([0.299, 0.587, 0.114]))[..., None]
            np.testing.assert_array_equal(png, np.round((0.4 * grey + 0.6 * heat) * 255).astype(np.uint8))
    original = np.asarray(Image.open(tmp_path / "panels" / "image_1.png"))
    np.testing.assert_array_equal(original, np.round(images[1] * 255).astype(np.uint8))
    paths = viz.save_panels(images, maps[:, 0], str(tmp_path / "single"), sign="absolute", mode="masked")
    assert len(paths) == 2 * N + 1 and all(os.path.isfile(p) for p in paths)
