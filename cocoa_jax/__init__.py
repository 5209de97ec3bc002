"""cocoa-jax: Contrastive Corpus Attribution (COCOA) in JAX.

    from cocoa_jax import targets, attribution, baselines

Submodules: `targets` (explanation targets on representations), `attribution`
(vanilla gradients, Integrated Gradients, SmoothGrad, GradientSHAP, RISE), `baselines`
(the blurred baseline), `models` (Flax encoders and checkpoint loading).
Importing cocoa_jax never imports torch or tensorflow.
"""
from cocoa_jax import attribution, baselines, targets
from cocoa_jax.attribution import (
    gradient_shap,
    integrated_gradients,
    rise,
    rise_from_masks,
    rise_masks,
    smoothgrad,
    vanilla_gradients,
)
from cocoa_jax.baselines import gaussian_blur
from cocoa_jax.targets import (
    Target,
    cocoa,
    contrastive_corpus_similarity,
    contrastive_label_free,
    corpus,
    explain_fn,
    foil_size,
    label_free,
    stack,
)

__version__ = "0.1.0"
