"""The installed `cocoa-jax evaluate` on the shipped digits encoder: maps from "another library" (a
plain `maps` array in an .npz), the table (csv + md) with 95% CIs and direction arrows, the raw
per-explicand scores; and its one-line usage errors before any work (in process, no subprocess)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from cocoa_jax import cli
from cocoa_jax.sweep.tables import ci95_halfwidth

from conftest import cli_env, run_cli

METRICS = "deletion,pixel_flipping,faithfulness_correlation,pointing_game"
OPTIONS = '{"pixel_flipping": {"features_in_step": 128}, "faithfulness_correlation": {"nr_runs": 8, "subset_size": 64}}'


def _inputs(tmp_path, maps):
    rng = np.random.default_rng(0)
    for folder, n in (("images", 3), ("corpus", 4), ("foil", 5)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            Image.fromarray((rng.uniform(size=(32, 32)) * 255).astype(np.uint8)).save(tmp_path / folder / f"{i}.png")
    np.savez(tmp_path / "maps.npz", maps=maps)
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 8:20, 10:24] = True
    np.savez(tmp_path / "masks.npz", masks=masks)
    return ["--maps", tmp_path / "maps.npz", "--images", tmp_path / "images", "--corpus", tmp_path / "corpus",
            "--foil", tmp_path / "foil", "--metrics", METRICS, "--metric-options", OPTIONS,
            "--masks", tmp_path / "masks.npz"]


@pytest.mark.slow  # one subprocess: the digits encoder, one compiled program (~10-40 s on 2 shared cores)
def test_evaluate_writes_the_table_with_cis_and_directions(tmp_path):
    maps = np.random.default_rng(1).normal(size=(3, 32, 32)).astype(np.float32)
    proc = run_cli(["evaluate", *_inputs(tmp_path, maps), "--out", tmp_path / "out"], cwd=tmp_path, env=cli_env())
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert ("| Maps | Target | Deletion AUC (↓) | Pixel flipping (↓) | Faithfulness correlation (↑) | Pointing game (↑) |"
            in proc.stdout)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scores.csv", "scores.md", "scores.npz",
                                                                   "scores.png"]
    assert (tmp_path / "out" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = np.load(tmp_path / "out" / "scores.npz")
    assert list(raw["target_names"]) == ["cocoa"]
    with open(tmp_path / "out" / "scores.csv") as f:
        (row,) = list(csv.DictReader(f))
    for metric in METRICS.split(","):
        values = raw[f"maps/{metric}"][:, 0]
        assert values.shape == (3,) and np.all(np.isfinite(values))
        np.testing.assert_allclose(float(row[metric]), values.mean(), rtol=1e-6)
        np.testing.assert_allclose(float(row[f"{metric}_ci95"]), ci95_halfwidth(values), rtol=1e-6)
        assert row[f"{metric}_n"] == "3"
    assert "↑: higher is better, ↓: lower is better" in (tmp_path / "out" / "scores.md").read_text()


@pytest.mark.parametrize("change, message", [
    (dict(maps=np.zeros((3, 32, 32))), "--maps maps: `maps` is all zeros at explicand 0, map 0"),
    (dict(maps=np.ones((3, 16, 16))), "--maps maps: `maps` must have shape"),
    (dict(flags=["--metrics", "deletion,nope"]), "--metrics: unknown name(s) 'nope'"),
    (dict(flags=["--metric-options", '{"deletion": {"steps": 2}}']), "--metric-options: metric 'deletion' has no option"),
    (dict(flags=["--targets", "cocoa", "--maps-key", "other"]), "has no array 'other'"),
    (dict(flags=["--maps"]), "--maps is required"),
    (dict(masks=np.ones((3, 32, 31))), "--masks: `masks` must have shape (N=3, 32, 32)"),
    (dict(masks=np.ones((2, 32, 32))), "--masks: `masks` must have shape (N=3, 32, 32)"),
    (dict(masks=np.concatenate([np.ones((2, 32, 32)), np.zeros((1, 32, 32))])), "--masks: `masks` has 1 empty mask"),
    (dict(masks=np.full((3, 32, 32), 0.5)), "--masks: `masks` must hold only 0/1"),
    (dict(flags=["--metrics", "deletion", "--metric-options", "{}"]), "--masks is read only by pointing_game"),
    (dict(flags=["--masks"]), "--metrics: 'pointing_game' need(s) localisation masks"),
    (dict(maps=np.where(np.eye(32)[None].repeat(3, 0) > 0, np.nan, 1.0)), "--maps maps: `maps` has NaN or inf"),
])
def test_usage_errors_are_one_line_and_write_nothing(tmp_path, capsys, change, message):
    flags = [str(f) for f in _inputs(tmp_path, change.get("maps", np.ones((3, 32, 32), np.float32)))]
    if "masks" in change:
        np.savez(tmp_path / "masks.npz", masks=change["masks"])
    for dropped in ("--maps", "--masks"):  # the flag left out altogether
        if change.get("flags") == [dropped]:
            at = flags.index(dropped)
            flags, change = flags[:at] + flags[at + 2:], {}
    status = cli.main(["evaluate", *flags, *change.get("flags", []), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].startswith("cocoa-jax evaluate: error: ") and message in err[-1], err
    assert not (tmp_path / "out").exists()


def test_explain_attributions_npz_is_read_with_its_targets_explicands_and_baselines(tmp_path):
    """`cocoa-jax explain`'s attributions.npz (one (N, K, H, W[, C]) array per method in
    `method_names`, with target_names / explicands / baselines) is read as it is written."""
    from cocoa_jax.commands import evaluate as command

    rng = np.random.default_rng(2)
    arrays = {"integrated_gradients": rng.normal(size=(2, 2, 32, 32, 1)), "rise": rng.normal(size=(2, 2, 32, 32)),
              "method_names": np.array(["integrated_gradients", "rise"]), "target_names": np.array(["cocoa", "corpus"]),
              "explicands": rng.uniform(size=(2, 32, 32, 1)), "baselines": rng.uniform(size=(2, 32, 32, 1)),
              "scores": rng.normal(size=(2, 2))}
    np.savez(tmp_path / "attributions.npz", **arrays)
    maps, extras = command.read_maps_file(str(tmp_path / "attributions.npz"))
    assert list(maps) == ["integrated_gradients", "rise"] and sorted(extras) == ["baselines", "explicands",
                                                                                 "target_names"]
    np.testing.assert_array_equal(maps["rise"], arrays["rise"])
    only, _ = command.read_maps_file(str(tmp_path / "attributions.npz"), ("rise",))
    assert list(only) == ["rise"]
    with pytest.raises(command.UsageError, match="has no array 'lime'"):
        command.read_maps_file(str(tmp_path / "attributions.npz"), ("lime",))
    np.savez(tmp_path / "other.npz", stuff=np.ones(3))
    with pytest.raises(command.UsageError, match="has no `maps` array and no `method_names`"):
        command.read_maps_file(str(tmp_path / "other.npz"))
