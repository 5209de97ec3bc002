"""Run a sweep: units (seed x corpus class x method), resumable, one row per finished unit.

Per seed (once): sample corpora for every class, the foil, a second (resampled) foil and the
explicands; encode corpora and foils in one batched pass. Per unit: build the K targets of
every explicand as ONE stacked `Target` (directions (N, K, D)), so the K targets share every
forward pass of the attribution method (RISE's masked passes, IG's path points) and of the
evaluation; attribute explicands in vmapped batches; evaluate insertion and deletion for all
measures from one encoder pass per step; write the unit atomically.

Randomness is derived from (seed, class, method) only, so a unit's result does not depend
on which other units ran before it (resume gives the same numbers).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import attribution as attr_mod
from cocoa_jax import baselines, metrics
from cocoa_jax import targets as targets_mod
from cocoa_jax.sweep.config import METHOD_NAMES, RANDOM_METHOD, SweepConfig
from cocoa_jax.sweep.store import RunStore

MEASURE_NAMES = ("ccs", "ccs_resampled_foil", "corpus_majority_prob", "explicand_pred_prob", "rep_shift")
MEASURE_TITLES = {
    "ccs": "contrastive corpus similarity",
    "ccs_resampled_foil": "contrastive corpus similarity (resampled foil)",
    "corpus_majority_prob": "corpus majority probability",
    "explicand_pred_prob": "explicand predicted probability",
    "rep_shift": "representation shift",
}
# Stable ids for PRNG streams: never reorder (results depend on them).
_METHOD_STREAM = {name: i for i, name in enumerate(METHOD_NAMES + (RANDOM_METHOD,))}


@dataclasses.dataclass(frozen=True)
class Unit:
    seed: int
    class_id: int
    method: str

    @property
    def unit_id(self) -> str:
        return f"s{self.seed}_c{self.class_id}_{self.method}"


@dataclasses.dataclass
class EncoderSpec:
    """What the sweep needs from an encoder: pure `encode_fn(params, x (N, H, W, C)) -> (N, D)`."""

    params: Any
    encode_fn: Callable
    input_shape: tuple
    preprocess: Callable | None = None


@dataclasses.dataclass
class SweepResult:
    run_dir: str
    config_hash: str
    computed: list[str]
    skipped: list[str]
    seconds: float
    probe_accuracy: float | None


# ----------------------------------------------------------------------------- resolution


def _expand(path: str | None) -> str | None:
    import os
    return None if path is None else os.path.expanduser(path)


def resolve_encoder(config: SweepConfig, encoder=None) -> EncoderSpec:
    """The encoder object given, or the one `config.encoder` names (loaded lazily)."""
    if encoder is None:
        if config.encoder == "digits":
            try:
                from cocoa_jax.models import load
                encoder = load("digits", _expand(config.encoder_dir))
            except ImportError:
                from cocoa_jax.models.small_resnet import load_digits_encoder
                encoder = load_digits_encoder(_expand(config.encoder_dir))
        else:
            from cocoa_jax.models import list_architectures, load
            if config.encoder not in list_architectures():
                raise ValueError(f"`encoder` {config.encoder!r} is neither 'digits' nor one of "
                                 f"{list(list_architectures())}; pass the encoder object to run_sweep")
            encoder = load(config.encoder, _expand(config.encoder_dir))
    if isinstance(encoder, EncoderSpec):
        return encoder
    for attribute in ("params", "encode_fn", "input_shape"):
        if not hasattr(encoder, attribute):
            raise TypeError(f"`encoder` must have `params`, `encode_fn(params, x)` and `input_shape`; "
                            f"{type(encoder).__name__} lacks `{attribute}`")
    return EncoderSpec(encoder.params, encoder.encode_fn, tuple(encoder.input_shape),
                       getattr(encoder, "preprocess", None))


def _preprocess_for(config: SweepConfig, encoder: EncoderSpec):
    if config.preprocess == "none":
        return None
    if config.preprocess == "model":
        return encoder.preprocess
    from cocoa_jax.models import preprocessing
    spec = getattr(preprocessing, config.preprocess, None)
    if not isinstance(spec, preprocessing.Preprocessing):
        raise ValueError(f"`preprocess` {config.preprocess!r} is not 'model', 'none' or a Preprocessing "
                         f"in cocoa_jax.models.preprocessing")
    return spec


def resolve_datasets(config: SweepConfig, encoder: EncoderSpec, datasets=None):
    """(corpus source, explicand source): `LabelledImages` of the two splits."""
    if datasets is not None:
        if not isinstance(datasets, dict) or not {config.corpus_split, config.explicand_split} <= set(datasets):
            raise TypeError(f"`datasets` must be a dict with keys {config.corpus_split!r} and "
                            f"{config.explicand_split!r} of LabelledImages")
        return datasets[config.corpus_split], datasets[config.explicand_split]
    preprocess = _preprocess_for(config, encoder)
    if config.dataset == "digits":
        from cocoa_jax.data.digits import load_digits_split
        from cocoa_jax.data.image_folder import ArrayImages
        split = load_digits_split()
        parts = {"train": ArrayImages(split.x_train, split.y_train),
                 "test": ArrayImages(split.x_test, split.y_test)}
        return parts[config.corpus_split], parts[config.explicand_split]
    if config.dataset.startswith("tfds:"):
        if not config.data_dir:
            raise ValueError("`data_dir` is required for a tfds dataset")
        from cocoa_jax.data.tfds import TfdsImages
        name = config.dataset[len("tfds:"):]
        data_dir = _expand(config.data_dir)
        return (TfdsImages(name, config.corpus_split, data_dir, preprocess=preprocess),
                TfdsImages(name, config.explicand_split, data_dir, preprocess=preprocess))
    if config.dataset.startswith("folder:"):
        from cocoa_jax.data.image_folder import ImageFolder
        root = _expand(config.dataset[len("folder:"):])
        corpus_source = ImageFolder(root, config.corpus_split, preprocess=preprocess)
        return corpus_source, ImageFolder(root, config.explicand_split, class_names=corpus_source.class_names,
                                          preprocess=preprocess)
    raise ValueError(f"`dataset` {config.dataset!r} must be 'digits', 'tfds:<name>', 'folder:<root>', or "
                     f"datasets must be passed to run_sweep")


# ----------------------------------------------------------------------------- helpers


class Encoder:
    """Batched, jitted encoding of NumPy images with fixed-size chunks (no recompiles)."""

    def __init__(self, spec: EncoderSpec, batch_size: int):
        self.spec = spec
        self.batch_size = batch_size
        self._fn = _cached("encode", spec.encode_fn, None, lambda: jax.jit(spec.encode_fn))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        n = images.shape[0]
        out = []
        for start in range(0, n, self.batch_size):
            chunk = images[start:start + self.batch_size]
            # Pad to the batch size (or, for small inputs, the next power of two) so few
            # distinct shapes are compiled.
            size = self.batch_size if n > self.batch_size else min(self.batch_size, 1 << max(3, (n - 1).bit_length()))
            pad = size - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            out.append(np.asarray(self._fn(self.spec.params, jnp.asarray(chunk, jnp.float32)))[:chunk.shape[0] - pad])
        return np.concatenate(out).astype(np.float32)


@dataclasses.dataclass
class SeedData:
    """Everything a seed's units share."""

    foil_reps: np.ndarray  # (F, D)
    foil2_reps: np.ndarray  # (F, D) resampled foil (evaluation only)
    corpus_index: dict  # class -> (C,) corpus-split indices
    corpus_reps: dict  # class -> (C, D)
    explicand_index: dict  # class -> (N,) explicand-split indices


