"""Attribution methods as pure, jit- and vmap-ready JAX functions: the public face.

Every method explains `f`, a function of ONE input `x` (e.g. (H, W, C)) returning a scalar
or a (K,) vector of K targets (`cocoa_jax.targets.stack`); with a vector, results get a
leading K axis and the K targets share every forward pass. Perturbed inputs are evaluated
in batches of at most `batch_size` (the encoder sees whole batches: f is vmapped), so
memory does not grow with `n_steps`, `n_samples` or `n_masks`.

Randomness: each sample i draws from `jax.random.split(key, n)[i]`, so results do not
depend on `batch_size` or on how samples are spread over devices (`mesh`).

Each method lives in its own module of `cocoa_jax.attribution_methods` (shared checks and the
batched gradient sum in `_common`); this module is that package's face, the same names
(`__all__`), and every method of the table `cocoa_jax.methods.METHODS` is here and at `cocoa_jax`:

  quadrature            Quadrature, QUADRATURE_RULES, quadrature
  vanilla               vanilla_gradients
  integrated_gradients  integrated_gradients, integrated_gradients_adaptive, AdaptiveIG
  smoothgrad            smoothgrad
  gradient_shap         gradient_shap, gradient_shap_draws, GradientShapDraws
  rise                  rise, rise_from_masks, rise_masks, rise_centered_from_moments, masks_from_grids,
                        bilinear_upsample_matrix, rise_cell_size, paper_grid_size, RISE_SAMPLERS,
                        DEFAULT_RISE_BATCH_SIZE
  kernel_shap           kernel_shap, kernel_shap_coalitions, superpixel_map
  lime                  lime, lime_coalitions
  occlusion             occlusion, occlusion_windows
  smooth_ig             smooth_integrated_gradients
  attn_lrp              attn_lrp (f from a ViT in LRP mode; rules in attribution_methods.lrp_rules)
  lrp                   lrp (f from a ResNet in relevance mode; rules in attribution_methods.lrp_conv_rules)
  rollout               rollout (f a token_drop.TokenScorer: a ViT's attention maps)

Typical use, with parameters as traced arguments (not constants baked into the program):

    @jax.jit
    def explain(params, x, baseline, target):
        f = targets.explain_fn(lambda xb: model.apply(params, xb), target)
        return integrated_gradients(f, x, baseline)
"""
from __future__ import annotations

from cocoa_jax.attribution_methods import *  # noqa: F403  (the face: exactly the package's names)
from cocoa_jax.attribution_methods import __all__  # noqa: F401
