"""What a sweep reads: the encoder, the datasets, their fingerprints, and each seed's samples.

Per seed (once): sample corpora for every class, the foil, a second (resampled) foil and the
explicands, with streams keyed by (seed, role, class) so a class's samples never depend on
which other classes run; corpora and foils are encoded in one batched pass.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable

import jax
import numpy as np

from cocoa_jax.sweep.config import SweepConfig


@dataclasses.dataclass
class EncoderSpec:
    """What the sweep needs from an encoder: pure `encode_fn(params, x (N, H, W, C)) -> (N, D)`.

    network_input: False (an encoder object's `encode_fn`): `x` is [0, 1] pixels, through the
      chosen preprocessing's resize and crop (`Preprocessing(image)` never normalises). True (a
      `LoadedModel`: `encode_fn` is its `network_fn`): `x` is the chosen preprocessing's
      normalised input, as the official COCOA code feeds its networks. Why: the paper's protocol
      attributes in the network's input space, so GradientSHAP's noise (stdev 0.2) has the scale
      it had there (IG, RISE, the blur and insertion/deletion are the same on pixels: they are
      invariant to a per-channel affine map); runs and run hashes stay as they were.
    """

    params: Any
    encode_fn: Callable
    input_shape: tuple
    preprocess: Callable | None = None
    network_input: bool = False
    # A ViT's `token_drop.TokenAccess` on the same input as `encode_fn` (eval_removal 'token_drop'), or None.
    token_access: Any = None


def _expand(path: str | None) -> str | None:
    return None if path is None else os.path.expanduser(path)


def check_encoder_source(config: SweepConfig) -> None:
    """The rules for a config that names its encoder (the command checks them before any work):
    a known architecture, and an existing `encoder_dir` when one is given."""
    from cocoa_jax.models import list_architectures

    if config.encoder not in list_architectures():
        from cocoa_jax.models.architectures import did_you_mean

        raise ValueError(f"config field `encoder` {config.encoder!r} is not one of {list(list_architectures())}"
                         f"{did_you_mean(config.encoder)}; "
                         f"pass the encoder object to run_sweep for anything else")
    if config.encoder_dir and not os.path.isdir(_expand(config.encoder_dir)):
        raise ValueError(f"config field `encoder_dir` {config.encoder_dir!r} is not a directory")
    if config.eval_removal == "token_drop" and _raw_token_access(config.encoder) is None:
        raise ValueError(f"config field `eval_removal` 'token_drop' needs a ViT encoder (token access); "
                         f"{config.encoder!r} has none: use 'blend'")


def _network_with_access(model):
    """(`model.network_fn`, its TokenAccess or None). For a ViT (or a ResNet, which has an LRP mode) the
    function carries the architecture's raw `token_access` and `modes` (on the network's input, as
    `network_fn`, which its `__wrapped__` is), which the explicand program reads for rollout, token drop,
    AttnLRP and LRP (`model.encode_fn` has them on [0, 1] pixels)."""
    from cocoa_jax.models import spec_of

    fns = spec_of(model.name).encoders(model.module, model.config)
    if fns.tokens is None and not fns.modes:
        return model.network_fn, None
    network = model.network_fn

    def network_fn(params, x):
        return network(params, x)

    network_fn.token_access, network_fn.modes = fns.tokens, dict(fns.modes)
    network_fn.__wrapped__ = network  # what it runs: the model's own network_fn
    return network_fn, fns.tokens


def _raw_token_access(arch: str, module=None, config=None):
    """The architecture's `TokenAccess` on its raw network input (its `Encoders.tokens`), or None;
    without a module, from the table's default config (whether it has one is the architecture's)."""
    from cocoa_jax.models import spec_of

    spec = spec_of(arch)
    config = spec.default_config if config is None else config
    return spec.encoders(spec.build(config) if module is None else module, config).tokens


def check_dataset_source(config: SweepConfig) -> None:
    """The rules for a config that names its dataset: 'digits', 'tfds:<name>' (with `data_dir`)
    or 'folder:<root>'."""
    if not (config.dataset == "digits" or config.dataset.startswith(("tfds:", "folder:"))):
        raise ValueError(f"config field `dataset` {config.dataset!r} must be 'digits', 'tfds:<name>' or "
                         f"'folder:<root>' (or datasets must be passed to run_sweep)")
    if config.dataset.startswith("tfds:") and not config.data_dir:
        raise ValueError("config field `data_dir` is required with a tfds dataset")


def resolve_encoder(config: SweepConfig, encoder=None) -> EncoderSpec:
    """The encoder object given, or the architecture `config.encoder` names (loaded lazily)."""
    if encoder is None:
        from cocoa_jax.models import load

        check_encoder_source(config)
        encoder = load(config.encoder, _expand(config.encoder_dir))
    if isinstance(encoder, EncoderSpec):
        return encoder
    if callable(getattr(encoder, "network_fn", None)):  # a LoadedModel: the paper's input space
        network_fn, access = _network_with_access(encoder)
        return EncoderSpec(encoder.params, network_fn, tuple(encoder.input_shape),
                           getattr(encoder, "preprocess", None), network_input=True, token_access=access)
    for attribute in ("params", "encode_fn", "input_shape"):
        if not hasattr(encoder, attribute):
            raise TypeError(f"`encoder` must have `params`, `encode_fn(params, x)` and `input_shape`; "
                            f"{type(encoder).__name__} lacks `{attribute}`")
    return EncoderSpec(encoder.params, encoder.encode_fn, tuple(encoder.input_shape),
                       getattr(encoder, "preprocess", None),
                       token_access=getattr(encoder.encode_fn, "token_access", None))


def _preprocess_for(config: SweepConfig, encoder: EncoderSpec):
    """The chosen `Preprocessing` (None: [0, 1] scaling only)."""
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


@dataclasses.dataclass(frozen=True)
class NetworkInput:
    """One image -> `preprocess.normalize(preprocess(image))`: the raw network's input."""

    preprocess: Any

    def __call__(self, image) -> np.ndarray:
        return np.asarray(self.preprocess.normalize(self.preprocess(image)), np.float32)