def _choose(rng: np.random.Generator, pool: np.ndarray, size: int, what: str) -> np.ndarray:
    if pool.shape[0] < size:
        raise ValueError(f"{what}: needs {size} samples but only {pool.shape[0]} are available; "
                         f"reduce the size in the config")
    return np.sort(rng.choice(pool, size=size, replace=False))


def prepare_seed(config: SweepConfig, seed: int, classes, corpus_source, explicand_source,
                 encode: Encoder) -> SeedData:
    """Sample corpora, foils and explicands for `seed` (deterministic) and encode corpora/foils once."""
    corpus_pool = np.arange(len(corpus_source))
    foil_rng = np.random.default_rng([seed, 0])
    foil = _choose(foil_rng, corpus_pool, config.foil_size, "foil")
    foil2 = _choose(foil_rng, corpus_pool, config.foil_size, "resampled foil")
    corpus_index, explicand_index = {}, {}
    for c in classes:
        # Per-class streams: a class's samples do not depend on which other classes run.
        corpus_index[c] = _choose(np.random.default_rng([seed, 1, c]),
                                  np.flatnonzero(corpus_source.labels == c), config.corpus_size, f"corpus of class {c}")
        in_class = explicand_source.labels == c
        pool = np.flatnonzero(in_class if config.corpus_mode == "same" else ~in_class)
        explicand_index[c] = _choose(np.random.default_rng([seed, 2, c]), pool, config.explicands_per_class,
                                     f"explicands for class {c}")
    # One encoder pass over every corpus and both foils of this seed.
    all_index = np.concatenate([foil, foil2] + [corpus_index[c] for c in classes])
    unique, inverse = np.unique(all_index, return_inverse=True)
    reps = encode(corpus_source.images(unique))[inverse]
    f = config.foil_size
    corpus_reps, offset = {}, 2 * f
    for c in classes:
        corpus_reps[c] = reps[offset:offset + config.corpus_size]
        offset += config.corpus_size
    return SeedData(reps[:f], reps[f:2 * f], corpus_index, corpus_reps, explicand_index)


