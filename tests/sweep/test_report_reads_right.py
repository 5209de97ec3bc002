"""report.md reads the right way: each measure's own direction (arrows, bold "best"), a header
that says what ran, where and when, and a Gini of |a| (the official raw-value formula on request).

One tiny real sweep (module-scoped) serves every test; expectations are recomputed here from the
unit files (NumPy float64), with the directions written out independently of `metrics.MEASURES`.
"""
from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest

import cocoa_jax
from cocoa_jax.sweep import report
from cocoa_jax.sweep.store import open_existing

from tests.support.tiny_sweep import tiny_config, tiny_encoder

pytestmark = pytest.mark.slow  # one whole tiny sweep (~30 s on 2 shared cores), shared by the session (conftest)

# Written out here, not read from the measure table: the paper's similarity / probability measures
# rise with inserted evidence; representation shift is a distance from the explicand.
EXPECTED_BETTER = {"ccs": ("higher", "lower"), "ccs_resampled_foil": ("higher", "lower"),
                   "corpus_majority_prob": ("higher", "lower"), "explicand_pred_prob": ("higher", "lower"),
                   "rep_shift": ("lower", "higher")}
ARROW = {"higher": "↑", "lower": "↓"}
CONFIG = dict(methods={"integrated_gradients": {"n_steps": 4}, "rise": {"n_masks": 24}})


@pytest.fixture(scope="module")
def run_dir(shared_sweep):
    # Run once per session (conftest): this config is test_sweep's tiny run, which other files read too.
    return str(shared_sweep(tiny_config(**CONFIG))[0])


@pytest.fixture(scope="module")
def written(run_dir):
    paths = report.write_report(run_dir)
    with open(paths["markdown"]) as fh:
        return paths, fh.read()


def _units(run_dir):
    _, store = open_existing(run_dir)
    return {row["unit"]: (row, store.load_unit(row)) for row in store.read_rows(warn=False).values()}


def _np_means(run_dir, measure, kind):
    """{(method, target): mean over seeds of each seed's mean AUC over all its explicands}, from the npz."""
    per_seed = {}
    for row, arrays in _units(run_dir).values():
        m, k = row["measures"].index(measure), ("insertion", "deletion").index(kind)
        for t, target in enumerate(row["targets"]):
            per_seed.setdefault((row["method"], target), {}).setdefault(row["seed"], []).append(
                np.asarray(arrays["aucs"][:, t, k, m], np.float64))
    return {key: float(np.mean([np.concatenate(v).mean() for v in seeds.values()]))
            for key, seeds in per_seed.items()}