def _reader_for(preprocess, encoder: EncoderSpec):
    """What a dataset applies to each image: [0, 1] pixels, normalised for a `network_input` encoder."""
    if preprocess is None or not encoder.network_input or getattr(preprocess, "normalize", None) is None:
        return preprocess
    return NetworkInput(preprocess)


def digits_for_encoder(images: np.ndarray, encoder: EncoderSpec, preprocess=None) -> np.ndarray:
    """The grey 32x32 digits as `encoder` takes them: as they are for a 1-channel encoder; for an
    RGB encoder of the same size, the grey level in all 3 channels, then `preprocess.normalize`
    for a `network_input` encoder (as any RGB dataset is fed). Why: a cheap real dataset for any
    32x32 encoder (e.g. CIFAR ResNets in tests); other sizes are refused with a ValueError saying so.
    """
    shape = tuple(encoder.input_shape)
    if tuple(images.shape[1:]) == shape:
        return images
    if tuple(images.shape[1:3]) != shape[:2] or images.shape[-1] != 1 or shape[-1] != 3:
        raise ValueError(f"the digits dataset holds {images.shape[1]}x{images.shape[2]}x{images.shape[3]} grey "
                         f"images; the encoder takes {'x'.join(map(str, shape))}: use a dataset of that size "
                         f"(tfds:<name> or folder:<root>)")
    rgb = np.repeat(images, 3, axis=-1)
    normalize = getattr(preprocess, "normalize", None) if encoder.network_input else None
    return rgb if normalize is None else np.asarray(normalize(rgb), np.float32)