def stacked_directions(target_names, similarity, explicand_reps, corpus_reps, foil_reps) -> np.ndarray:
    """(N, K, D) directions of the K named targets for N explicands (ONE stacked Target)."""
    builders = {
        "label_free": lambda: targets_mod.label_free(explicand_reps, similarity),
        "contrastive_label_free": lambda: targets_mod.contrastive_label_free(explicand_reps, foil_reps, similarity),
        "corpus": lambda: targets_mod.corpus(corpus_reps, similarity),
        "cocoa": lambda: targets_mod.cocoa(corpus_reps, foil_reps, similarity),
    }
    stacked = targets_mod.stack([builders[name]() for name in target_names])
    direction = jnp.broadcast_to(stacked.direction, (explicand_reps.shape[0],) + stacked.direction.shape[-2:])
    return np.asarray(direction)


def _grid_for(settings: dict, image_shape) -> tuple[int, int]:
    grid = settings.get("grid_size")
    if grid is None:  # the paper: 4x4 at 32 px (CIFAR), 7x7 at 224 px (ImageNet, MURA)
        return (4, 4) if max(image_shape[:2]) <= 64 else (7, 7)
    return tuple(grid)


# Compiled functions are cached per process, keyed by everything they close over, so
# repeated sweeps (tests, notebooks) with the same encoder function compile once.
_COMPILED: dict = {}


def _cached(kind: str, encode_fn, key, build):
    full_key = (kind, id(encode_fn), key)
    entry = _COMPILED.get(full_key)
    if entry is None or entry[0] is not encode_fn:  # keep encode_fn alive so its id stays unique
        entry = (encode_fn, build())
        _COMPILED[full_key] = entry
    return entry[1]


@functools.partial(jax.jit, static_argnums=1)
def _random_attributions(keys: jax.Array, image_shape) -> jax.Array:
    """The random benchmark: (N,) keys -> (N, 1, H, W) U[0, 1) scores."""
    return jax.vmap(lambda k: metrics.random_attribution(k, image_shape))(keys)[:, None]


def make_attribute_fn(method: str, settings: dict, encode_fn: Callable, normalize: tuple, image_shape,
                      batch_size: int | None):
    key = (method, json.dumps(settings, sort_keys=True), normalize, tuple(image_shape), batch_size)
    return _cached("attribute", encode_fn, key, lambda: _make_attribute_fn(
        method, settings, encode_fn, normalize, image_shape, batch_size))


