"""`cocoa-jax evaluate`'s figure (scores.png): its data (`figure_panels`) are the table's numbers (read
back from scores.csv's text), the drawn dots and bars are those data, and the PNG is a real picture."""
import csv
import io

import numpy as np
import pytest
from PIL import Image

from cocoa_jax import viz
from cocoa_jax.commands import evaluate as command
from cocoa_jax.sweep.tables import ci95_halfwidth

METRICS = ("deletion", "faithfulness_correlation")
TARGETS = ("cocoa", "corpus")


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    scores = {maps: {m: rng.normal(size=(5, len(TARGETS))) for m in METRICS} for maps in ("ig", "rise")}
    return scores, command.summary_rows(scores, TARGETS, METRICS)


def test_the_figure_data_are_the_table_numbers(rows):
    scores, table = rows
    written = list(csv.DictReader(io.StringIO(command.csv_text(table, METRICS))))
    panels = command.figure_panels(table, METRICS)
    assert [title for title, _, _ in panels] == ["Deletion AUC", "Faithfulness correlation"]
    assert "↓ lower is better" in panels[0][1] and "↑ higher is better" in panels[1][1]
    for (_, _, points), metric in zip(panels, METRICS):
        assert [label for label, _, _ in points] == ["ig · cocoa", "ig · corpus", "rise · cocoa", "rise · corpus"]
        for (label, mean, ci), row in zip(points, written):
            maps, target = label.split(" · ")
            assert (row["maps"], row["target"]) == (maps, target)
            values = scores[maps][metric][:, TARGETS.index(target)]
            np.testing.assert_allclose([mean, ci], [float(row[metric]), float(row[f"{metric}_ci95"])], rtol=1e-12)
            np.testing.assert_allclose([mean, ci], [values.mean(), ci95_halfwidth(values)], rtol=1e-12)
    one_maps = command.figure_panels([r for r in table if r["maps"] == "ig"], METRICS)
    assert [label for label, _, _ in one_maps[0][2]] == ["cocoa", "corpus"]  # only what varies is named


def test_the_png_shows_the_data_dots_and_bars(rows, tmp_path):
    panels = command.figure_panels(rows[1], METRICS)
    figure = viz.plot_metric_scores(panels, suptitle="Mean over 5 explicands", path=tmp_path / "scores.png")
    for i, (_, xlabel, points) in enumerate(panels):
        (ax,) = [a for a in figure.axes if a.get_label() == f"metric {i}"]
        line = ax.containers[0].lines[0]
        np.testing.assert_allclose(line.get_xdata(), [mean for _, mean, _ in points])
        assert [t.get_text() for t in ax.get_yticklabels()] == [label for label, _, _ in points]
        assert ax.get_xlabel() == xlabel
        bars = ax.containers[0].lines[2][0].get_segments()  # the horizontal CI bars, mean -/+ ci
        np.testing.assert_allclose([[s[0][0], s[1][0]] for s in bars], [[m - c, m + c] for _, m, c in points])
    pixels = np.asarray(Image.open(tmp_path / "scores.png").convert("L"), float)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 500
    assert (pixels < 128).mean() > 0.005 and pixels.std() > 10  # ink on the canvas, not a blank image
    with pytest.raises(ValueError, match="`panels` is empty"):
        viz.plot_metric_scores([])