def resolve_datasets(config: SweepConfig, encoder: EncoderSpec, datasets=None):
    """(corpus source, explicand source): `LabelledImages` of the two splits."""
    if datasets is not None:
        if not isinstance(datasets, dict) or not {config.corpus_split, config.explicand_split} <= set(datasets):
            raise TypeError(f"`datasets` must be a dict with keys {config.corpus_split!r} and "
                            f"{config.explicand_split!r} of LabelledImages")
        return datasets[config.corpus_split], datasets[config.explicand_split]
    check_dataset_source(config)
    preprocess = _preprocess_for(config, encoder)
    reader = _reader_for(preprocess, encoder)
    if config.dataset == "digits":
        from cocoa_jax.data.digits import load_digits_split
        from cocoa_jax.data.image_folder import ArrayImages
        split = load_digits_split()
        x_train, x_test = (digits_for_encoder(x, encoder, preprocess) for x in (split.x_train, split.x_test))
        parts = {"train": ArrayImages(x_train, split.y_train), "test": ArrayImages(x_test, split.y_test)}
        return parts[config.corpus_split], parts[config.explicand_split]
    if config.dataset.startswith("tfds:"):
        from cocoa_jax.data.tfds import TfdsImages
        name = config.dataset[len("tfds:"):]
        data_dir = _expand(config.data_dir)
        return (TfdsImages(name, config.corpus_split, data_dir, preprocess=reader),
                TfdsImages(name, config.explicand_split, data_dir, preprocess=reader))
    if config.dataset.startswith("folder:"):
        from cocoa_jax.data.image_folder import ImageFolder
        root = _expand(config.dataset[len("folder:"):])
        corpus_source = ImageFolder(root, config.corpus_split, preprocess=reader)
        return corpus_source, ImageFolder(root, config.explicand_split, class_names=corpus_source.class_names,
                                          preprocess=reader)
    raise AssertionError("unreachable: check_dataset_source accepts only the forms above")


@dataclasses.dataclass
class SeedData:
    """Everything a seed's units share. Lists run over the sizes of `config.size_pairs()` (one
    entry for a plain run); size i's corpus / foil are sorted index arrays."""

    foil_reps: list  # [(F_i, D)]
    foil2_reps: list  # [(F_i, D)] resampled foil (evaluation only)
    corpus_index: dict  # class -> [(C_i,)] corpus-split indices
    corpus_reps: dict  # class -> [(C_i, D)]
    explicand_index: dict  # class -> (N,) explicand-split indices
    corpus_draw: dict | None = None  # size study: class -> (C_max,) the corpus draw, in draw order
    foil_draw: np.ndarray | None = None  # size study: (F_max,) the foil draw, in draw order


def _choose(rng: np.random.Generator, pool: np.ndarray, size: int, what: str) -> np.ndarray:
    if pool.shape[0] < size:
        raise ValueError(f"{what}: needs {size} samples but only {pool.shape[0]} are available; "
                         f"reduce the size in the config")
    return np.sort(rng.choice(pool, size=size, replace=False))


def _draw(rng: np.random.Generator, pool: np.ndarray, size: int, what: str) -> np.ndarray:
    """A nested draw: the first `size` of a random permutation of `pool`, in draw order. Size s of a
    study is `np.sort(draw[:s])`: the same whatever the other sizes are (a prefix of one draw)."""
    if pool.shape[0] < size:
        raise ValueError(f"{what}: needs {size} samples but only {pool.shape[0]} are available; "
                         f"reduce the size in the config")
    return rng.permutation(pool)[:size]


def _explicands(config: SweepConfig, seed: int, c: int, explicand_source) -> np.ndarray:
    in_class = explicand_source.labels == c
    pool = np.flatnonzero(in_class if config.corpus_mode == "same" else ~in_class)
    return _choose(np.random.default_rng([seed, 2, c]), pool, config.explicands_per_class, f"explicands for class {c}")


