"""cocoa-jax: Contrastive Corpus Attribution (COCOA) in JAX.

    from cocoa_jax import targets, attribution, baselines

The package face: `__all__` lists the public submodules and the names re-exported here, every
attribution function of `cocoa_jax.attribution` (so every method of the table
`cocoa_jax.methods.METHODS`: `cocoa_jax.rise`, `cocoa_jax.lime`, ...), the blurred baseline and the
targets. Submodules: `targets` (explanation targets on representations), `attribution` (the
methods, one function per explicand), `methods` (the method table and `attribute`), `pipeline`
(N explicands on devices: `attribute`, `explain_images`), `baselines`, `metrics` (insertion /
deletion measures), `evaluation` (scoring maps from anywhere with the metric table: `evaluate`),
`models` (Flax encoders and checkpoint loading), `sweep` (the evaluation
protocol), `viz` (figures). Which way to run a method is for whom: docs/api.md.
Importing cocoa_jax never imports torch or tensorflow.
"""
# Loaded on first use (PEP 562), so that `cocoa-jax` can take over Ctrl-C before JAX starts
# (`cocoa_jax.interrupt`) and `cocoa-jax --help` does not load JAX. The attribution names are
# written out (importing `attribution` to read its `__all__` would load JAX); a test keeps them
# equal to `cocoa_jax.attribution.__all__`.
_ATTRIBUTION = (
    "DEFAULT_RISE_BATCH_SIZE", "QUADRATURE_RULES", "RISE_SAMPLERS", "AdaptiveIG", "GradientShapDraws", "Quadrature",
    "attn_lrp", "bilinear_upsample_matrix", "gradient_shap", "gradient_shap_draws", "integrated_gradients",
    "integrated_gradients_adaptive", "kernel_shap", "kernel_shap_coalitions", "lime", "lime_coalitions", "lrp",
    "masks_from_grids", "occlusion", "occlusion_windows", "paper_grid_size", "quadrature", "rise",
    "rise_cell_size", "rise_centered_from_moments", "rise_from_masks", "rise_masks", "rollout",
    "smooth_integrated_gradients", "smoothgrad", "superpixel_map", "vanilla_gradients",
)
_EXPORTS = {
    **{name: "attribution" for name in _ATTRIBUTION}, "gaussian_blur": "baselines",
    **{name: "targets" for name in ("Target", "cocoa", "contrastive_corpus_similarity", "contrastive_label_free",
                                    "corpus", "explain_fn", "foil_size", "label_free", "stack")},
}
_SUBMODULES = ("attribution", "baselines", "evaluation", "methods", "metrics", "models", "pipeline", "sweep",
               "targets", "text", "viz")
__all__ = [*_SUBMODULES, *_EXPORTS]

__version__ = "0.1.0"


def __getattr__(name: str):
    import importlib

    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"cocoa_jax.{_EXPORTS[name]}"), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"cocoa_jax.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"cocoa_jax.{name}":
                raise
            raise AttributeError(f"module 'cocoa_jax' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'cocoa_jax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
