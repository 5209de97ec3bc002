"""The compiled programs of a sweep for one encoder, config and device mesh. They hold no state
that changes: the encoder parameters are an argument of every call (the trained ones, a seed's
randomised ones or a cascade step's), so a result never depends on the order of calls.

Three programs, each sharded over the explicand axis of a mesh (`cocoa_jax.meshes.ExplicandMap`):

* encode: images (B, H, W, C) -> representations (B, D) (corpora, foils, explicands, probe data),
  `explicand_program.encode` with the sweep's chunking (`DeviceChunks(eval_batch, devices)`);
* attribute (one per method): the explicand program (`cocoa_jax.explicand_program`) with the
  config's blur as baseline rule, stacked target directions (N, K, D) and keys (N,) ->
  attributions (N, K, H, W[, C]); the K targets share every encoder pass; keys follow
  `unit_keys`;
* evaluate: explicands, attributions and the per-explicand measure context -> insertion/deletion
  curves and AUCs of every measure (`cocoa_jax.metrics.insertion_deletion_batch`, one encoder pass
  per ablation step for all measures and all K attributions), plus the maps that are stored.

Attributions stay on the devices between the two programs (no host round trip); they are two
programs, not one, so every unit records its attribution and evaluation time separately.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import explicand_program, meshes, metrics
from cocoa_jax import targets as targets_mod
from cocoa_jax.sweep.config import SweepConfig
from cocoa_jax.sweep.inputs import EncoderSpec


class SweepPrograms:
    """Compiled encode / attribute / evaluate programs for one encoder, config and mesh.

    Args:
      spec: the encoder (`params`, `encode_fn(params, x)`, `input_shape`).
      config: the sweep config (method options, targets, evaluation settings, batch sizes).
      mesh: a 1-D mesh over this process's devices (`meshes.make_mesh(jax.local_devices())`).

    Attributes:
      trained: the encoder's trained parameters, replicated over the mesh.
      baseline: the baseline rule, `GaussianBlur(config.blur_kernel_size, config.blur_sigma)`.
      chunks: the encode chunking, `DeviceChunks(config.eval_batch, devices)`.
    """

    def __init__(self, spec: EncoderSpec, config: SweepConfig, mesh: jax.sharding.Mesh):
        self.spec, self.config, self.mesh = spec, config, mesh
        self.num_devices = int(mesh.devices.size)
        self.image_shape = tuple(spec.input_shape)
        self.trained = jax.device_put(spec.params, meshes.replicated_sharding(mesh))
        self.cosine = config.similarity == "cosine"
        self.baseline = explicand_program.GaussianBlur(config.blur_kernel_size, float(config.blur_sigma))
        self.chunks = explicand_program.DeviceChunks(config.eval_batch, self.num_devices)
        self._evaluate = meshes.ExplicandMap(self._evaluate_batch, mesh, in_axes=(None, None, 0, 0, 0, 0, 0, 0),
                                               vectorized=True)
        if config.eval_removal == "token_drop" and spec.token_access is None:
            raise ValueError("config field `eval_removal` 'token_drop' needs a ViT encoder (token access); this "
                             "encoder has none: use 'blend'")

    def eval_fractions(self) -> np.ndarray:
        """(eval_steps + 1,) fractions of the features removed at each step: pixels (or superpixels) when
        blending, patches with `eval_removal` 'token_drop'."""
        config = self.config
        if config.eval_removal == "token_drop":
            from cocoa_jax.attribution_methods import token_drop

            grid = token_drop.patch_grid(self.image_shape[:2], self.spec.token_access.patch_size)
            return metrics.feature_fractions(grid[0] * grid[1], config.eval_steps)
        return metrics.feature_fractions((self.image_shape[0] // config.eval_superpixel)
                                         * (self.image_shape[1] // config.eval_superpixel), config.eval_steps)

    def seed_params(self, seed: int):
        """The parameters a seed's units run on: with `randomize_model`, the randomised encoder
        `randomize_params(trained, jax.random.key(seed))` (computed on each call: callers keep
        it), otherwise the trained one. The programs take them as an argument: nothing is
        recompiled."""
        if not self.config.randomize_model:
            return self.trained
        from cocoa_jax.models.randomize import randomize_params

        params = randomize_params(self.spec.params, jax.random.key(seed))
        return jax.device_put(params, meshes.replicated_sharding(self.mesh))

    # -- encode --------------------------------------------------------------------------

    def encode(self, params, images: np.ndarray) -> np.ndarray:
        """Representations (N, D) float32 of NumPy images (N, H, W, C) under `params`."""
        return explicand_program.encode(self.spec.encode_fn, params, images, self.chunks, mesh=self.mesh)

    # -- attribute -----------------------------------------------------------------------

    def attribute_program(self, method: str) -> meshes.ExplicandMap:
        """(params, xs (N,H,W,C), directions (N,K,D), keys (N,)) -> sharded attributions; for a
        reference map (`config.reference_of`), its one map per explicand as K = 1."""
        reference = self.config.reference_of(method)
        if reference is not None:
            return reference_program(reference, self.mesh)
        normalize = tuple([self.cosine] * len(self.config.target_columns()))
        return explicand_program.attribution_program(
            self.spec.encode_fn, method, explicand_program.hashable(self.config.method_options(method)), normalize,
            batch_size=self.config.attribution_batch, baseline=self.baseline, mesh=self.mesh, gather=False)

    def attribute(self, params, method: str, xs, directions, keys):
        return self.attribute_program(method)(params, xs, directions, keys)

    # -- evaluate ------------------------------------------------------------------------

    def _evaluate_batch(self, params, probe, xs, attributions, ccs_directions, majority_class, explicand_class,
                        explicand_reps):
        """The evaluation of a batch: see `evaluate`."""
        config = self.config
        n = xs.shape[0]
        if config.size_field is not None:
            return self._evaluate_sizes(params, probe, xs, attributions, ccs_directions, majority_class,
                                        explicand_class, explicand_reps)
        context = dict(
            ccs=targets_mod.Target(ccs_directions[:, 0], self.cosine),
            ccs_resampled_foil=targets_mod.Target(ccs_directions[:, 1], self.cosine),
            probe=jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (n,) + leaf.shape), probe),
            corpus_majority_class=majority_class, explicand_class=explicand_class, explicand_rep=explicand_reps)
        measures = metrics.make_measures(metrics.MEASURE_NAMES, **context)
        return self._curves(params, measures, xs, attributions)

    def _evaluate_sizes(self, params, probe, xs, attributions, ccs_directions, majority_class, explicand_class,
                        explicand_reps):
        """A size study: the measures of every size from the same ablation passes (`StackedMeasures`);
        ccs_directions (N, Z, 2, D), majority_class (N, Z); curves (N, K, 2, S+1, Z * M)."""
        n, z = majority_class.shape
        context = dict(
            ccs=targets_mod.Target(ccs_directions[:, :, 0], self.cosine),
            ccs_resampled_foil=targets_mod.Target(ccs_directions[:, :, 1], self.cosine),
            probe=jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (n, z) + leaf.shape), probe),
            corpus_majority_class=majority_class,
            explicand_class=jnp.broadcast_to(explicand_class[:, None], (n, z)),
            explicand_rep=jnp.broadcast_to(explicand_reps[:, None], (n, z) + explicand_reps.shape[1:]))
        measures = metrics.StackedMeasures(metrics.make_measures(metrics.MEASURE_NAMES, **context))
        return self._curves(params, measures, xs, attributions)

    def _curves(self, params, measures, xs, attributions):
        config = self.config
        tokens = None
        if config.eval_removal == "token_drop":
            from cocoa_jax.attribution_methods import token_drop

            tokens = token_drop.kept_encoder(self.spec.token_access, params)
        curves, aucs = metrics.insertion_deletion_batch(
            lambda batch: self.spec.encode_fn(params, batch), measures, xs, jax.vmap(self.baseline)(xs), attributions,
            n_steps=config.eval_steps, absolute=config.eval_absolute, superpixel=config.eval_superpixel,
            batch_size=config.eval_batch, removal=config.eval_removal, tokens=tokens)
        stored = {"attributions": attributions}
        if attributions.ndim == 5:  # (N, K, H, W, C): store channel means (what rankings read)
            stored = {"attributions": jnp.mean(attributions, axis=-1)}
            if config.eval_absolute:
                stored["attributions_abs"] = jnp.mean(jnp.abs(attributions), axis=-1)
        return curves, aucs, stored

    def evaluate(self, params, probe, xs, attributions, ccs_directions, majority_class, explicand_class,
                 explicand_reps):
        """Curves (N, K, 2, S+1, M), AUCs (N, K, 2, M) of `metrics.MEASURE_NAMES`, stored maps.

        Args:
          params: the encoder parameters (`trained`, `seed_params(seed)`).
          probe: the linear probe (shared). xs: (N, H, W, C). attributions: (N, K, H, W[, C]).
          ccs_directions: (N, 2, D) COCOA directions with the unit's foil and a resampled foil.
          majority_class, explicand_class: (N,) int. explicand_reps: (N, D).
          A size study (`config.size_field`): ccs_directions (N, Z, 2, D) and majority_class (N, Z),
          one per size; the last axis of curves and AUCs is then (Z * M), size-major.
        """
        return self._evaluate(params, probe, xs, attributions, ccs_directions, majority_class,
                              explicand_class, explicand_reps)


def local_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A mesh over this process's first `num_devices` devices (None: all of them)."""
    devices = jax.local_devices()
    if num_devices is not None:
        if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices <= 0:
            raise ValueError(f"`devices` must be a positive integer, got {num_devices!r}")
        if num_devices > len(devices):
            raise ValueError(f"`devices`={num_devices} but this process has only {len(devices)} device(s)")
        devices = devices[:num_devices]
    return meshes.make_mesh(devices)


def unit_keys(seed: int, class_id: int, method: str, n: int) -> jax.Array:
    """The (n,) keys of a unit's explicands: the explicand program's key rule
    (`explicand_program.method_keys`) from the unit's root key, fold_in(key(seed), class_id)."""
    return explicand_program.method_keys(jax.random.fold_in(jax.random.key(seed), class_id), method, n)


@functools.lru_cache(maxsize=None)
def reference_program(reference: metrics.ReferenceMap, mesh: jax.sharding.Mesh) -> meshes.ExplicandMap:
    """(params, xs (N,H,W,C), directions (N,K,D), keys (N,)) -> (N, 1, H, W) maps of a reference map
    generator (`metrics.ReferenceMap`), one per explicand from its key, left sharded; params and
    directions are taken (the attribution programs' signature) and not read."""
    return meshes.ExplicandMap(lambda params, x, direction, key: reference.fn(key, jnp.shape(x))[None], mesh,
                                 in_axes=(None, 0, 0, 0), gather=False)
