"""The compiled programs of a sweep, owned by one object per run and device mesh.

Three programs, each sharded over the explicand axis of a mesh (`cocoa_jax.sharding.ExplicandMap`):

* encode: images (B, H, W, C) -> representations (B, D) (corpora, foils, explicands, probe data);
* attribute (one per method): explicands (N, H, W, C), stacked target directions (N, K, D) and keys
  (N,) -> attributions (N, K, H, W[, C]), through `cocoa_jax.methods` with the blurred explicand as
  baseline; the K targets share every encoder pass;
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

from cocoa_jax import baselines, metrics, methods, sharding
from cocoa_jax import targets as targets_mod
from cocoa_jax.sweep.config import SweepConfig
from cocoa_jax.sweep.inputs import EncoderSpec


class SweepPrograms:
    """Compiled encode / attribute / evaluate programs for one encoder, config and mesh.

    Args:
      spec: the encoder (`params`, `encode_fn(params, x)`, `input_shape`).
      config: the sweep config (method options, targets, evaluation settings, batch sizes).
      mesh: a 1-D mesh over this process's devices (`sharding.make_mesh(jax.local_devices())`).
    """

    def __init__(self, spec: EncoderSpec, config: SweepConfig, mesh: jax.sharding.Mesh):
        self.spec, self.config, self.mesh = spec, config, mesh
        self.num_devices = int(mesh.devices.size)
        self.image_shape = tuple(spec.input_shape)
        self.params = jax.device_put(spec.params, sharding.replicated_sharding(mesh))
        self.seed = None  # the seed whose (randomised) parameters `params` holds, with randomize_model
        self.cosine = config.similarity == "cosine"
        self._blur = functools.partial(baselines.gaussian_blur, kernel_size=config.blur_kernel_size,
                                       sigma=float(config.blur_sigma))
        encode_fn = spec.encode_fn
        self._encode = sharding.ExplicandMap(lambda params, xb: encode_fn(params, xb), mesh, in_axes=(None, 0),
                                             vectorized=True)
        self._attribute: dict[str, sharding.ExplicandMap] = {}
        self._evaluate = sharding.ExplicandMap(self._evaluate_batch, mesh, in_axes=(None, None, 0, 0, 0, 0, 0, 0),
                                               vectorized=True)

    def use_seed(self, seed: int) -> None:
        """With `randomize_model`, switch to seed's randomised encoder,
        `randomize_params(trained, jax.random.key(seed))` (no-op otherwise, or if it is current).
        The programs take the parameters as an argument: nothing is recompiled."""
        if not self.config.randomize_model or self.seed == seed:
            return
        from cocoa_jax.models.randomize import randomize_params

        params = randomize_params(self.spec.params, jax.random.key(seed))
        self.params = jax.device_put(params, sharding.replicated_sharding(self.mesh))
        self.seed = seed

    # -- encode --------------------------------------------------------------------------

    def chunk_size(self, n: int) -> int:
        """Images per encode call for n images: equal chunks of at most eval_batch, rounded up to a
        multiple of 32 x the device count. The rounding bounds both the padding (< 32 images per
        device) and the number of distinct shapes compiled (eval_batch / (32 x devices))."""
        quantum = 32 * self.num_devices
        n_chunks = -(-n // self.config.eval_batch)
        size = -(-n // n_chunks)
        return -(-size // quantum) * quantum if size > quantum else -(-size // self.num_devices) * self.num_devices

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Representations (N, D) float32 of NumPy images (N, H, W, C)."""
        n = images.shape[0]
        size = self.chunk_size(n)
        out = []
        for start in range(0, n, size):
            chunk = np.asarray(images[start:start + size], np.float32)
            real = chunk.shape[0]
            chunk, _ = sharding.pad_to_multiple(chunk, size)  # bucketed shapes: few compiles
            out.append(np.asarray(self._encode(self.params, chunk))[:real])
        return np.concatenate(out).astype(np.float32)

    # -- attribute -----------------------------------------------------------------------

    def attribute_program(self, method: str) -> sharding.ExplicandMap:
        """(params, xs (N,H,W,C), directions (N,K,D), keys (N,)) -> sharded attributions."""
        if method not in self._attribute:
            options = {} if method == methods.RANDOM else self.config.method_options(method)
            batch_size = self.config.attribution_batch
            encode_fn, blur = self.spec.encode_fn, self._blur
            normalize = tuple([self.cosine] * len(self.config.target_columns()))

            def attribute_one(params, x, direction, key):
                target = targets_mod.Target(direction, normalize)
                f = targets_mod.explain_fn(lambda batch: encode_fn(params, batch), target)
                maps = methods.attribute(method, f, x, blur(x), key, batch_size=batch_size, **options)
                return maps[None] if method == methods.RANDOM else maps  # the random map serves one "target"

            self._attribute[method] = sharding.ExplicandMap(attribute_one, self.mesh, in_axes=(None, 0, 0, 0),
                                                            gather=False)
        return self._attribute[method]

    def attribute(self, method: str, xs, directions, keys):
        return self.attribute_program(method)(self.params, xs, directions, keys)

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
        curves, aucs = metrics.insertion_deletion_batch(
            lambda batch: self.spec.encode_fn(params, batch), measures, xs, jax.vmap(self._blur)(xs), attributions,
            n_steps=config.eval_steps, absolute=config.eval_absolute, superpixel=config.eval_superpixel,
            batch_size=config.eval_batch)
        stored = {"attributions": attributions}
        if attributions.ndim == 5:  # (N, K, H, W, C): store channel means (what rankings read)
            stored = {"attributions": jnp.mean(attributions, axis=-1)}
            if config.eval_absolute:
                stored["attributions_abs"] = jnp.mean(jnp.abs(attributions), axis=-1)
        return curves, aucs, stored

    def evaluate(self, probe, xs, attributions, ccs_directions, majority_class, explicand_class, explicand_reps):
        """Curves (N, K, 2, S+1, M), AUCs (N, K, 2, M) of `metrics.MEASURE_NAMES`, stored maps.

        Args:
          probe: the linear probe (shared). xs: (N, H, W, C). attributions: (N, K, H, W[, C]).
          ccs_directions: (N, 2, D) COCOA directions with the unit's foil and a resampled foil.
          majority_class, explicand_class: (N,) int. explicand_reps: (N, D).
          A size study (`config.size_field`): ccs_directions (N, Z, 2, D) and majority_class (N, Z),
          one per size; the last axis of curves and AUCs is then (Z * M), size-major.
        """
        return self._evaluate(self.params, probe, xs, attributions, ccs_directions, majority_class,
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
    return sharding.make_mesh(devices)


def unit_key(seed: int, class_id: int, method: str) -> jax.Array:
    """The PRNG key of a unit: seed, then class, then the method's stable stream id."""
    key = jax.random.fold_in(jax.random.key(seed), class_id)
    return jax.random.fold_in(key, methods.stream_id(method))

