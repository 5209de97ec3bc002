"""Sweep configuration: what to run (hashed) and how to run it (not hashed).

Defaults are the paper's protocol (Section 4.1, Appendix H.3): 4 targets with cosine
similarity; IG 50 steps, GradientSHAP 50 samples with sigma 0.2, RISE 5000 masks with
p = 0.5 and a 4x4 grid at 32 px / 7x7 at 224 px; blurred baseline GaussianBlur(21, 5);
corpus 100, foil 1500; 5 seeds; insertion/deletion in 50 steps.

The hash covers every field that changes results; execution settings (batch sizes) do
not change results (attribution methods are batch-size invariant) and are left out.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

TARGET_NAMES = ("label_free", "contrastive_label_free", "corpus", "cocoa")
METHOD_NAMES = ("integrated_gradients", "gradient_shap", "rise", "smoothgrad", "vanilla_gradients")
RANDOM_METHOD = "random"
CORPUS_MODES = ("same", "different")

DEFAULT_METHODS = {
    "integrated_gradients": {"n_steps": 50, "method": "gausslegendre"},
    "gradient_shap": {"n_samples": 50, "stdev": 0.2},
    "rise": {"n_masks": 5000, "keep_prob": 0.5, "grid_size": None},  # None: 4x4 up to 64 px, else 7x7
}

# Fields that only change how fast a sweep runs, not its results.
EXECUTION_FIELDS = ("explicand_batch", "attribution_batch", "eval_batch")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """One evaluation protocol.

    Attributes:
      encoder: "digits" (the embedded encoder), an architecture of `cocoa_jax.models`
        (with `encoder_dir`), or any name when the encoder object is passed to `run_sweep`.
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
      corpus_size, foil_size: the paper's 100 and 1500.
      corpus_mode: "same" (explicands from the corpus class) or "different" (from others).
      seeds: one run per seed (means and 95% CIs over them).
      targets: subset of TARGET_NAMES; similarity "cosine" or "dot".
      methods: name -> keyword settings of `cocoa_jax.attribution`.
      include_random: add the random-attribution benchmark row.
      blur_kernel_size, blur_sigma: baseline blur (removed pixels take its values too).
      eval_steps, eval_absolute, eval_superpixel: insertion/deletion settings.
      probe_dir: a saved `cocoa_jax.probe` probe; None trains one on `probe_train_size`
        corpus-split samples (None: all) and reports its accuracy on the explicand split.
      explicand_batch: explicands attributed together (vmapped).
      attribution_batch: perturbed inputs per encoder call inside a method (None: method default).
      eval_batch: ablated inputs per encoder call during evaluation.
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
    methods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: json.loads(json.dumps(DEFAULT_METHODS)))
    include_random: bool = True
    blur_kernel_size: int = 21
    blur_sigma: float = 5.0
    eval_steps: int = 50
    eval_absolute: bool = False
    eval_superpixel: int = 1
    probe_dir: str | None = None
    probe_train_size: int | None = None
    probe_test_size: int | None = None
    explicand_batch: int = 8
    attribution_batch: int | None = None
    eval_batch: int = 512

    def __post_init__(self):
        # Normalise sequences to tuples so equal configs hash equally.
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        self.validate()

    def validate(self) -> None:
        def positive(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")

        for name in ("explicands_per_class", "corpus_size", "foil_size", "eval_steps", "eval_superpixel",
                     "blur_kernel_size", "explicand_batch", "eval_batch"):
            positive(name)
        for name in ("attribution_batch", "probe_train_size", "probe_test_size"):
            if getattr(self, name) is not None:
                positive(name)
        if not self.seeds:
            raise ValueError("`seeds` is empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`seeds` has duplicates: {self.seeds}")
        if not self.targets:
            raise ValueError("`targets` is empty")
        for t in self.targets:
            if t not in TARGET_NAMES:
                raise ValueError(f"`targets` entry {t!r} is not one of {list(TARGET_NAMES)}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"`targets` has duplicates: {self.targets}")
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"`similarity` must be 'cosine' or 'dot', got {self.similarity!r}")
        if self.corpus_mode not in CORPUS_MODES:
            raise ValueError(f"`corpus_mode` must be one of {list(CORPUS_MODES)}, got {self.corpus_mode!r}")
        if not isinstance(self.methods, dict) or not (self.methods or self.include_random):
            raise ValueError("`methods` must be a non-empty dict name -> settings (or include_random)")
        for name, settings in self.methods.items():
            if name not in METHOD_NAMES:
                raise ValueError(f"`methods` key {name!r} is not one of {list(METHOD_NAMES)}")
            if not isinstance(settings, dict):
                raise TypeError(f"`methods[{name!r}]` must be a dict of settings, got {type(settings).__name__}")
        if not (isinstance(self.blur_sigma, (int, float)) and self.blur_sigma > 0):
            raise ValueError(f"`blur_sigma` must be positive, got {self.blur_sigma!r}")
        if self.blur_kernel_size % 2 == 0:
            raise ValueError(f"`blur_kernel_size` must be odd, got {self.blur_kernel_size}")

    # -- units -------------------------------------------------------------------------

    @property
    def method_names(self) -> tuple[str, ...]:
        """Methods in run order; the random benchmark last."""
        return tuple(self.methods) + ((RANDOM_METHOD,) if self.include_random else ())

    # -- serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["seeds"] = list(self.seeds)
        data["targets"] = list(self.targets)
        data["classes"] = None if self.classes is None else list(self.classes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SweepConfig":
        if not isinstance(data, dict):
            raise TypeError(f"a sweep config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sweep config field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str) -> "SweepConfig":
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    def result_fields(self) -> dict:
        """The fields that determine results (the hashed part)."""
        data = self.to_dict()
        for name in EXECUTION_FIELDS:
            data.pop(name)
        return data

    def config_hash(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of `result_fields()`."""
        canonical = json.dumps(self.result_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "SweepConfig":
        return dataclasses.replace(self, **changes)


def digits_reduced() -> SweepConfig:
    """The reduced protocol run on the embedded digits encoder (docs/sweep.md)."""
    return SweepConfig(
        encoder="digits", dataset="digits", classes=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
        explicands_per_class=5, corpus_size=100, foil_size=500, seeds=(0, 1, 2, 3, 4),
        methods={"integrated_gradients": {"n_steps": 20, "method": "gausslegendre"},
                 "gradient_shap": {"n_samples": 20, "stdev": 0.2},
                 "rise": {"n_masks": 1000, "keep_prob": 0.5, "grid_size": None}},
        eval_steps=32,
    )