def _make_attribute_fn(method: str, settings: dict, encode_fn: Callable, normalize: tuple, image_shape,
                       batch_size: int | None):
    """jit(vmap) attribution: (params, xs (N,H,W,C), baselines, directions (N,K,D), keys (N,)) -> (N, K, H, W[, C])."""
    settings = dict(settings)

    def one(params, x, baseline, direction, key):
        target = targets_mod.Target(direction, normalize)
        f = targets_mod.explain_fn(lambda batch: encode_fn(params, batch), target)
        if method == "integrated_gradients":
            return attr_mod.integrated_gradients(f, x, baseline, n_steps=settings.get("n_steps", 50),
                                                 method=settings.get("method", "gausslegendre"),
                                                 batch_size=batch_size)
        if method == "gradient_shap":
            return attr_mod.gradient_shap(f, x, baseline[None], key, n_samples=settings.get("n_samples", 50),
                                          stdev=settings.get("stdev", 0.2), batch_size=batch_size)
        if method == "rise":
            return attr_mod.rise(f, x, baseline, key, n_masks=settings.get("n_masks", 5000),
                                 grid_size=_grid_for(settings, image_shape),
                                 keep_prob=settings.get("keep_prob", 0.5), batch_size=batch_size)
        if method == "smoothgrad":
            return attr_mod.smoothgrad(f, x, key, n_samples=settings.get("n_samples", 25),
                                       stdev=settings.get("stdev", 1.0), batch_size=batch_size)
        if method == "vanilla_gradients":
            return attr_mod.vanilla_gradients(f, x)
        raise ValueError(f"unknown method {method!r}")

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)))


def make_evaluate_fn(encode_fn: Callable, config: SweepConfig, image_shape):
    key = (config.eval_steps, config.eval_absolute, config.eval_superpixel, config.similarity,
           config.eval_batch, tuple(image_shape))
    return _cached("evaluate", encode_fn, key, lambda: _make_evaluate_fn(encode_fn, config, image_shape))


