"""cocoa-jax: Contrastive Corpus Attribution (COCOA) in JAX.

    from cocoa_jax import targets, attribution, baselines

Submodules: `targets` (explanation targets on representations), `attribution`
(vanilla gradients, Integrated Gradients, SmoothGrad, GradientSHAP, RISE), `baselines`
(the blurred baseline), `models` (Flax encoders and checkpoint loading).
Importing cocoa_jax never imports torch or tensorflow.
"""
# Loaded on first use (PEP 562), so that `cocoa-jax` can take over Ctrl-C before JAX starts
# (`cocoa_jax.interrupt`) and `cocoa-jax --help` does not load JAX.
_EXPORTS = {
    "gradient_shap": "attribution", "integrated_gradients": "attribution", "rise": "attribution",
    "rise_from_masks": "attribution", "rise_masks": "attribution", "smoothgrad": "attribution",
    "vanilla_gradients": "attribution", "gaussian_blur": "baselines",
    **{name: "targets" for name in ("Target", "cocoa", "contrastive_corpus_similarity", "contrastive_label_free",
                                    "corpus", "explain_fn", "foil_size", "label_free", "stack")},
}
__all__ = ["attribution", "baselines", "targets", *_EXPORTS]

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