def _table_rows(markdown, measure_title):
    """The body rows (lists of cells) of the first table whose header names `measure_title`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Method") and measure_title + " ins." in line)
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split("|")])
    return header, body


@pytest.mark.parametrize("measure", ["rep_shift", "ccs", "corpus_majority_prob"])
def test_arrows_and_best_marks_follow_each_measures_direction(run_dir, written, measure):
    _, markdown = written
    title = report.MEASURE_TITLES[measure]
    header, body = _table_rows(markdown, title)
    ins, dele = EXPECTED_BETTER[measure]
    assert header[2:] == [f"{title} ins. ({ARROW[ins]})", f"{title} del. ({ARROW[dele]})"]
    if measure == "rep_shift":
        assert header[2:] == [f"{title} ins. (↓)", f"{title} del. (↑)"]
    names = {v: k for k, v in report.METHOD_TITLES.items()}
    targets = {v: k for k, v in report.TARGET_TITLES.items() if k != "random"}
    for column, kind, better in ((2, "insertion", ins), (3, "deletion", dele)):
        means = _np_means(run_dir, measure, kind)
        pick = max if better == "higher" else min
        best = pick(means.values())
        bold = set()
        for cells in body:
            key = ("random", "random") if cells[0] == "Random" else (names[cells[0]], targets[cells[1]])
            shown = float(re.sub(r"\*\*", "", cells[column]).split()[0])
            assert shown == pytest.approx(means[key], abs=5e-4)
            if cells[column].startswith("**"):
                bold.add(key)
        assert bold == {key for key, v in means.items() if v == best}
        assert len(bold) >= 1


def test_header_states_every_field_of_the_run(run_dir, written):
    _, markdown = written
    assert markdown.startswith("# Sweep report\n")
    fields = dict(re.findall(r"^- \*\*(.+?)\*\*: (.*)$", markdown, flags=re.M))
    assert list(fields) == ["Encoder", "Architecture", "Weights hash", "Dataset", "Methods", "Targets", "Seeds",
                            "Classes", "Sizes", "Evaluation", "Run hash", "Date", "Versions",
                            "Devices and processes"]
    with open(os.path.join(run_dir, "config.json")) as fh:
        stored = json.load(fh)
    config, identity, env = stored["config"], stored["identity"], stored["environment"]
    assert "`custom:tiny`" in fields["Encoder"] and "`custom:tiny`" in fields["Architecture"]
    from cocoa_jax.sweep.inputs import fingerprint_params

    assert f"`{fingerprint_params(tiny_encoder().params)}`" in fields["Weights hash"]
    assert identity["encoder"] == fingerprint_params(tiny_encoder().params)
    assert "`custom:blobs`" in fields["Dataset"] and f"`{identity['data']}`" in fields["Dataset"]
    assert "corpus split `train`" in fields["Dataset"] and "explicand split `test`" in fields["Dataset"]
    assert "`integrated_gradients`: method=gausslegendre, n_steps=4" in fields["Methods"]
    assert "`rise`:" in fields["Methods"] and "n_masks=24" in fields["Methods"]
    assert "random attribution" in fields["Methods"]
    for target in config["targets"]:
        assert f"(`{target}`)" in fields["Targets"]
    assert fields["Seeds"] == "0, 1 (2)"
    assert fields["Classes"] == "0, 1 (2)"
    assert fields["Sizes"] == "corpus 5, foil 12, 3 explicands per class, images 16x16 px"
    assert fields["Evaluation"].startswith("8 insertion/deletion steps, superpixel 1")
    assert "kernel 5, sigma 1.0" in fields["Evaluation"]
    assert fields["Run hash"] == f"`{stored['config_hash']}`; 12 of 12 units finished"
    assert fields["Date"] == f"run started {env['created_utc']} UTC"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", env["created_utc"])
    assert report.write_report(run_dir, str(run_dir) + "_again")  # the same run: the same report.md
    with open(os.path.join(str(run_dir) + "_again", "report.md")) as fh:
        assert fh.read() == markdown
    assert (f"cocoa-jax {cocoa_jax.__version__}, jax {jax.__version__}" in fields["Versions"]
            and env["jax"] == jax.__version__ and env["cocoa_jax"] == cocoa_jax.__version__)
    devices = jax.devices()
    assert env["devices"] == len(devices) and env["platform"] == devices[0].platform
    assert env["process_count"] == jax.process_count() == 1
    assert fields["Devices and processes"].startswith(f"{len(devices)} {devices[0].platform} device(s)")
    assert "1 process(es) at the start; units written by process(es) 0" in fields["Devices and processes"]


def test_header_of_a_run_that_predates_the_record(run_dir, tmp_path):
    """Runs written before the environment was recorded still report, saying what is unknown."""
    import shutil

    old = str(tmp_path / "old")
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("report"))
    with open(os.path.join(old, "config.json")) as fh:
        stored = json.load(fh)
    del stored["environment"]
    with open(os.path.join(old, "config.json"), "w") as fh:
        json.dump(stored, fh)
    fields = dict(report.header_fields(old))
    assert "not recorded" in fields["Date"] and "not recorded" in fields["Versions"]
    assert "not recorded" in fields["Devices and processes"]


def _gini_abs_np(a):
    """Gini of |a| (Hurley & Rickard), float64, term by term."""
    a = np.sort(np.abs(np.asarray(a, np.float64).ravel()))
    n, total = a.size, a.sum()
    return 0.0 if total == 0 else 1.0 - 2.0 * sum((a[k] / total) * (n - (k + 1) + 0.5) / n for k in range(n))


def _gini_official_np(a):
    """The official compute_gini_index: raw values sorted ascending, signed sum in the denominator."""
    a = np.sort(np.asarray(a, np.float64).ravel())
    n = a.size
    return 0.0 if a.sum() == 0 else 2.0 * np.sum(np.arange(1, n + 1) * a) / (n * a.sum()) - (n + 1) / n


def test_gini_table_is_of_absolute_values_by_default(run_dir, written):
    from cocoa_jax.sweep import studies

    _, markdown = written
    units = _units(run_dir)
    expected = {}
    for row, arrays in units.values():
        for t, target in enumerate(row["targets"]):
            expected.setdefault((row["method"], target), {}).setdefault(row["seed"], []).extend(
                _gini_abs_np(m) for m in arrays["attributions"][:, t])
    got = studies.gini_per_seed(run_dir)
    for key, seeds in expected.items():
        for seed, values in seeds.items():
            assert got[key][seed] == pytest.approx(np.mean(values), rel=1e-6)  # float32 inside
            assert 0.0 <= got[key][seed] < 1.0
    # IG maps are signed: the |a| Gini of every one lies in [0, 1); the raw formula need not.
    ig = units["s0_c0_integrated_gradients"][1]["attributions"]
    assert (ig < 0).any() and (ig > 0).any()
    lines = markdown.split("### Sparsity: Gini index")[1].strip().splitlines()
    assert lines[0] == "| Method | Target | Gini of \\|a\\| (higher: sparser) |"
    cells = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line.split("|")[3].split()[0]
             for line in lines[2:] if line.startswith("|")}
    cocoa = np.mean([np.mean(v) for v in expected[("integrated_gradients", "cocoa")].values()])
    assert float(cells[("IG", "COCOA")]) == pytest.approx(cocoa, abs=5e-4)


def test_gini_official_formula_stays_available(run_dir, tmp_path):
    from cocoa_jax.sweep import studies

    official = studies.gini_per_seed(run_dir, absolute=False)
    row, arrays = _units(run_dir)["s1_c1_integrated_gradients"]
    k = row["targets"].index("cocoa")
    per_class = {c: [_gini_official_np(m) for m in _units(run_dir)[f"s1_c{c}_integrated_gradients"][1]
                     ["attributions"][:, k]] for c in (0, 1)}
    assert official[("integrated_gradients", "cocoa")][1] == pytest.approx(
        np.mean(per_class[0] + per_class[1]), rel=1e-5, abs=1e-6)
    paths = report.write_report(run_dir, str(tmp_path / "official"), gini="official")
    with open(paths["markdown"]) as fh:
        text = fh.read()
    assert "| Method | Target | Gini, official raw-value formula |" in text
    with pytest.raises(ValueError, match="gini must be one of absolute, official"):
        report.write_report(run_dir, str(tmp_path / "bad"), gini="raw")


def test_curves_panels_state_each_measures_direction(run_dir):
    fig = report.curves_figure(run_dir, ("ccs", "rep_shift"))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["Insertion (higher area is better)", "Deletion (lower area is better)",
                      "Insertion (lower area is better)", "Deletion (higher area is better)"]


def test_report_command_writes_the_header_and_takes_gini_official(run_dir, tmp_path, capsys):
    from cocoa_jax import cli

    out = tmp_path / "cli"
    assert cli.main(["report", run_dir, "--out", str(out), "--measures", "rep_shift", "--gini", "official"]) == 0
    printed = capsys.readouterr().out
    assert "representation shift ins. (↓) | representation shift del. (↑)" in printed
    assert "for it a LOWER insertion and a HIGHER deletion AUC are better" in printed
    text = (out / "report.md").read_text()
    assert text.startswith("# Sweep report\n") and "- **Run hash**: `" in text
    assert "Gini, official raw-value formula" in text
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", run_dir, "--gini", "raw"])
    assert exit_info.value.code == 2
    assert "--gini: invalid choice: 'raw'" in capsys.readouterr().err