def _make_evaluate_fn(encode_fn: Callable, config: SweepConfig, image_shape):
    """jit evaluation of a batch of explicands.

    (params, xs (N,H,W,C), baselines, attributions (N,K,H,W[,C]), ccs_directions (2, D),
    probe, majority_class (), explicand_pred (N,), explicand_reps (N, D))
    -> curves (N, K, 2, S+1, M), aucs (N, K, 2, M); M follows MEASURE_NAMES.
    """
    n_steps, absolute, superpixel = config.eval_steps, config.eval_absolute, config.eval_superpixel
    cosine = config.similarity == "cosine"
    height, width = image_shape[0], image_shape[1]
    sh = sw = superpixel
    n_features = (height // sh) * (width // sw)
    fractions = metrics.feature_fractions(n_features, n_steps)

    def masks_of(attribution):  # (H, W[, C]) -> (2, S+1, H, W)
        scores = metrics.feature_scores(attribution, image_shape, absolute=absolute, superpixel=superpixel)
        return jnp.stack([metrics.ablation_masks(scores, image_shape, kind=k, n_steps=n_steps, superpixel=superpixel)
                          for k in metrics.KINDS])

    def evaluate(params, xs, baselines_, attributions, ccs_directions, probe, majority, explicand_pred,
                 explicand_reps):
        masks = jax.vmap(jax.vmap(masks_of))(attributions)  # (N, K, 2, S+1, H, W)
        lead = masks.shape[:4]
        inputs = jax.vmap(lambda x, b, m: metrics.ablated_inputs(x, b, m.reshape((-1, height, width))))(
            xs, baselines_, masks)  # (N, K*2*(S+1), H, W, C)
        flat = inputs.reshape((-1,) + tuple(image_shape))
        # ONE encoder pass per ablation step for all measures and all K attributions.
        reps = metrics.map_in_batches(lambda b: encode_fn(params, b), flat, config.eval_batch)
        reps = reps.reshape(lead + reps.shape[-1:])

        def measure_one(reps_n, pred_n, ref_n):
            measures = metrics.make_measures(
                targets={"ccs": targets_mod.Target(ccs_directions[0], cosine),
                         "ccs_resampled_foil": targets_mod.Target(ccs_directions[1], cosine)},
                probe=probe,
                prob_classes={"corpus_majority_prob": majority, "explicand_pred_prob": pred_n},
                shift_reference=ref_n)
            return measures(reps_n)

        curves = jax.vmap(measure_one)(reps, explicand_pred, explicand_reps)  # (N, K, 2, S+1, M)
        return curves, metrics.auc(curves, fractions)

    return jax.jit(evaluate)


# ----------------------------------------------------------------------------- probe


def get_probe(config: SweepConfig, store: RunStore, corpus_source, explicand_source, encode: Encoder):
    """The run's linear probe: loaded from `probe_dir`, from the run dir, or trained once and saved there."""
    import json
    import os

    from cocoa_jax import probe as probe_mod

    if config.probe_dir:
        return probe_mod.load_probe(config.probe_dir), None
    directory = os.path.join(store.run_dir, "probe")
    meta_path = directory + ".json"
    if os.path.isdir(directory) and os.path.exists(meta_path):
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
            if meta.get("config_hash") == store.config_hash:
                return probe_mod.load_probe(directory), meta.get("accuracy")
        except Exception as err:  # a damaged probe is retrained, never trusted
            warnings.warn(f"ignoring damaged probe in {directory}: {err}", stacklevel=2)
    rng = np.random.default_rng(12345)
    train_index = np.arange(len(corpus_source))
    if config.probe_train_size and config.probe_train_size < train_index.size:
        train_index = np.sort(rng.choice(train_index, config.probe_train_size, replace=False))
    test_index = np.arange(len(explicand_source))
    if config.probe_test_size and config.probe_test_size < test_index.size:
        test_index = np.sort(rng.choice(test_index, config.probe_test_size, replace=False))
    n_classes = int(max(corpus_source.labels.max(), explicand_source.labels.max())) + 1
    train_reps = encode(corpus_source.images(train_index))
    probe = probe_mod.fit_probe(train_reps, corpus_source.labels[train_index], n_classes=n_classes,
                                key=jax.random.key(0))
    accuracy = probe_mod.accuracy(probe, encode(explicand_source.images(test_index)),
                                  explicand_source.labels[test_index])
    probe_mod.save_probe(probe, directory, metadata={"accuracy": accuracy, "config_hash": store.config_hash,
                                                     "n_train": int(train_index.size), "n_test": int(test_index.size)})
    return probe, accuracy


# ----------------------------------------------------------------------------- units


@functools.partial(jax.jit, static_argnames=("kernel_size", "sigma"))
def _blur(x, *, kernel_size: int, sigma: float):
    return baselines.gaussian_blur(x, kernel_size, sigma)


def plan_units(config: SweepConfig, classes) -> list[Unit]:
    """All units in run order: seed, then class, then method."""
    return [Unit(seed, int(c), m) for seed in config.seeds for c in classes for m in config.method_names]


def _unit_key(unit: Unit) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(unit.seed), unit.class_id)
    return jax.random.fold_in(key, _METHOD_STREAM[unit.method])