def sample_seed(config: SweepConfig, seed: int, classes, corpus_source, explicand_source,
                encode: Callable[[np.ndarray], np.ndarray]) -> SeedData:
    """Sample corpora, foils and explicands for `seed` (deterministic) and encode corpora/foils once.

    A plain run (int sizes) draws as it always has (`rng.choice`, sorted). A size study draws each
    corpus and foil ONCE at the largest size (`_draw`, streams keyed by seed, role and class) and
    takes sorted prefixes, so size s equals a one-size study `[s]`; explicands are drawn as in a
    plain run.
    """
    if config.size_field is not None:
        return _sample_nested(config, seed, classes, corpus_source, explicand_source, encode)
    corpus_pool = np.arange(len(corpus_source))
    foil_rng = np.random.default_rng([seed, 0])
    foil = _choose(foil_rng, corpus_pool, config.foil_size, "foil")
    foil2 = _choose(foil_rng, corpus_pool, config.foil_size, "resampled foil")
    corpus_index, explicand_index = {}, {}
    for c in classes:
        # Per-class streams: a class's samples do not depend on which other classes run.
        corpus_index[c] = _choose(np.random.default_rng([seed, 1, c]),
                                  np.flatnonzero(corpus_source.labels == c), config.corpus_size, f"corpus of class {c}")
        explicand_index[c] = _explicands(config, seed, c, explicand_source)
    # One encoder pass over every corpus and both foils of this seed.
    all_index = np.concatenate([foil, foil2] + [corpus_index[c] for c in classes])
    unique, inverse = np.unique(all_index, return_inverse=True)
    reps = encode(corpus_source.images(unique))[inverse]
    f = config.foil_size
    corpus_reps, offset = {}, 2 * f
    for c in classes:
        corpus_reps[c] = [reps[offset:offset + config.corpus_size]]
        offset += config.corpus_size
    return SeedData([reps[:f]], [reps[f:2 * f]], {c: [i] for c, i in corpus_index.items()}, corpus_reps,
                    explicand_index)


def _sample_nested(config: SweepConfig, seed: int, classes, corpus_source, explicand_source, encode) -> SeedData:
    corpus_pool = np.arange(len(corpus_source))
    pairs = config.size_pairs()
    foil_rng = np.random.default_rng([seed, 0])
    foil = _draw(foil_rng, corpus_pool, config.max_foil_size, "foil")
    foil2 = _draw(foil_rng, corpus_pool, config.max_foil_size, "resampled foil")
    corpus_draw = {c: _draw(np.random.default_rng([seed, 1, c]), np.flatnonzero(corpus_source.labels == c),
                            config.max_corpus_size, f"corpus of class {c}") for c in classes}
    explicand_index = {c: _explicands(config, seed, c, explicand_source) for c in classes}
    # One encoder pass over the largest corpora and foils; every size is a lookup.
    unique = np.unique(np.concatenate([foil, foil2] + [corpus_draw[c] for c in classes]))
    reps = encode(corpus_source.images(unique))

    def rows(index):
        return reps[np.searchsorted(unique, index)]

    foil_index = [np.sort(foil[:f]) for _, f in pairs]
    foil2_index = [np.sort(foil2[:f]) for _, f in pairs]
    corpus_index = {c: [np.sort(corpus_draw[c][:k]) for k, _ in pairs] for c in classes}
    return SeedData([rows(i) for i in foil_index], [rows(i) for i in foil2_index], corpus_index,
                    {c: [rows(i) for i in corpus_index[c]] for c in classes}, explicand_index,
                    corpus_draw=corpus_draw, foil_draw=foil)


def classes_of(config: SweepConfig, corpus_source) -> list[int]:
    if config.classes is not None:
        n = int(corpus_source.labels.max()) + 1
        bad = [c for c in config.classes if not 0 <= c < n]
        if bad:
            raise ValueError(f"config field `classes` {bad} are not labels of the dataset (0..{n - 1})")
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
