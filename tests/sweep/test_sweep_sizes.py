"""Size studies (corpus_size / foil_size lists): hashes, nested draws, one pass = separate runs."""
from __future__ import annotations

import numpy as np
import pytest

from cocoa_jax import targets as targets_mod
from cocoa_jax.sweep import SweepConfig, digits_reduced, inputs, run_sweep
from cocoa_jax.sweep.store import open_existing

from tests.support.tiny_sweep import tiny_config, tiny_datasets, tiny_encoder

# Hashes of int configs BEFORE size studies existed: existing run directories must stay valid.
from tests.support.run_hashes import OLD_HASHES


def small(**changes) -> SweepConfig:
    base = dict(classes=(1,), explicands_per_class=2, seeds=(0,), methods={"integrated_gradients": {"n_steps": 3}},
                eval_steps=4, explicand_batch=2)
    base.update(changes)
    return tiny_config(**base)


def run(config, run_dir):
    run_sweep(config, str(run_dir), encoder=tiny_encoder(), datasets=tiny_datasets(), progress=False,
              compile_cache=None)
    _, store = open_existing(str(run_dir))
    rows = store.read_rows(warn=False)
    return rows, {uid: store.load_unit(row) for uid, row in rows.items()}


# The corpus-size study (sizes 1 and 5) that two tests read: run once per module.
CORPUS_STUDY = dict(corpus_size=[1, 5])


@pytest.fixture(scope="module")
def corpus_study(tmp_path_factory):
    """(rows, units) of the tiny corpus-size study `small(**CORPUS_STUDY)`."""
    return run(small(**CORPUS_STUDY), tmp_path_factory.mktemp("corpus_study") / "study")


def test_int_configs_keep_their_run_hash_and_lists_get_another():
    assert tiny_config().config_hash() == OLD_HASHES["tiny"]
    assert digits_reduced().config_hash() == OLD_HASHES["digits_reduced"]
    assert SweepConfig().config_hash() == OLD_HASHES["paper"]
    assert tiny_config(randomize_model=False).config_hash() == OLD_HASHES["tiny"]
    assert "randomize_model" not in tiny_config().result_fields()
    assert tiny_config(randomize_model=True).config_hash() != OLD_HASHES["tiny"]
    one = tiny_config(corpus_size=[5])
    assert one.config_hash() != OLD_HASHES["tiny"]  # [5] is a study (nested draws), not the int 5
    assert tiny_config(corpus_size=[5, 1]).config_hash() == tiny_config(corpus_size=[1, 5]).config_hash()
    assert tiny_config(corpus_size=[5, 1]).to_dict()["corpus_size"] == [1, 5]
    config = tiny_config(corpus_size=[1, 5])
    assert config.size_field == "corpus_size" and config.sizes == (1, 5)
    assert config.size_pairs() == [(1, 12), (5, 12)]
    assert config.target_columns() == [("label_free", None), ("contrastive_label_free", None), ("corpus", 0),
                                       ("corpus", 1), ("cocoa", 0), ("cocoa", 1)]
    foil = tiny_config(foil_size=[4, 12])
    assert foil.size_pairs() == [(5, 4), (5, 12)]
    assert [c for c in foil.target_columns() if c[1] is not None] == [
        ("contrastive_label_free", 0), ("contrastive_label_free", 1), ("cocoa", 0), ("cocoa", 1)]
    assert SweepConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("changes,error,match", [
    ({"corpus_size": [1, 5], "foil_size": [4, 8]}, ValueError, "both lists"),
    ({"corpus_size": [1, 1]}, ValueError, "duplicates"),
    ({"corpus_size": [0, 5]}, ValueError, "corpus_size.*positive"),
    ({"foil_size": []}, TypeError, "foil_size"),
    ({"corpus_size": [1, True]}, TypeError, "corpus_size"),
    ({"corpus_size": [1.5]}, TypeError, "corpus_size"),
    ({"randomize_model": "yes"}, TypeError, "randomize_model"),
    ({"randomize_model": True, "probe_dir": "somewhere"}, ValueError, "probe_dir"),
])
def test_bad_size_and_randomize_fields_are_refused(changes, error, match):
    data = tiny_config().to_dict()
    data.update(changes)
    with pytest.raises(error, match=match):
        SweepConfig.from_dict(data)


