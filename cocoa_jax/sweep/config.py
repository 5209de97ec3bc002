"""Sweep configuration: what to run (hashed) and how to run it (not hashed).

Defaults are the paper's protocol (Section 4.1, Appendix H.3): 4 targets with cosine
similarity; IG, GradientSHAP and RISE with the defaults of their `cocoa_jax.attribution`
signatures (50 steps; 50 samples, sigma 0.2; 5000 masks, p = 0.5, the paper's grid for the
image size); blurred baseline GaussianBlur(21, 5); corpus 100, foil 1500; 5 seeds;
insertion/deletion in 50 steps.

`methods` holds only the options a run overrides; the hash covers the *resolved* options
(defaults included), so a changed default never mixes with old results. Execution settings
(batch sizes) do not change results (attribution methods are batch-size invariant) and are
left out of the hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from cocoa_jax import methods as methods_mod
from cocoa_jax import targets as targets_mod
from cocoa_jax.metrics import RANDOM_REFERENCE, ReferenceMap

TARGET_NAMES = tuple(targets_mod.TARGETS)
METHOD_NAMES = methods_mod.ATTRIBUTION_METHODS
CORPUS_MODES = ("same", "different")
# Bumped when the protocol's computation changes in a way the config does not show
# (v2: L2 representation shift, |a| per channel for absolute ranking, hashed PRNG streams).
PROTOCOL_VERSION = 2

# Fields that only change how fast a sweep runs, not its results.
EXECUTION_FIELDS = ("explicand_batch", "attribution_batch", "eval_batch")

# Expected JSON type of every field: (python types, description for messages).
_INT = ((int,), "an integer")
_OPT_INT = ((int, type(None)), "an integer or null")
_STR = ((str,), "a string")
_OPT_STR = ((str, type(None)), "a string or null")
_BOOL = ((bool,), "true or false")
_NUM = ((int, float), "a number")
_INT_LIST = ((list, tuple), "a list of integers")
_OPT_INT_LIST = ((list, tuple, type(None)), "a list of integers or null")
_STR_LIST = ((list, tuple), "a list of strings")
_DICT = ((dict,), "an object {method: {option: value}}")
_SIZE = ((int, list, tuple), "a positive integer or a list of positive integers (a size study)")
_RANDOMIZE = ((bool,), "true or false")
# Sizes a study may vary (a list in one of them; the other stays one number).
SIZE_FIELDS = ("corpus_size", "foil_size")
FIELD_TYPES = {
    "encoder": _STR, "encoder_dir": _OPT_STR, "dataset": _STR, "data_dir": _OPT_STR,
    "corpus_split": _STR, "explicand_split": _STR, "preprocess": _STR, "classes": _OPT_INT_LIST,
    "explicands_per_class": _INT, "corpus_size": _SIZE, "foil_size": _SIZE, "corpus_mode": _STR,
    "seeds": _INT_LIST, "targets": _STR_LIST, "similarity": _STR, "methods": _DICT,
    "include_random": _BOOL, "blur_kernel_size": _INT, "blur_sigma": _NUM, "eval_steps": _INT,
    "eval_absolute": _BOOL, "eval_superpixel": _INT, "probe_dir": _OPT_STR, "probe_train_size": _OPT_INT,
    "probe_test_size": _OPT_INT, "randomize_model": _RANDOMIZE, "randomize_cascade": _BOOL, "explicand_batch": _INT, "attribution_batch": _OPT_INT, "eval_batch": _INT,
    "estimators": _STR, "metrics": _STR_LIST, "eval_removal": _STR,
}


def _check_type(name: str, value, expected) -> None:
    types, description = expected
    if isinstance(value, bool) and bool not in types:
        ok = False  # True is an int in Python, never in a config
    else:
        ok = isinstance(value, types)
    if ok and expected is _SIZE and isinstance(value, (list, tuple)):
        ok = bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if ok and types in (_INT_LIST[0], _OPT_INT_LIST[0]) and value is not None:
        element = str if expected is _STR_LIST else int
        ok = all(isinstance(v, element) and not isinstance(v, bool) for v in value)
    if not ok:
        raise TypeError(f"config field `{name}` must be {description}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """One evaluation protocol.

    Attributes:
      encoder: an architecture of `cocoa_jax.models` ("digits" = the embedded encoder; others
        with `encoder_dir`), or any name when the encoder object is passed to `run_sweep`.
      encoder_dir: checkpoint directory (None: the shipped digits weights).
      dataset: "digits", "tfds:<name>" (with `data_dir`), "folder:<root>", or any name when
        datasets are passed to `run_sweep`.
      data_dir: tfds data directory.
      corpus_split / explicand_split: corpus and foil come from the first, explicands (held
        out) from the second.
      preprocess: "model" (the encoder's own preprocessing when it has one), "none" ([0, 1]
        scaling), or a name in `cocoa_jax.models.preprocessing` (e.g. "CIFAR").
      classes: corpus classes (None: all).
      explicands_per_class: explicands per unit.
      corpus_size, foil_size: the paper's 100 and 1500. A list in ONE of them is a size study
        (the paper's Appendix I / J): every size of a unit in one pass, from nested draws (size s
        = the first s of one draw per seed and class); see docs/sweep.md "Size studies". An int
        keeps today's draws (and run hash); `[s]` is the one-size study (nested draws).
      corpus_mode: "same" (explicands from the corpus class) or "different" (from others).
      seeds: one run per seed (means and 95% CIs over them).
      targets: names of `cocoa_jax.targets.TARGETS`; similarity "cosine" or "dot".
      methods: method name (`cocoa_jax.methods.METHODS`) -> the options this run overrides
        ({} = the method's signature defaults).
      include_random: add the random-attribution benchmark row.
      blur_kernel_size, blur_sigma: baseline blur (removed pixels take its values too).
      eval_steps, eval_absolute, eval_superpixel: insertion/deletion settings.
      eval_removal: how insertion/deletion removes features: "blend" (default: pixels take the
        blurred baseline's values, the paper's) or "token_drop" (a ViT encoder, one with token access:
        the patches are the features, a removed patch's token is left out; `eval_superpixel` must
        stay 1). "blend" is left out of the run hash, so earlier runs keep theirs.
      probe_dir: a saved `cocoa_jax.probe` probe; None trains one on `probe_train_size`
        corpus-split samples (None: all) and reports its accuracy on the explicand split.
      randomize_model: true re-draws the encoder's parameters per seed with
        `cocoa_jax.models.randomize.randomize_params(params, jax.random.key(seed))` (the official
        `--randomize-model`) before sampling, attribution and evaluation; the probe is then trained
        per seed on the randomised encoder (`probe_dir` is refused). false (default) is left out of
        the run hash, so earlier runs keep theirs.
      randomize_cascade: true adds the CASCADING model-randomisation test (Adebayo et al., 2018) to a
        run of the trained encoder: every unit (not the random benchmark) also attributes its
        explicands under each step of `cascading_randomizations(params, jax.random.key(seed))`
        (blocks randomised from the top, in the forward order read by `forward_block_order`; the
        last step is `randomize_model`'s encoder of that seed), each step's target directions from
        that step's encoder (same samples and keys), and stores the per-explicand Spearman
        correlations of each step's maps with the trained maps (`cascade_spearman[_abs]`, step 0 =
        the trained encoder again, which must give 1). The tables and curves stay the trained
        encoder's. Not with `randomize_model` or a size study. false (default) is left out of the
        run hash.
      explicand_batch: explicands attributed and evaluated together in one sharded program
        (explicands of several units of one seed and method are grouped; rounded up to a
        multiple of the device count).
      attribution_batch: perturbed inputs per encoder call per explicand inside a method
        (None: the method's default).
      eval_batch: ablated inputs per encoder call during evaluation, over the whole group.
      estimators: estimator profile under `methods` (`cocoa_jax.methods.PROFILES`): "paper"
        (default: the signature defaults; left out of the run hash, so earlier runs keep theirs)
        or "fast" (centred RISE, 416 masks; IG 16 steps); options in `methods` override it.
      metrics: names of `cocoa_jax.evaluation.METRICS` (docs/metrics.md) scored on every unit's maps
        against its targets with the blurred baseline, default options, key fold_in(key(seed),
        class): optional columns of the report with CIs and directions. Empty (default) is left out
        of the run hash.
    """

    encoder: str = "digits"
    encoder_dir: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    corpus_split: str = "train"
    explicand_split: str = "test"
    preprocess: str = "model"
    classes: tuple[int, ...] | None = None
    explicands_per_class: int = 25
    corpus_size: int = 100
    foil_size: int = 1500
    corpus_mode: str = "same"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    targets: tuple[str, ...] = TARGET_NAMES
    similarity: str = "cosine"
    methods: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=lambda: {"integrated_gradients": {}, "gradient_shap": {}, "rise": {}})
    include_random: bool = True
    blur_kernel_size: int = 21
    blur_sigma: float = 5.0
    eval_steps: int = 50
    eval_absolute: bool = False
    eval_superpixel: int = 1
    eval_removal: str = "blend"
    probe_dir: str | None = None
    probe_train_size: int | None = None
    probe_test_size: int | None = None
    randomize_model: bool = False
    randomize_cascade: bool = False
    explicand_batch: int = 8
    attribution_batch: int | None = None
    eval_batch: int = 512
    estimators: str = "paper"
    metrics: tuple[str, ...] = ()

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), FIELD_TYPES[field.name])
        # Normalise sequences to tuples so equal configs hash equally.
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        object.__setattr__(self, "methods", {name: dict(options) if isinstance(options, dict) else options
                                             for name, options in self.methods.items()})
        for name in SIZE_FIELDS:  # a list: ascending, so [5, 1] and [1, 5] are one study
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if len(set(value)) != len(value):
                    raise ValueError(f"config field `{name}` has duplicates: {list(value)}")
                object.__setattr__(self, name, tuple(sorted(int(v) for v in value)))
        self.validate()

    def validate(self) -> None:
        def positive(name):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"config field `{name}` must be a positive integer, got {value!r}")

        for name in ("explicands_per_class", "eval_steps", "eval_superpixel",
                     "blur_kernel_size", "explicand_batch", "eval_batch"):
            positive(name)
        for name in SIZE_FIELDS:
            for value in (getattr(self, name) if isinstance(getattr(self, name), tuple) else (getattr(self, name),)):
                if value <= 0:
                    raise ValueError(f"config field `{name}` must hold positive integers, got {value!r}")
        if all(isinstance(getattr(self, name), tuple) for name in SIZE_FIELDS):
            raise ValueError("config fields `corpus_size` and `foil_size` are both lists: a size study varies one "
                             "of them (run a corpus study and a foil study separately)")
        if self.randomize_model and self.probe_dir:
            raise ValueError("config field `probe_dir` cannot be used with `randomize_model`: the probe is trained "
                             "per seed on the randomised encoder")
        if self.randomize_cascade and self.randomize_model:
            raise ValueError("config field `randomize_cascade` cannot be used with `randomize_model`: the cascade "
                             "starts from the trained encoder (its last step is randomize_model's encoder)")
        if self.randomize_cascade and self.size_field is not None:
            raise ValueError(f"config field `randomize_cascade` cannot be used with a size study "
                             f"(`{self.size_field}` is a list)")
        for name in ("attribution_batch", "probe_train_size", "probe_test_size"):
            if getattr(self, name) is not None:
                positive(name)
        if not self.seeds:
            raise ValueError("config field `seeds` is empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"config field `seeds` has duplicates: {list(self.seeds)}")
        if not self.targets:
            raise ValueError("config field `targets` is empty")
        for t in self.targets:
            if t not in TARGET_NAMES:
                raise ValueError(f"config field `targets` entry {t!r} is not one of {list(TARGET_NAMES)}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"config field `targets` has duplicates: {list(self.targets)}")
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"config field `similarity` must be 'cosine' or 'dot', got {self.similarity!r}")
        if self.corpus_mode not in CORPUS_MODES:
            raise ValueError(f"config field `corpus_mode` must be one of {list(CORPUS_MODES)}, "
                             f"got {self.corpus_mode!r}")
        if not (self.methods or self.include_random):
            raise ValueError("config field `methods` is empty and include_random is false: nothing to run")
        for name, options in self.methods.items():
            if name not in METHOD_NAMES:
                raise ValueError(f"config field `methods` key {name!r} is not one of {list(METHOD_NAMES)}")
            methods_mod.check_options(name, options, where=f"methods.{name}")
        if self.blur_sigma <= 0:
            raise ValueError(f"config field `blur_sigma` must be positive, got {self.blur_sigma!r}")
        if self.blur_kernel_size % 2 == 0:
            raise ValueError(f"config field `blur_kernel_size` must be odd, got {self.blur_kernel_size}")
        if self.estimators not in methods_mod.PROFILES:
            raise ValueError(f"config field `estimators` must be one of {list(methods_mod.PROFILES)}, "
                             f"got {self.estimators!r}")
        if self.classes is not None and not self.classes:
            raise ValueError("config field `classes` is empty (use null for all classes)")
        self.check_metrics()
        from cocoa_jax.attribution_methods.token_drop import REMOVALS

        if self.eval_removal not in REMOVALS:
            raise ValueError(f"config field `eval_removal` must be one of {list(REMOVALS)}, got {self.eval_removal!r}")
        if self.eval_removal == "token_drop" and self.eval_superpixel != 1:
            raise ValueError("config field `eval_superpixel` must be 1 with eval_removal 'token_drop' (the features "
                             "are the ViT's patches)")

    def check_metrics(self) -> None:
        """`metrics`: names of `cocoa_jax.evaluation.METRICS` the sweep can give what they read (the
        unit's explicands, maps, targets and blurred baseline; no explainer, mask or other model)."""
        from cocoa_jax import evaluation

        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"config field `metrics` has duplicates: {list(self.metrics)}")
        for name in self.metrics:
            if name not in evaluation.METRICS:
                raise ValueError(f"config field `metrics` has {name!r}, not one of {sorted(evaluation.METRICS)}")
            record = evaluation.get(name)
            unmet = [flag for flag in ("needs_explainer", "needs_mask", "needs_randomized_model",
                                       "needs_alternative_target") if getattr(record, flag)]
            if unmet:
                raise ValueError(f"config field `metrics` has {name!r}, which the sweep cannot run ({unmet[0]}); "
                                 f"use cocoa_jax.evaluation.evaluate")

    def check_method_values(self, image_shape) -> None:
        """Check every method option VALUE for (H, W, C) images (`methods.check_values`), with
        `attribution_batch` as the batch size: a ValueError/TypeError naming `methods.NAME.OPTION`.
        Call it before any work (the sweep command does, with the encoder's input shape)."""
        for name in self.methods:
            options = methods_mod.with_profile(self.estimators, name, self.methods[name])
            methods_mod.check_values(name, options, image_shape, batch_size=self.attribution_batch,
                                     names={**{k: f"methods.{name}.{k}" for k in methods_mod.defaults(name)},
                                            "batch_size": "attribution_batch"})

    # -- units -------------------------------------------------------------------------

    @property
    def method_names(self) -> tuple[str, ...]:
        """What the units run, in run order: the methods, then the reference map (`include_random`:
        the random attribution, `metrics.RANDOM_REFERENCE`) last."""
        return tuple(self.methods) + ((RANDOM_REFERENCE.name,) if self.include_random else ())

    def reference_of(self, method: str) -> ReferenceMap | None:
        """The reference map generator a unit named `method` runs (it explains no target and never
        calls the encoder), None for an attribution method. The one place the sweep tells them apart."""
        return RANDOM_REFERENCE if self.include_random and method == RANDOM_REFERENCE.name else None

    def unit_targets(self, method: str) -> tuple[str, ...]:
        """The target names of a unit's results: the config's targets, or the reference map's own
        name (its one map serves no target)."""
        reference = self.reference_of(method)
        return (reference.name,) if reference is not None else tuple(self.targets)

    def unit_columns(self, method: str) -> list[tuple[str, int | None]]:
        """The attribution columns of a unit of `method` (`target_columns`; one for a reference map)."""
        reference = self.reference_of(method)
        return [(reference.name, None)] if reference is not None else self.target_columns()

    # -- size studies --------------------------------------------------------------------

    @property
    def size_field(self) -> str | None:
        """The field a size study varies ("corpus_size" or "foil_size"), None for a plain run."""
        for name in SIZE_FIELDS:
            if isinstance(getattr(self, name), tuple):
                return name
        return None

    @property
    def sizes(self) -> tuple[int, ...]:
        """The varied sizes, ascending ((the corpus size,) for a plain run)."""
        value = getattr(self, self.size_field or "corpus_size")
        return value if isinstance(value, tuple) else (value,)

    def size_pairs(self) -> list[tuple[int, int]]:
        """(corpus size, foil size) of every size of the study, in `sizes` order."""
        return [(s, self.foil_size) if self.size_field != "foil_size" else (self.corpus_size, s)
                for s in self.sizes]

    @property
    def max_corpus_size(self) -> int:
        return max(p[0] for p in self.size_pairs())

    @property
    def max_foil_size(self) -> int:
        return max(p[1] for p in self.size_pairs())

    def target_columns(self) -> list[tuple[str, int | None]]:
        """The attribution columns of a unit: (target, size index), in target order; a target that
        reads the varied corpus / foil gets one column per size, the others one column (None)."""
        if self.size_field is None:
            return [(t, None) for t in self.targets]
        reads = "corpus_reps" if self.size_field == "corpus_size" else "foil_reps"
        return [col for t in self.targets for col in
                ([(t, i) for i in range(len(self.sizes))] if reads in targets_mod.TARGETS[t][1] else [(t, None)])]

    def method_options(self, name: str) -> dict[str, Any]:
        """The options a method runs with: its signature defaults updated with the overrides."""
        return methods_mod.resolved_options(name, methods_mod.with_profile(self.estimators, name,
                                                                           self.methods.get(name, {})))

    # -- serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["seeds"] = list(self.seeds)
        data["targets"] = list(self.targets)
        data["classes"] = None if self.classes is None else list(self.classes)
        for name in SIZE_FIELDS:
            if isinstance(data[name], tuple):
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SweepConfig":
        if not isinstance(data, dict):
            raise TypeError(f"a sweep config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str) -> "SweepConfig":
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    def result_fields(self) -> dict:
        """The fields that determine results (the hashed part), methods resolved."""
        data = self.to_dict()
        for name in EXECUTION_FIELDS:
            data.pop(name)
        data["methods"] = {name: _jsonable(methods_mod.identity_options(self.method_options(name)))
                           for name in self.methods}
        if not self.randomize_model:
            data.pop("randomize_model")  # the default is not hashed: earlier runs keep their hash
        if not self.randomize_cascade:
            data.pop("randomize_cascade")  # likewise
        if self.eval_removal == "blend":
            data.pop("eval_removal")  # the default is not hashed: earlier runs keep their hash
        if self.estimators == "paper":
            data.pop("estimators")  # likewise
        if self.metrics:  # the metrics with their (default) options; none: not hashed, earlier runs keep theirs
            from cocoa_jax import evaluation

            data["metrics"] = {name: _jsonable(evaluation.get(name).resolved_options()) for name in self.metrics}
        else:
            data.pop("metrics")
        data["protocol_version"] = PROTOCOL_VERSION
        data["method_streams"] = {name: methods_mod.stream_id(name) for name in self.method_names}
        return data

    def config_hash(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of `result_fields()`."""
        canonical = json.dumps(self.result_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "SweepConfig":
        return dataclasses.replace(self, **changes)


def _override_keys(path: tuple[str, ...]) -> list[str] | None:
    """The keys valid under `path` of the config (None: any key; only known dicts get {})."""
    if path == ():
        return [f.name for f in dataclasses.fields(SweepConfig)]
    if path == ("methods",):
        return list(METHOD_NAMES)
    if len(path) == 2 and path[0] == "methods" and path[1] in METHOD_NAMES:
        return list(methods_mod.defaults(path[1]))
    return None


def parse_value(text: str):
    """JSON, or the text itself as a bare string (`--set encoder=digits`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(base: dict, overrides) -> dict:
    """`base` (config fields) with each "PATH=JSON" of `overrides` applied, in order.

    PATH is a field ("seeds=[0,1]", replaced whole) or a dotted path into a dict field that
    changes one entry and keeps the rest ("methods.rise.n_masks=2000"; "methods.rise={...}"
    replaces rise's options only). Unknown names are a ValueError naming the path and the
    valid keys. Returns a new dict (`base` is not changed).
    """
    out = json.loads(json.dumps(base, default=list))  # a deep copy that `base` never sees
    for item in overrides:
        path_text, sep, value_text = str(item).partition("=")
        parts = tuple(path_text.strip().split("."))
        if not sep or not all(parts):
            raise ValueError(f"--set expects FIELD=JSON or FIELD.KEY...=JSON, got {item!r}")
        node = out
        for depth, key in enumerate(parts):
            here = ".".join(parts[:depth])
            if not isinstance(node, dict):
                raise ValueError(f"--set {path_text}: `{here}` is not an object (it holds {json.dumps(node)}); "
                                 f"set it whole: --set {here}=JSON")
            valid = _override_keys(parts[:depth])
            if valid is not None and key not in valid:
                where = f"key {key!r} in `{here}`" if depth else f"field {key!r}"
                raise ValueError(f"--set {path_text}: unknown {where}; valid: {', '.join(valid) or 'none'}")
            if depth == len(parts) - 1:
                node[key] = parse_value(value_text)
            else:
                if depth == 0 and key not in node:  # a --config file without the field: its default
                    node[key] = SweepConfig().to_dict()[key]
                if node.get(key) is None and _override_keys(parts[:depth + 1]) is not None and depth:
                    node[key] = {}  # a method not in the table yet: methods.smoothgrad.n_samples=8
                node = node.get(key)
    return out


def describe_methods(methods: dict, dropped=()) -> str:
    """One line: the methods that run with their overrides, and those left out.

    e.g. "methods: rise (n_masks 2000); not run: integrated_gradients, gradient_shap".
    """
    runs = "; ".join(name + (f" ({', '.join(f'{k} {json.dumps(v)}' for k, v in options.items())})"
                             if isinstance(options, dict) and options else "")
                     for name, options in methods.items()) or "none"
    line = f"methods: {runs}"
    if dropped:
        line += f"; not run: {', '.join(dropped)}"
    return line


def _jsonable(options: dict) -> dict:
    return json.loads(json.dumps(options, default=str))


def diff_fields(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two (nested) result-field dicts: 'field: a -> b'."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_fields(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def digits_reduced() -> SweepConfig:
    """The reduced protocol run on the embedded digits encoder (docs/sweep.md)."""
    return SweepConfig(
        encoder="digits", dataset="digits", classes=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
        explicands_per_class=5, corpus_size=100, foil_size=500, seeds=(0, 1, 2, 3, 4),
        methods={"integrated_gradients": {"n_steps": 20}, "gradient_shap": {"n_samples": 20},
                 "rise": {"n_masks": 1000}},
        eval_steps=32,
    )


# ----------------------------------------------------------------------------- the unit plan


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of work: a seed, a corpus class and a method (or the reference map)."""

    seed: int
    class_id: int
    method: str

    @property
    def unit_id(self) -> str:
        return f"s{self.seed}_c{self.class_id}_{self.method}"


def plan_units(config: SweepConfig, classes) -> list[Unit]:
    """All units in plan order (seed, class, method): the order hosts split them in."""
    return [Unit(seed, int(c), m) for seed in config.seeds for c in classes for m in config.method_names]


# ----------------------------------------------------------------------------- encoder fields
# What a researcher sets after `cocoa-jax convert`, checked from model.json alone (no weights
# loaded, nothing written), so each mistake is one line naming the field(s) to set.

DIGITS_DATA_SHAPE = (32, 32, 1)  # the `dataset: "digits"` images (cocoa_jax.data.digits)


def check_encoder_fields(config: "SweepConfig") -> None:
    """`encoder`, `encoder_dir`, `dataset` and `preprocess` against each other; ValueError naming
    the field(s) to set: a converted encoder without `encoder_dir`, an `encoder_dir` whose
    model.json names another architecture (or that holds none), an encoder whose input size the
    data cannot give (the 32x32 grey digits to a 224-px encoder; a named `preprocess` cropping to
    another size). Architecture names themselves are `sweep.inputs.check_encoder_source`'s."""
    from cocoa_jax import models

    spec = models.ARCHITECTURES.get(config.encoder)
    if spec is None:
        return
    directory = None if config.encoder_dir is None else os.path.expanduser(config.encoder_dir)
    if directory is None and spec.default_dir is None:
        raise ValueError(f"config field `encoder_dir` is required with encoder {config.encoder!r} (a converted "
                         f"encoder): --set encoder_dir=DIR, the OUT_DIR of `cocoa-jax convert {config.encoder} "
                         f"CHECKPOINT OUT_DIR`")
    if directory is not None and os.path.isdir(directory):
        _check_encoder_dir(config, spec, directory)
    shape = models.input_shape_of(config.encoder, directory)
    if shape is not None:
        _check_data_fits(config, tuple(shape))


def _check_encoder_dir(config, spec, directory: str) -> None:
    from cocoa_jax import models

    if not os.path.isfile(os.path.join(directory, models.METADATA_FILE)):
        if spec.default_dir is not None:
            return  # a bare checkpoint of a shipped architecture (`cocoa-jax train-digits --out`)
        raise ValueError(f"config field `encoder_dir` {config.encoder_dir!r} holds no {models.METADATA_FILE}: "
                         f"set it to the OUT_DIR of `cocoa-jax convert {config.encoder} CHECKPOINT OUT_DIR`")
    arch = models.read_metadata(directory)["arch"]  # a damaged model.json: ModelDirError, one line
    if arch != config.encoder:
        other = ("drop `encoder_dir` (the shipped weights)" if spec.default_dir is not None
                 else f"set `encoder_dir` to the OUT_DIR of `cocoa-jax convert {config.encoder} ...`")
        raise ValueError(f"config field `encoder_dir` {config.encoder_dir!r} holds a converted {arch!r} model "
                         f"(its {models.METADATA_FILE}), not {config.encoder!r}: --set encoder={arch}, or {other}")


def _check_data_fits(config, shape: tuple) -> None:
    size = "x".join(map(str, shape))
    encoder = f"encoder {config.encoder!r}" + (f" ({config.encoder_dir})" if config.encoder_dir else "")
    if config.dataset == "digits":
        # As `sweep.inputs.digits_for_encoder` feeds them: as they are, or grey in 3 channels.
        if shape[:2] != DIGITS_DATA_SHAPE[:2] or shape[2] not in (1, 3):
            raise ValueError(
                f"config field `dataset` 'digits' holds 32x32 grey images but {encoder} takes {size}: set "
                f"`dataset` to images the encoder's preprocessing resizes to {shape[0]}x{shape[1]}: "
                f"--set dataset=folder:<root> (ROOT/<split>/<class>/*.png) or --set dataset=tfds:<name> "
                f"--set data_dir=DIR, with preprocess 'model' (the default)")
        return
    if config.preprocess in ("model", "none"):
        return
    from cocoa_jax.models import preprocessing

    named = getattr(preprocessing, config.preprocess, None)
    if not isinstance(named, preprocessing.Preprocessing):
        choices = sorted(n for n, v in vars(preprocessing).items() if isinstance(v, preprocessing.Preprocessing))
        raise ValueError(f"config field `preprocess` {config.preprocess!r} is not 'model', 'none' or one of "
                         f"{', '.join(choices)} (cocoa_jax.models.preprocessing)")
    if (named.crop, named.crop) != tuple(shape[:2]):
        raise ValueError(f"config field `preprocess` {config.preprocess!r} crops images to {named.crop}x{named.crop} "
                         f"but {encoder} takes {size}: --set preprocess=model (the encoder's own preprocessing)")
