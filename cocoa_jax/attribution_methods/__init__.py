"""Attribution methods, one per module; `cocoa_jax.attribution` is the public face of them all.

_common (checks, target counting, batched gradient sums), quadrature (IG rules), vanilla,
integrated_gradients, smoothgrad, gradient_shap, rise; perturbation and noise-averaged methods:
_perturbation (shared), kernel_shap, lime, occlusion, smooth_ig (re-exported below).

Same conventions everywhere: `f` maps ONE input (H, W, C) to a scalar or (K,);
results get a leading K axis for K targets sharing every forward pass; `batch_size` bounds the
inputs per f call; `mesh` splits each batch over devices; sample i draws from
`jax.random.split(key, n)[i]`; pure, jit- and vmap-ready.
"""
from cocoa_jax.attribution_methods._perturbation import superpixel_map
from cocoa_jax.attribution_methods.kernel_shap import kernel_shap, kernel_shap_coalitions
from cocoa_jax.attribution_methods.lime import lime, lime_coalitions
from cocoa_jax.attribution_methods.occlusion import occlusion, occlusion_windows
from cocoa_jax.attribution_methods.smooth_ig import smooth_integrated_gradients

__all__ = ["kernel_shap", "kernel_shap_coalitions", "lime", "lime_coalitions", "occlusion", "occlusion_windows",
           "smooth_integrated_gradients", "superpixel_map"]