def _fake_encode(images):
    return np.asarray(images, np.float32).reshape(len(images), -1)[:, :8]


def test_draws_are_nested_and_equal_to_one_size_studies():
    train, test = (tiny_datasets()[k] for k in ("train", "test"))
    study = tiny_config(corpus_size=[1, 3, 5], classes=(0, 2))
    data = inputs.sample_seed(study, 7, [0, 2], train, test, _fake_encode)
    for c in (0, 2):
        draw = data.corpus_draw[c]
        assert len(draw) == 5 and len(set(draw)) == 5 and (train.labels[draw] == c).all()
        for z, size in enumerate(study.sizes):
            np.testing.assert_array_equal(data.corpus_index[c][z], np.sort(draw[:size]))
            np.testing.assert_array_equal(data.corpus_reps[c][z], _fake_encode(train.images(data.corpus_index[c][z])))
        one = inputs.sample_seed(tiny_config(corpus_size=[3], classes=(0, 2)), 7, [0, 2], train, test, _fake_encode)
        np.testing.assert_array_equal(one.corpus_index[c][0], data.corpus_index[c][1])
        np.testing.assert_array_equal(one.explicand_index[c], data.explicand_index[c])
    # The foil is fixed in a corpus study: every size has the same one.
    for z in range(3):
        np.testing.assert_array_equal(data.foil_reps[z], data.foil_reps[0])
    foil_study = tiny_config(foil_size=[4, 12])
    fdata = inputs.sample_seed(foil_study, 7, [0], train, test, _fake_encode)
    assert fdata.foil_reps[0].shape[0] == 4 and fdata.foil_reps[1].shape[0] == 12
    np.testing.assert_array_equal(fdata.foil_reps[0], _fake_encode(train.images(np.sort(fdata.foil_draw[:4]))))
    # A plain int run keeps today's draws (rng.choice, sorted), one entry per list.
    plain = inputs.sample_seed(tiny_config(), 7, [0], train, test, _fake_encode)
    rng = np.random.default_rng([7, 1, 0])
    np.testing.assert_array_equal(plain.corpus_index[0][0],
                                  np.sort(rng.choice(np.flatnonzero(train.labels == 0), 5, replace=False)))
    assert plain.corpus_draw is None


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("field,sizes", [("corpus_size", [1, 5]), ("foil_size", [4, 12])])
def test_one_pass_equals_separate_one_size_runs(tmp_path, request, field, sizes):
    if field == "corpus_size":
        rows, units = request.getfixturevalue("corpus_study")  # the same config, run once
    else:
        rows, units = run(small(**{field: sizes}), tmp_path / "study")
    n_measures = 5
    ig = units["s0_c1_integrated_gradients"]
    assert ig["size_curves"].shape == (2, 2, 4, 2, 5, n_measures)  # N, Z, K, kinds, S+1, M
    assert ig["size_aucs"].shape == (2, 2, 4, 2, n_measures)
    assert ig["size_attributions"].shape == (2, 2, 4, 16, 16)
    assert list(ig["sizes"]) == sizes and str(ig["size_field"]) == field
    np.testing.assert_array_equal(ig["curves"], ig["size_curves"][:, -1])  # plain keys: the largest size
    row = rows["s0_c1_integrated_gradients"]
    assert row["sizes"] == sizes and set(row["auc_by_size"]) == {str(s) for s in sizes}
    assert units["s0_c1_random"]["size_aucs"].shape == (2, 2, 1, 2, n_measures)
    for z, size in enumerate(sizes):
        _, single = run(small(**{field: [size]}), tmp_path / f"single{size}")
        for uid in ("s0_c1_integrated_gradients", "s0_c1_random"):
            for key in ("size_attributions", "size_curves", "size_aucs"):
                np.testing.assert_allclose(units[uid][key][:, z], single[uid][key][:, 0], rtol=1e-5, atol=1e-6,
                                           err_msg=f"{uid} {key} size {size}")
            assert units[uid]["size_majority_class"][z] == single[uid]["size_majority_class"][0]
    # Label-free maps are computed once; the varied targets differ between sizes.
    maps = ig["size_attributions"]
    np.testing.assert_array_equal(maps[:, 0, 0], maps[:, 1, 0])
    varied = 2 if field == "corpus_size" else 1  # corpus / contrastive label-free
    assert not np.allclose(maps[:, 0, varied], maps[:, 1, varied])
    assert not np.allclose(maps[:, 0, 3], maps[:, 1, 3])  # COCOA


