"""The small offline text sweep: which token maps best explain why a caption matches a corpus and
not a foil, scored by token insertion / deletion, with 95% confidence intervals over seeds.

The text analogue of `cocoa-jax sweep` (docs/sweep.md) on what ships with the package: the digits
image-text dual encoder (`models.digits_clip`) and captions generated from its vocabulary.

* **Explicands.** For each digit class c and each of `templates` (e.g. "this is a photo of a
  {digit}"), one caption whose {digit} is the digit's word or numeral ("seven" / "7"), drawn per
  seed: classes x templates captions per seed, the same lengths every seed (one compiled program
  per method and caption length).
* **Corpus and foil.** `corpus="images"` (default, cross-modal): `corpus_size` training images of
  digit c, `foil_size` random training images of the other digits, and a second, independent foil
  draw for `ccs_resampled_foil`; all encoded by the image tower. `corpus="captions"`: the digit's
  training captions (`digits_clip.TEMPLATES`) and `foil_size` captions of the other digits.
* **Targets and methods.** Every target of `targets.TARGETS` the config names (stacked: K targets
  share every pass) under every method of the table (`text.attribution.token_scores`, special
  tokens and padding never attributed, perturbation by dropping tokens).
* **Evaluation.** Token insertion / deletion (`text.evaluation.token_insertion_deletion`: one
  token per step, the blank-token reference), measures of `metrics.MEASURES` that need no probe
  (`ccs`, `ccs_resampled_foil`, `rep_shift`), each target's map ranked on its own. The random
  reference (`metrics.RANDOM_REFERENCE`) is one row without a target, as in the image sweep.
* **Table.** A cell is the mean over seeds of the seed's mean AUC over its captions, and the 95%
  t half-width over seeds (`sweep.tables.ci95_halfwidth`), written by the image sweep's table
  helpers (`format_cell`, `column_header`, best marks in each measure's direction).

Seed s draws with `numpy.random.default_rng([s, class, role])` (role: explicand forms, corpus,
foil, resampled foil) and keys `jax.random.key(s)` for the methods (`explicand_program.method_keys`)
and `fold_in(key(s), 1)` for the random reference.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import re
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import methods as methods_mod
from cocoa_jax import metrics
from cocoa_jax import targets as targets_mod
from cocoa_jax.metrics import KINDS, RANDOM_REFERENCE
from cocoa_jax.text.attribution import content_positions
from cocoa_jax.text.encoders import TextEncoder, digits_text_encoder
from cocoa_jax.text.evaluation import sentence_aucs
from cocoa_jax.text.pipeline import attribute_tokens

__all__ = ["CORPUS_MODES", "DEFAULT_TEMPLATES", "MEASURES", "StudyResult", "TextStudyConfig", "markdown_table",
           "csv_table", "run_study"]

# Explicand templates over the digits vocabulary; {digit} takes the word or the numeral. Not all are
# training captions (digits_clip.TEMPLATES): "the digit {digit}" and "this is the number {digit}" are new.
DEFAULT_TEMPLATES = ("a handwritten {digit}", "the digit {digit}", "a photo of the digit {digit}",
                     "this is a photo of a {digit}")
CORPUS_MODES = ("images", "captions")
MEASURES = ("ccs", "ccs_resampled_foil", "rep_shift")  # the image measures that need no probe
_ROLES = {"forms": 0, "corpus": 1, "foil": 2, "resampled_foil": 3}


@dataclasses.dataclass(frozen=True)
class TextStudyConfig:
    """What the text study runs (defaults: about a minute on a 2-core CPU; docs/text.md).

    seeds: each gives one estimate per cell (confidence intervals are over seeds).
    classes: digit classes (each one's captions are explicands; its images or captions the corpus).
    templates: explicand templates with one {digit} slot, words of `digits_clip.VOCABULARY` only.
    corpus: "images" (cross-modal) or "captions"; corpus_size / foil_size: images drawn (a caption
      corpus is the digit's training captions; a caption foil draws foil_size of the others', at most 45).
    methods, options: of the method table; targets: of `targets.TARGETS`; measures: of `MEASURES`.
    """

    seeds: tuple = (0, 1, 2)
    classes: tuple = tuple(range(10))
    templates: tuple = DEFAULT_TEMPLATES
    corpus: str = "images"
    corpus_size: int = 50
    foil_size: int = 200
    methods: tuple = ("integrated_gradients", "vanilla_gradients", "occlusion")  # kernel_shap, gradient_shap: ~1 min more each (compiles)
    options: dict = dataclasses.field(default_factory=dict)
    targets: tuple = ("cocoa", "corpus", "label_free", "contrastive_label_free")
    measures: tuple = MEASURES
    similarity: str = "cosine"

    def __post_init__(self):
        from cocoa_jax.models import digits_clip as dc

        for name in ("seeds", "classes", "templates", "methods", "targets", "measures"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
                raise ValueError(f"`{name}` must be a non-empty sequence, got {value!r}")
            if len(set(value)) != len(value):
                raise ValueError(f"`{name}` has duplicates: {list(value)}")
            object.__setattr__(self, name, tuple(value))
        for seed in self.seeds:
            if not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"`seeds` must be integers >= 0, got {seed!r}")
        for c in self.classes:
            if not isinstance(c, (int, np.integer)) or not 0 <= c <= 9:
                raise ValueError(f"`classes` must be digits 0..9, got {c!r}")
        for t in self.templates:
            if not isinstance(t, str) or t.count("{digit}") != 1:
                raise ValueError(f"`templates` entries must hold one {{digit}} slot, got {t!r}")
            try:
                dc.tokenize([t.format(digit="seven"), t.format(digit="7")])  # vocabulary and length
            except ValueError as err:
                raise ValueError(f"`templates` entry {t!r} " + re.sub(r"^`texts\[\d+\]` \(.*?\) ", "", str(err))) from None
        if self.corpus not in CORPUS_MODES:
            raise ValueError(f"`corpus` must be one of {CORPUS_MODES}, got {self.corpus!r}")
        for name in ("corpus_size", "foil_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        for name in self.methods:
            methods_mod.get(name)
        for name in self.options:
            if name not in self.methods:
                raise ValueError(f"`options` has method {name!r}, which is not in `methods` {list(self.methods)}")
        for name in self.targets:
            if name not in targets_mod.TARGETS:
                raise ValueError(f"unknown target {name!r}; expected one of {list(targets_mod.TARGETS)}")
        for name in self.measures:
            if name not in MEASURES:
                raise ValueError(f"`measures` must be from {MEASURES} (the measures that need no probe), got {name!r}")
        if self.similarity not in targets_mod.SIMILARITIES:
            raise ValueError(f"`similarity` must be one of {targets_mod.SIMILARITIES}, got {self.similarity!r}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclasses.dataclass
class StudyResult:
    """aucs: {(row, target): (S, 2, M) per-seed means (kinds insertion, deletion; measures in
    config order)}; rows are methods then "random" (target ""). captions: per seed, the explicands.
    per_caption: {(row, target): (S, N, 2, M)} before the mean over captions."""

    config: TextStudyConfig
    aucs: dict
    per_caption: dict
    captions: list
    seconds: dict


def _captions(config: TextStudyConfig, seed: int) -> tuple[list, np.ndarray]:
    from cocoa_jax.models import digits_clip as dc

    texts, labels = [], []
    for c in config.classes:
        forms = np.random.default_rng([seed, c, _ROLES["forms"]]).integers(0, 2, len(config.templates))
        for template, form in zip(config.templates, forms):
            texts.append(template.format(digit=(dc.DIGIT_WORDS, dc.DIGIT_NUMERALS)[int(form)][c]))
            labels.append(c)
    return texts, np.asarray(labels)


def _corpus_and_foils(config, seed, c, model, data, encoder):
    """(corpus, foil, resampled foil) representations of class c for one seed."""
    from cocoa_jax.models import digits_clip as dc

    draw = lambda role, pool, k: np.random.default_rng([seed, c, _ROLES[role]]).choice(
        pool, size=min(k, len(pool)), replace=False)
    if config.corpus == "images":
        same, other = np.flatnonzero(data.y_train == c), np.flatnonzero(data.y_train != c)
        encode = lambda idx: np.asarray(model.encode(data.x_train[np.sort(idx)]))
        return (encode(draw("corpus", same, config.corpus_size)), encode(draw("foil", other, config.foil_size)),
                encode(draw("resampled_foil", other, config.foil_size)))
    own = [dc.caption(t, c) for t in dc.TEMPLATES]
    others = np.asarray([dc.caption(t, d) for d in range(10) if d != c for t in dc.TEMPLATES])
    return (encoder.encode(own), encoder.encode(list(draw("foil", others, config.foil_size))),
            encoder.encode(list(draw("resampled_foil", others, config.foil_size))))


def _measures(config, cocoa, resampled, rep):
    return metrics.make_measures(config.measures, ccs=cocoa, ccs_resampled_foil=resampled, explicand_rep=rep)


def run_study(config: TextStudyConfig = TextStudyConfig(), *, model=None,
              progress: Optional[Callable[[str], None]] = None) -> StudyResult:
    """Run the study (see the module docstring); `model`: the digits dual encoder (default: shipped)."""
    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.models.digits_clip import load_digits_clip

    model = model or load_digits_clip()
    encoder: TextEncoder = digits_text_encoder(model)
    data = load_digits_split(seed=0)  # the split the dual encoder was trained on
    say = progress or (lambda line: None)
    seconds = {"data": 0.0, **{m: 0.0 for m in config.methods}, "evaluation": 0.0}
    per_caption = {(m, t): [] for m in config.methods for t in config.targets}
    per_caption[(RANDOM_REFERENCE.name, "")] = []
    all_captions = []
    encode_ids = jax.jit(encoder.encode_ids)
    for seed in config.seeds:
        t0 = time.perf_counter()
        texts, labels = _captions(config, seed)
        all_captions.append(texts)
        ids = encoder.tokenize(texts)
        content = [content_positions(encoder, row) for row in ids]
        reps = np.asarray(encode_ids(encoder.params, jnp.asarray(ids)))
        directions, measures = [], [None] * len(texts)
        for c in config.classes:
            members = np.flatnonzero(labels == c)
            corpus, foil, resampled = _corpus_and_foils(config, seed, c, model, data, encoder)
            stacked = targets_mod.build_stacked(config.targets, explicand_reps=reps[members], corpus_reps=corpus,
                                                foil_reps=foil, similarity=config.similarity)
            direction = stacked.direction
            if direction.ndim == 2:
                direction = jnp.broadcast_to(direction, (len(members),) + direction.shape)
            directions.append((members, np.asarray(direction)))
            cocoa = targets_mod.cocoa(corpus, foil, similarity=config.similarity)
            again = targets_mod.cocoa(corpus, resampled, similarity=config.similarity)
            for i in members:
                measures[i] = _measures(config, cocoa, again, jnp.asarray(reps[i]))
        order = np.concatenate([m for m, _ in directions])
        direction = np.concatenate([d for _, d in directions])[np.argsort(order)]
        target = targets_mod.Target(jnp.asarray(direction), stacked.normalize)
        seconds["data"] += time.perf_counter() - t0
        maps = attribute_tokens(encoder, ids, content, target, config.methods, config.options, jax.random.key(seed),
                                seconds=(timed := {}))
        for name, value in timed.items():
            seconds[name] += value
        t0 = time.perf_counter()
        for name in config.methods:
            aucs = np.stack(sentence_aucs(encoder, ids, content, maps[name], measures))  # (N, K, 2, M)
            for k, t in enumerate(config.targets):
                per_caption[(name, t)].append(aucs[:, k])
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), len(texts))
        random_maps = [np.asarray(RANDOM_REFERENCE.fn(keys[i], (len(c), 1)))[:, 0][None] for i, c in enumerate(content)]
        per_caption[(RANDOM_REFERENCE.name, "")].append(
            np.stack(sentence_aucs(encoder, ids, content, random_maps, measures))[:, 0])
        seconds["evaluation"] += time.perf_counter() - t0
        say(f"seed {seed}: {len(texts)} captions, {len(config.methods)} methods + random reference")
    per_caption = {key: np.stack(v) for key, v in per_caption.items()}             # (S, N, 2, M)
    aucs = {key: v.mean(axis=1) for key, v in per_caption.items()}                  # (S, 2, M)
    return StudyResult(config, aucs, per_caption, all_captions, seconds)


# ------------------------------------------------------------------------------------------ table


def _body(result: StudyResult):
    from cocoa_jax.sweep.tables import ci95_halfwidth

    config = result.config
    columns = [(kind, m) for m in config.measures for kind in KINDS]
    body = []
    for key in [(m, t) for m in config.methods for t in config.targets] + [(RANDOM_REFERENCE.name, "")]:
        values = result.aucs[key]                                                    # (S, 2, M)
        cells = []
        for kind, measure in columns:
            seeds = values[:, KINDS.index(kind), config.measures.index(measure)]
            cells.append((float(np.mean(seeds)), ci95_halfwidth(seeds), len(seeds)))
        body.append((key, cells))
    return columns, body


def _titles(method: str, target: str) -> list:
    from cocoa_jax.sweep.tables import METHOD_TITLES, TARGET_TITLES

    return [METHOD_TITLES.get(method, method), TARGET_TITLES.get(target, target) if target else ""]


def markdown_table(result: StudyResult) -> str:
    """The image sweep's table layout: rows (method, target) and the random reference, columns
    measure x (insertion, deletion) with their direction, cells mean (95% half-width), best bold."""
    from cocoa_jax.sweep.tables import DIRECTION_NOTE, best_rows, column_header, format_cell

    config = result.config
    columns, body = _body(result)
    best = best_rows(columns, body)
    header = ["Method", "Target"] + [column_header(m, k) for k, m in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, ((method, target), cells) in enumerate(body):
        lines.append("| " + " | ".join(_titles(method, target) + [format_cell(c, i in best[j])
                                                                  for j, c in enumerate(cells)]) + " |")
    n = len(config.seeds)
    lines += ["", (f"Mean (95% CI half-width, t over {n} seeds) of each seed's mean AUC over its "
                   f"{len(result.captions[0])} captions" if n > 1 else
                   "One seed: the mean over its captions, no interval (intervals are over seeds)")
              + f"; digits dual encoder, corpus `{config.corpus}`, token insertion/deletion (one token per step, "
                f"blank-token reference). {DIRECTION_NOTE}"]
    return "\n".join(lines)


def csv_table(result: StudyResult) -> str:
    """One row per (method, target, kind, measure): mean, ci95 half-width, seeds."""
    columns, body = _body(result)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "target", "kind", "measure", "mean", "ci95", "seeds"])
    for (method, target), cells in body:
        for (kind, measure), (mean, ci, n) in zip(columns, cells):
            writer.writerow([method, target, kind, measure, f"{mean:.6f}", f"{ci:.6f}", n])
    return out.getvalue()
