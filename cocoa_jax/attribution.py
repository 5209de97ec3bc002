"""Attribution methods as pure, jit- and vmap-ready JAX functions: the public face.

Every method explains `f`, a function of ONE input `x` (e.g. (H, W, C)) returning a scalar
or a (K,) vector of K targets (`cocoa_jax.targets.stack`); with a vector, results get a
leading K axis and the K targets share every forward pass. Perturbed inputs are evaluated
in batches of at most `batch_size` (the encoder sees whole batches: f is vmapped), so
memory does not grow with `n_steps`, `n_samples` or `n_masks`.

Randomness: each sample i draws from `jax.random.split(key, n)[i]`, so results do not
depend on `batch_size` or on how samples are spread over devices (`mesh`).

Each method lives in its own module of `cocoa_jax.attribution_methods` (shared checks and the
batched gradient sum in `_common`); this module re-exports them all:

  quadrature            Quadrature, QUADRATURE_RULES, quadrature
  vanilla               vanilla_gradients
  integrated_gradients  integrated_gradients, integrated_gradients_adaptive, AdaptiveIG
  smoothgrad            smoothgrad
  gradient_shap         gradient_shap, gradient_shap_draws, GradientShapDraws
  rise                  rise, rise_from_masks, rise_masks, rise_centered_from_moments, masks_from_grids,
                        bilinear_upsample_matrix, rise_cell_size, paper_grid_size, RISE_SAMPLERS,
                        DEFAULT_RISE_BATCH_SIZE
  kernel_shap, lime, occlusion, smooth_ig (perturbation and noise-averaged methods)

Typical use, with parameters as traced arguments (not constants baked into the program):

    @jax.jit
    def explain(params, x, baseline, target):
        f = targets.explain_fn(lambda xb: model.apply(params, xb), target)
        return integrated_gradients(f, x, baseline)
"""
from __future__ import annotations

from cocoa_jax import _checks, sharding  # noqa: F401  (callers read attribution._checks)
from cocoa_jax.attribution_methods import _common
from cocoa_jax.attribution_methods._common import DEFAULT_RISE_BATCH_SIZE
from cocoa_jax.attribution_methods.gradient_shap import GradientShapDraws, gradient_shap, gradient_shap_draws
from cocoa_jax.attribution_methods.integrated_gradients import (AdaptiveIG, integrated_gradients,
                                                                integrated_gradients_adaptive)
from cocoa_jax.attribution_methods.kernel_shap import kernel_shap
from cocoa_jax.attribution_methods.lime import lime
from cocoa_jax.attribution_methods.occlusion import occlusion
from cocoa_jax.attribution_methods.quadrature import QUADRATURE_RULES, Quadrature, quadrature
from cocoa_jax.attribution_methods.rise import (RISE_SAMPLERS, bilinear_upsample_matrix, masks_from_grids,
                                                paper_grid_size, rise, rise_cell_size, rise_centered_from_moments,
                                                rise_from_masks, rise_masks)
from cocoa_jax.attribution_methods.smooth_ig import smooth_integrated_gradients
from cocoa_jax.attribution_methods.smoothgrad import smoothgrad
from cocoa_jax.attribution_methods.vanilla import vanilla_gradients

__all__ = [
    "DEFAULT_RISE_BATCH_SIZE", "QUADRATURE_RULES", "RISE_SAMPLERS",
    "AdaptiveIG", "GradientShapDraws", "Quadrature",
    "bilinear_upsample_matrix", "gradient_shap", "gradient_shap_draws", "integrated_gradients",
    "integrated_gradients_adaptive", "kernel_shap", "lime", "masks_from_grids", "occlusion", "paper_grid_size",
    "quadrature", "rise", "rise_cell_size", "rise_centered_from_moments", "rise_from_masks", "rise_masks",
    "smooth_integrated_gradients", "smoothgrad", "vanilla_gradients",
]

# Shared private helpers under their former names here (new code imports them from
# `cocoa_jax.attribution_methods._common`).
_num_targets = _common.num_targets
_check_input = _common.check_input
_check_baseline = _common.check_baseline
_check_stdev = _common.check_stdev
_check_flag = _common.check_flag
_antithetic_draws = _common.antithetic_draws
_jacobian = _common.jacobian
_sum_gradient_terms = _common.sum_gradient_terms
_broadcast_to_rank = _common.broadcast_to_rank
