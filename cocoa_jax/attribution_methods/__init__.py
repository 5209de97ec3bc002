"""Attribution methods, one per module; `cocoa_jax.attribution` re-exports exactly this face.

Modules: _common (checks, target counting, batched gradient sums), quadrature (IG rules),
vanilla, integrated_gradients, smoothgrad, gradient_shap, rise; perturbation and noise-averaged
methods: _perturbation (shared), kernel_shap, lime, occlusion, smooth_ig; attn_lrp and its rules
(lrp_rules, the custom VJPs the ported ViTs use in LRP mode); lrp and its conv rules
(lrp_conv_rules, the ported ResNets' "relevance" mode); token_drop (ViT token removal for
RISE and Occlusion) and rollout (attention rollout), which need `f` with token access.

Same conventions everywhere: `f` maps ONE input (H, W, C) to a scalar or (K,);
results get a leading K axis for K targets sharing every forward pass; `batch_size` bounds the
inputs per f call; `mesh` splits each batch over devices; sample i draws from
`jax.random.split(key, n)[i]`; pure, jit- and vmap-ready.
"""
from cocoa_jax.attribution_methods._common import DEFAULT_RISE_BATCH_SIZE
from cocoa_jax.attribution_methods._perturbation import superpixel_map
from cocoa_jax.attribution_methods.attn_lrp import attn_lrp
from cocoa_jax.attribution_methods.gradient_shap import GradientShapDraws, gradient_shap, gradient_shap_draws
from cocoa_jax.attribution_methods.integrated_gradients import (AdaptiveIG, integrated_gradients,
                                                                integrated_gradients_adaptive)
from cocoa_jax.attribution_methods.kernel_shap import kernel_shap, kernel_shap_coalitions
from cocoa_jax.attribution_methods.lime import lime, lime_coalitions
from cocoa_jax.attribution_methods.lrp import lrp
from cocoa_jax.attribution_methods.occlusion import occlusion, occlusion_windows
from cocoa_jax.attribution_methods.quadrature import QUADRATURE_RULES, Quadrature, quadrature
from cocoa_jax.attribution_methods.rise import (RISE_SAMPLERS, bilinear_upsample_matrix, masks_from_grids,
                                                paper_grid_size, rise, rise_cell_size, rise_centered_from_moments,
                                                rise_from_masks, rise_masks)
from cocoa_jax.attribution_methods.rollout import rollout
from cocoa_jax.attribution_methods.smooth_ig import smooth_integrated_gradients
from cocoa_jax.attribution_methods.smoothgrad import smoothgrad
from cocoa_jax.attribution_methods.vanilla import vanilla_gradients

__all__ = [
    "DEFAULT_RISE_BATCH_SIZE", "QUADRATURE_RULES", "RISE_SAMPLERS",
    "AdaptiveIG", "GradientShapDraws", "Quadrature",
    "attn_lrp", "bilinear_upsample_matrix", "gradient_shap", "gradient_shap_draws", "integrated_gradients",
    "integrated_gradients_adaptive", "kernel_shap", "kernel_shap_coalitions", "lime", "lime_coalitions", "lrp",
    "masks_from_grids", "occlusion", "occlusion_windows", "paper_grid_size", "quadrature", "rise",
    "rise_cell_size", "rise_centered_from_moments", "rise_from_masks", "rise_masks", "rollout",
    "smooth_integrated_gradients", "smoothgrad", "superpixel_map", "vanilla_gradients",
]