class UnitRunner:
    """Computes units; caches per-seed data and compiled functions."""

    def __init__(self, config: SweepConfig, encoder: EncoderSpec, corpus_source, explicand_source, probe,
                 classes):
        self.config = config
        self.encoder = encoder
        self.corpus_source, self.explicand_source = corpus_source, explicand_source
        self.probe = probe
        self.classes = classes
        self.encode = Encoder(encoder, config.eval_batch)
        self.image_shape = tuple(encoder.input_shape)
        self._seed_data: dict[int, SeedData] = {}
        self._attribute_fns: dict[str, Callable] = {}
        self._evaluate = make_evaluate_fn(encoder.encode_fn, config, self.image_shape)
        normalize = config.similarity == "cosine"
        self._normalize = tuple([normalize] * len(config.targets))
        self._blur = functools.partial(_blur, kernel_size=config.blur_kernel_size, sigma=float(config.blur_sigma))

    def seed_data(self, seed: int) -> SeedData:
        if seed not in self._seed_data:
            self._seed_data = {seed: prepare_seed(self.config, seed, self.classes, self.corpus_source,
                                                  self.explicand_source, self.encode)}
        return self._seed_data[seed]

    def attribute_fn(self, method: str):
        if method not in self._attribute_fns:
            self._attribute_fns[method] = make_attribute_fn(
                method, self.config.methods[method], self.encoder.encode_fn, self._normalize, self.image_shape,
                self.config.attribution_batch)
        return self._attribute_fns[method]

    def run(self, unit: Unit) -> tuple[dict, dict]:
        """Compute one unit: (arrays for its npz, summary row)."""
        config = self.config
        start = time.perf_counter()
        data = self.seed_data(unit.seed)
        index = data.explicand_index[unit.class_id]
        xs_all = self.explicand_source.images(index)
        explicand_reps_all = self.encode(xs_all)
        corpus_reps, foil_reps = data.corpus_reps[unit.class_id], data.foil_reps
        pred_all = np.asarray(self.probe.predict(jnp.asarray(explicand_reps_all)))
        majority = np.asarray(metrics.majority_class(self.probe.logits(jnp.asarray(corpus_reps)),
                                                     self.probe.n_classes))
        ccs_directions = jnp.stack([targets_mod.cocoa(corpus_reps, foil_reps, config.similarity).direction,
                                    targets_mod.cocoa(corpus_reps, data.foil2_reps, config.similarity).direction])
        if unit.method == RANDOM_METHOD:
            target_names = (RANDOM_METHOD,)
        else:
            target_names = config.targets
            directions_all = stacked_directions(config.targets, config.similarity, explicand_reps_all,
                                                corpus_reps, foil_reps)
        keys_all = jax.random.split(_unit_key(unit), len(index))
        attributions, curves, aucs = [], [], []
        attribution_seconds = evaluation_seconds = 0.0
        batch = min(config.explicand_batch, len(index))
        for lo in range(0, len(index), batch):
            hi = min(lo + batch, len(index))
            # Pad the last batch to the batch size (repeating its last explicand) so every
            # batch reuses one compiled program; padded results are dropped.
            take = np.minimum(np.arange(lo, lo + batch), hi - 1)
            xs = jnp.asarray(xs_all[take])
            base = self._blur(xs)
            t0 = time.perf_counter()
            if unit.method == RANDOM_METHOD:
                attr = _random_attributions(keys_all[take], self.image_shape)
            else:
                attr = self.attribute_fn(unit.method)(self.encoder.params, xs, base,
                                                      jnp.asarray(directions_all[take]), keys_all[take])
                if attr.ndim == 5:  # (N, K, H, W, C) -> channel mean, what ranking uses anyway
                    attr = jnp.mean(attr, axis=-1)
            attr = jax.block_until_ready(attr)
            t1 = time.perf_counter()
            c, a = self._evaluate(self.encoder.params, xs, base, attr, ccs_directions, self.probe,
                                  jnp.asarray(majority), jnp.asarray(pred_all[take]),
                                  jnp.asarray(explicand_reps_all[take]))
            c, a = np.asarray(c), np.asarray(a)
            t2 = time.perf_counter()
            attribution_seconds += t1 - t0
            evaluation_seconds += t2 - t1
            n_real = hi - lo
            attributions.append(np.asarray(attr)[:n_real])  # (n, K, H, W)
            curves.append(c[:n_real])
            aucs.append(a[:n_real])
        attributions = np.concatenate(attributions).astype(np.float32)
        curves = np.concatenate(curves).astype(np.float32)
        aucs = np.concatenate(aucs).astype(np.float64)
        fractions = metrics.feature_fractions(
            (self.image_shape[0] // config.eval_superpixel) * (self.image_shape[1] // config.eval_superpixel),
            config.eval_steps)
        arrays = dict(attributions=attributions, curves=curves, aucs=aucs, fractions=fractions,
                      explicand_index=index, corpus_index=data.corpus_index[unit.class_id],
                      explicand_labels=self.explicand_source.labels[index], majority_class=majority)
        mean_auc = aucs.mean(axis=0)  # (K, 2, M)
        summary = {t: {kind: {m: float(mean_auc[k, j, i]) for i, m in enumerate(MEASURE_NAMES)}
                       for j, kind in enumerate(metrics.KINDS)} for k, t in enumerate(target_names)}
        row = dict(seed=unit.seed, class_id=unit.class_id, method=unit.method, targets=list(target_names),
                   measures=list(MEASURE_NAMES), n_explicands=int(len(index)), auc=summary,
                   seconds=round(time.perf_counter() - start, 4), attribution_seconds=round(attribution_seconds, 4),
                   evaluation_seconds=round(evaluation_seconds, 4))
        return arrays, row


def _classes_of(config: SweepConfig, corpus_source) -> list[int]:
    if config.classes is not None:
        n = int(corpus_source.labels.max()) + 1
        bad = [c for c in config.classes if not 0 <= c < n]
        if bad:
            raise ValueError(f"`classes` {bad} are not labels of the dataset (0..{n - 1})")
        return list(config.classes)
    return sorted(int(c) for c in np.unique(corpus_source.labels))


def fingerprint_params(params) -> str:
    """SHA-256 (16 hex) over every parameter leaf's path, shape, dtype and bytes."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def fingerprint_data(*sources) -> str:
    """SHA-256 (16 hex) over each split's labels and its first and last preprocessed images."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(np.ascontiguousarray(source.labels).tobytes())
        ends = [0, len(source) - 1] if len(source) else []
        digest.update(np.ascontiguousarray(source.images(ends)).tobytes())
    return digest.hexdigest()[:16]


def run_sweep(config: SweepConfig, run_dir: str, *, encoder=None, datasets=None, progress: bool = True,
              max_units: int | None = None, on_unit: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or resume) a sweep in `run_dir`.

    Args:
      config: the protocol. Its hash must match the one stored in `run_dir` (if any).
      encoder: an object with `params`, `encode_fn(params, x)`, `input_shape` (default:
        resolve `config.encoder`).
      datasets: {split: LabelledImages} (default: resolve `config.dataset`).
      progress: show a tqdm bar (units done / left, rate).
      max_units: stop after computing this many units (for tests and partial runs).
      on_unit: called with each unit id right after it is written.
    Returns: a `SweepResult` with the ids computed now and those skipped as finished.
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"`config` must be a SweepConfig, got {type(config).__name__}")
    start = time.perf_counter()
    spec = resolve_encoder(config, encoder)
    corpus_source, explicand_source = resolve_datasets(config, spec, datasets)
    # The run's identity: the config AND the encoder weights and data actually used, so
    # re-trained weights or changed data never mix with old results either.
    identity = {"config_hash": config.config_hash(), "encoder": fingerprint_params(spec.params),
                "data": fingerprint_data(corpus_source, explicand_source)}
    run_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    store = RunStore(run_dir, dict(config.to_dict()), run_hash, identity=identity)
    classes = _classes_of(config, corpus_source)
    units = plan_units(config, classes)
    finished = store.read_rows()
    todo = [u for u in units if u.unit_id not in finished]
    skipped = [u.unit_id for u in units if u.unit_id in finished]
    if max_units is not None:
        todo = todo[:max_units]
    computed: list[str] = []
    probe_accuracy = None
    if todo:
        encode = Encoder(spec, config.eval_batch)
        probe, probe_accuracy = get_probe(config, store, corpus_source, explicand_source, encode)
        runner = UnitRunner(config, spec, corpus_source, explicand_source, probe, classes)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(units), initial=len(skipped), unit="unit", desc=f"sweep {store.config_hash[:8]}",
                       dynamic_ncols=True)
        try:
            for unit in todo:
                arrays, row = runner.run(unit)
                store.write_unit(unit.unit_id, arrays, row)
                computed.append(unit.unit_id)
                if on_unit is not None:
                    on_unit(unit.unit_id)
                if bar is not None:
                    bar.set_postfix(done=len(skipped) + len(computed), left=len(units) - len(skipped) - len(computed),
                                    last=unit.unit_id, refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return SweepResult(store.run_dir, store.config_hash, computed, skipped, time.perf_counter() - start,
                       probe_accuracy)
