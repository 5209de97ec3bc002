"""Work per measurement of `benchmarks.suites.rates` and the cells measured, per model.

Small counts for the 224 px models on CPU: rates are what is compared, and every figure is work
done / wall time of a warm call. `--scale N` multiplies every count and batch size (accelerators).
"""
from __future__ import annotations

SCALED = ("rise_masks", "rise_batch", "ig_steps", "ig_batch", "gs_samples", "insdel_batch")


def sizes(quick: bool, scale: int = 1) -> dict:
    """`table(quick)` with every count and batch multiplied by `scale` (never for --quick)."""
    scale = 1 if quick else scale
    out = table(quick)
    if scale != 1:
        out = {name: {k: v * scale if k in SCALED else v for k, v in sz.items()} for name, sz in out.items()}
    return out


def table(quick: bool) -> dict:
    """{model: sizes}; `cells` lists the (method, K, E) triples measured: K targets, E explicands."""
    if quick:
        tiny = dict(rise_masks=40, rise_batch=20, grid=4, ig_steps=8, ig_batch=8, gs_samples=8, insdel_steps=8,
                    insdel_batch=18, explicands=2,
                    cells=[("rise", 1, 1), ("integrated_gradients", 4, 2), ("gradient_shap", 1, 1), ("insdel", 4, 1)])
        return {"tiny_resnet": tiny}
    big_cells = [("rise", 1, 1), ("rise", 4, 1), ("integrated_gradients", 1, 1), ("integrated_gradients", 4, 1),
                 ("gradient_shap", 1, 1), ("insdel", 1, 1)]
    vit_cells = [(m, k, 1) for m in ("rise", "integrated_gradients") for k in (1, 4)]
    return {
        "resnet18_cifar": dict(rise_masks=200, rise_batch=100, grid=4, ig_steps=20, ig_batch=20, gs_samples=20,
                               insdel_steps=50, insdel_batch=102, explicands=4,
                               cells=[(m, k, e) for m in ("rise", "integrated_gradients") for k in (1, 4) for e in (1, 4)]
                               + [("gradient_shap", 1, 1), ("gradient_shap", 4, 1), ("insdel", 1, 1),
                                  ("insdel", 4, 1)]),
        "resnet50": dict(rise_masks=32, rise_batch=16, grid=7, ig_steps=8, ig_batch=8, gs_samples=8,
                         insdel_steps=15, insdel_batch=16, explicands=2, cells=big_cells),
        "clip_vit_b32": dict(rise_masks=32, rise_batch=16, grid=7, ig_steps=8, ig_batch=8, gs_samples=8,
                             insdel_steps=15, insdel_batch=16, explicands=2, cells=big_cells),
        # Converted pairs (the same weights on both sides): RISE and IG, K=1 and K=4, one explicand.
        # Fewer masks and steps than ViT-B/32: ViT-B/16 is ~4x its FLOPs per image, ViT-S/14 ~1x.
        "dinov2_vits14": dict(rise_masks=16, rise_batch=8, grid=7, ig_steps=8, ig_batch=8, gs_samples=8,
                              insdel_steps=15, insdel_batch=16, explicands=2, cells=vit_cells),
        "clip_vit_b16": dict(rise_masks=16, rise_batch=8, grid=7, ig_steps=4, ig_batch=4, gs_samples=4,
                             insdel_steps=15, insdel_batch=16, explicands=2, cells=vit_cells),
    }