def test_each_size_is_evaluated_with_its_own_corpus(corpus_study):
    """Deletion step 0 is the intact explicand: its ccs must be COCOA of THAT size's corpus and foil,
    recomputed here from the stored draw, for every target's curve (label-free ones included)."""
    config = small(**CORPUS_STUDY)
    _, units = corpus_study
    ig = units["s0_c1_integrated_gradients"]
    encoder, data = tiny_encoder(), tiny_datasets()
    data_seed = inputs.sample_seed(config, 0, [1], data["train"], data["test"],
                                   lambda x: np.asarray(encoder.encode_fn(encoder.params, x)))
    reps = np.asarray(encoder.encode_fn(encoder.params, data["test"].images(ig["explicand_index"])))
    ccs_col = 0  # MEASURE_NAMES[0] == "ccs"
    for z, size in enumerate(config.sizes):
        corpus = np.asarray(encoder.encode_fn(encoder.params, data["train"].images(np.sort(ig["corpus_draw"][:size]))))
        expected = np.asarray(targets_mod.cocoa(corpus, data_seed.foil_reps[z])(reps))  # (N,)
        for k in range(4):
            np.testing.assert_allclose(ig["size_curves"][:, z, k, 1, 0, ccs_col], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(ig["size_curves"][:, 0, 0, 1, 0, ccs_col], ig["size_curves"][:, 1, 0, 1, 0, ccs_col])


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_report_writes_the_sensitivity_figure_table_and_gini(tmp_path):
    from cocoa_jax.sparsity import gini_index
    from cocoa_jax.sweep import report, studies

    study_dir = tmp_path / "study"
    _, units = run(small(**CORPUS_STUDY, seeds=(0, 1)), study_dir)
    paths = report.write_report(str(study_dir))
    assert paths["sensitivity_plot"].endswith("sensitivity_corpus.png")
    with open(paths["sensitivity_plot"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(paths["markdown"]).read()
    assert "Corpus size sensitivity" in text and "corpus 1 | corpus 5" in text and "Gini" in text
    # The table's cell = mean over seeds of each seed's mean AUC at that size (one class here).
    _, sizes, tables = studies.sensitivity_table(str(study_dir), ("ccs",))
    measure, kind, body = tables[0]
    cells = dict(body)[("integrated_gradients", "cocoa")]
    for z in range(2):
        per_seed = [units[f"s{s}_c1_integrated_gradients"]["size_aucs"][:, z, 3, 0, 0].mean() for s in (0, 1)]
        assert cells[z][0] == pytest.approx(np.mean(per_seed), rel=1e-9)
        assert cells[z][1] == pytest.approx(report.ci95_halfwidth(per_seed), rel=1e-9)
    csv_lines = open(paths["sensitivity_csv"]).read().strip().splitlines()
    assert csv_lines[0].startswith("size_field,size,method") and any(",5,random,random,ccs,deletion," in l
                                                                   for l in csv_lines)
    # Gini on the stored (largest-size) channel-mean maps: of |a| by default, the official
    # raw-value formula on request.
    maps = units["s1_c1_integrated_gradients"]["attributions"][:, 2]  # corpus target
    for absolute in (True, False):
        gini = studies.gini_per_seed(str(study_dir), absolute=absolute)
        expected = np.mean([float(gini_index(np.asarray(m, np.float64), absolute=absolute)) for m in maps])
        # float32 in two programs: equal to rounding (1e-6), not bit for bit
        assert gini[("integrated_gradients", "corpus")][1] == pytest.approx(expected, rel=1e-6)
