"""benchmarks.suites.explain_memory: the preview it parses and the row it writes."""
from benchmarks.suites import explain_memory as E
from cocoa_jax import cost


def test_parse_preview_reads_what_cost_prints():
    probe = cost.Probe(batch=4, k=2, forward_s=0.01, gradient_s=0.05, forward_bytes=3 * 1024 ** 3,
                       gradient_bytes=3 * 1024 ** 3, params_bytes=0, compile_s=0.0)
    est = cost.estimate({"rise": cost.Passes(10, 0)}, 2, probe, resident_bytes=1024 ** 3 // 2)
    stderr = "\r".join(cost.preview_lines(est)) + "\ncost: batch 8 perturbed inputs per encoder call\n"
    parsed = E.parse_preview(stderr)
    assert parsed["batch"] == "8"
    assert abs(parsed["expected_peak_gb"] - est.peak_bytes / 1024 ** 3) < 0.051
    assert E.parse_preview("nothing") == {"expected_peak_gb": None, "batch": None}


def test_row_marks_the_goal():
    record = {"arch": "resnet50", "extra": ["--n-masks", "200"], "peak_rss_gb": 4.2, "expected_peak_gb": None,
              "batch": "4", "seconds": 61.4}
    assert E.row(record) == "| resnet50 | --n-masks 200 | 4.2 | - | 4 | 61 | no |"


def test_variants_change_existing_config_keys():
    # A misspelt key would build the default model silently (CLIP ViT-B/32 instead of B/16).
    from cocoa_jax.models import architectures

    for name, (arch, changes) in E.VARIANTS.items():
        assert set(changes) <= set(architectures.spec_of(arch).default_config), name
    assert E.VARIANTS["clip_vit_b16"][1] == {"vision_patch_size": 16, "image_resolution": 224}
