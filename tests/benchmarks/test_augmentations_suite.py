"""benchmarks/suites/augmentations.py: the summary's per-seed means and t-intervals."""
import numpy as np
import pytest


def test_benchmark_summary_means_and_intervals():
    """benchmarks.suites.augmentations.summarize on hand-built shares: per-seed means, t-intervals (SciPy)."""
    from scipy import stats

    from benchmarks.suites import augmentations as bench

    rng = np.random.default_rng(0)
    records = []
    for seed in range(4):
        rec = {"seed": seed}
        for aug in ("crop", "erase"):
            rec[aug] = {"chance": rng.uniform(0.2, 0.9, 5).tolist(),
                        "share": {m: rng.uniform(0, 1, (5, 2)).tolist() for m in bench.METHOD_NAMES}}
        records.append(rec)
    rows = bench.summarize({"records": records})
    row = next(r for r in rows if r["augmentation"] == "erase" and r["method"] == "RISE")
    per_seed = np.array([np.mean(np.asarray(r["erase"]["share"]["rise"])[:, 0]) for r in records])
    half = stats.t.ppf(0.975, 3) * per_seed.std(ddof=1) / np.sqrt(4)
    assert row["cocoa"][0] == pytest.approx(per_seed.mean()) and row["cocoa"][1] == pytest.approx(half, rel=1e-3)
    diffs = [np.mean(np.subtract(*np.asarray(r["erase"]["share"]["rise"]).T)) for r in records]
    assert row["difference"][0] == pytest.approx(np.mean(diffs))
    assert len(rows) == 6 and "| erase | RISE |" in bench.markdown(rows)

