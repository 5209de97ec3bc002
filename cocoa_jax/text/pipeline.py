"""`explain_texts`: `explain_images` for sentences. Which tokens make a sentence's representation
match a corpus (sentences, or images for an image-text model) and not a foil.

Sentences are padded to one length; those with the same number of content tokens run as one
vmapped, jit-compiled program per method (K stacked targets share every encoder pass). Sentence
i's randomness is `explicand_program.method_keys(key, method, n)[i]`, as for images.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import methods as methods_mod, targets as targets_mod
from cocoa_jax.explicand_program import method_keys
from cocoa_jax.text.attribution import STRATEGIES, baseline_vector, content_positions, token_scores
from cocoa_jax.text.encoders import TextEncoder, text_encoder

__all__ = ["DEFAULT_TEXT_METHODS", "TextExplanation", "attribute_tokens", "explain_texts"]

DEFAULT_TEXT_METHODS = ("integrated_gradients", "gradient_shap", "occlusion")


@dataclasses.dataclass
class TextExplanation:
    """What `explain_texts` computed.

    Attributes:
      tokens: per sentence, the display string of each content token (C_i,).
      scores_by_method: {method: per sentence a (K, C_i) array}, K in `target_names` order.
      ids: (N, T) token ids (padded); content: per sentence its content positions (C_i,).
      scores, baseline_scores: (N, K) target values at the sentences and at their all-blank versions.
      completeness_gaps: {method: (N, K)} sum of scores - (score - baseline_score), complete methods only.
      target_names, method_names, options, seconds: as `pipeline.Explanation`.
    """

    tokens: list
    scores_by_method: dict
    ids: np.ndarray
    content: list
    scores: np.ndarray
    baseline_scores: np.ndarray
    completeness_gaps: dict
    target_names: tuple
    method_names: tuple
    options: dict
    seconds: dict


def _check_texts(name: str, texts) -> list:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"`{name}` must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"`{name}` is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"`{name}[{i}]` must be a non-empty string, got {t!r}")
    return list(texts)


def _reps(encoder: TextEncoder, texts_or_reps, name: str):
    if texts_or_reps is None:
        return None
    if isinstance(texts_or_reps, (list, tuple)) and texts_or_reps and isinstance(texts_or_reps[0], str):
        return encoder.encode(_check_texts(name, texts_or_reps))
    reps = np.asarray(texts_or_reps, np.float32)
    if reps.ndim != 2 or len(reps) == 0:
        raise ValueError(f"`{name}` must be sentences or (M, D) representations, got shape {reps.shape}")
    return reps


@functools.lru_cache(maxsize=64)
def _program(encoder: TextEncoder, method: str, options_key, baseline, strategy, batch_size):
    options = dict(options_key)

    def one(params, ids, content, target, key):
        return token_scores(encoder, params, ids, content, target, method, key, options=options,
                            baseline=baseline, strategy=strategy, batch_size=batch_size)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)))


def _encode_blank(encoder: TextEncoder, params, ids, content, baseline):
    """(N, D) representations of each sentence with every content token set to the baseline."""
    vec = baseline_vector(encoder, params, baseline)
    emb = np.array(encoder.embed_fn(params, jnp.asarray(ids)))
    for i, c in enumerate(content):
        emb[i, c] = np.asarray(vec)
    return np.asarray(encoder.encode_embeddings_fn(params, jnp.asarray(emb), encoder.keep_of(jnp.asarray(ids))))


def attribute_tokens(encoder: TextEncoder, ids, content, target, methods: Sequence[str],
                     options: Mapping[str, Mapping[str, Any]], key: jax.Array, *, baseline="default",
                     strategy: str = "drop", batch_size: int | None = None, seconds: dict | None = None,
                     on_method: Callable[[str, float], None] | None = None) -> dict:
    """{method: per sentence a (K, C_i) array} for sentences `ids` (N, T) with content positions
    `content` (N lists) and one stacked target per sentence (`target.direction` (N, K, D)).

    Sentences with the same number of content tokens run as one vmapped, jit-compiled program per
    method; sentence i's key is `explicand_program.method_keys(key, method, N)[i]`. `seconds` (if
    given) receives each method's wall time. Used by `explain_texts` and the text study.
    """
    n = len(content)
    groups = {}
    for i, c in enumerate(content):
        groups.setdefault(len(c), []).append(i)
    by_method = {}
    for name in methods:
        t0 = time.perf_counter()
        keys = method_keys(key, name, n)
        program = _program(encoder, name, tuple(sorted(dict(options.get(name, {})).items())), baseline, strategy,
                           batch_size)
        out = [None] * n
        for members in groups.values():
            idx = np.asarray(members)
            result = program(encoder.params, jnp.asarray(ids[idx]), jnp.asarray(np.stack([content[i] for i in idx])),
                             jax.tree_util.tree_map(lambda d: d[idx], target), keys[idx])
            for j, i in enumerate(members):
                out[i] = np.asarray(result[j])
        by_method[name] = out
        elapsed = time.perf_counter() - t0
        if seconds is not None:
            seconds[name] = elapsed
        if on_method is not None:
            on_method(name, elapsed)
    return by_method


def explain_texts(model, texts: Sequence[str], *, corpus=None, foil=None, corpus_reps=None, foil_reps=None,
                  targets: Sequence[str] = ("cocoa", "corpus", "label_free", "contrastive_label_free"),
                  methods: Sequence[str] = DEFAULT_TEXT_METHODS, options: Mapping[str, Mapping[str, Any]] | None = None,
                  key: jax.Array | None = None, similarity: str = "cosine", baseline="default",
                  strategy: str = "drop", batch_size: int | None = None,
                  on_method: Callable[[str, float], None] | None = None) -> TextExplanation:
    """Token attributions of `texts` for K stacked targets and every method, in one call.

    Args:
      model: a `TextEncoder`, the digits dual encoder, or a loaded CLIP (`text_encoder`).
      texts: the sentences to explain.
      corpus, foil: sentences (encoded here by the same tower); or `corpus_reps` / `foil_reps`
        (M, D), e.g. image representations of the same dual encoder (cross-modal COCOA:
        "which words of this caption make it match the dog photos and not random photos").
      targets, methods, options, key, similarity: as `pipeline.explain_images`.
      baseline: the embedding removed tokens take (`text.attribution.baseline_vector`).
      strategy: "drop" (perturbation methods remove tokens through the attention mask) or "replace".
    """
    encoder = text_encoder(model)
    params = encoder.params
    texts = _check_texts("texts", texts)
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {strategy!r}")
    names = tuple(dict.fromkeys(methods))
    for name in names:
        methods_mod.get(name)
    for name in (options or {}):
        if name not in names:
            raise ValueError(f"`options` has method {name!r}, which is not in `methods` {list(names)}")
    for a, b in (("corpus", corpus_reps), ("foil", foil_reps)):
        if (corpus if a == "corpus" else foil) is not None and b is not None:
            raise ValueError(f"pass `{a}` sentences or `{a}_reps`, not both")
    baseline_vector(encoder, params, baseline)  # checks `baseline` before any work
    options = {name: dict((options or {}).get(name, {})) for name in names}
    key = jax.random.key(0) if key is None else key
    seconds = {}
    t0 = time.perf_counter()
    ids = encoder.tokenize(texts)
    content = [content_positions(encoder, row) for row in ids]
    for i, c in enumerate(content):
        if len(c) == 0:
            raise ValueError(f"`texts[{i}]` ({texts[i]!r}) has no content token to attribute")
    explicand_reps = np.asarray(jax.jit(encoder.encode_ids)(params, jnp.asarray(ids)))
    corpus_reps = _reps(encoder, corpus, "corpus") if corpus is not None else _reps(encoder, corpus_reps, "corpus_reps")
    foil_reps = _reps(encoder, foil, "foil") if foil is not None else _reps(encoder, foil_reps, "foil_reps")
    n = len(texts)
    target = targets_mod.build_stacked(tuple(targets), explicand_reps=explicand_reps, corpus_reps=corpus_reps,
                                       foil_reps=foil_reps, similarity=similarity)
    if target.direction.ndim == 2:      # no per-explicand target: one direction for every sentence
        target = targets_mod.Target(jnp.broadcast_to(target.direction, (n,) + target.direction.shape),
                                    target.normalize)
    score = jax.vmap(lambda r, t: t(r))
    scores = np.asarray(score(jnp.asarray(explicand_reps), target))
    baseline_scores = np.asarray(score(jnp.asarray(_encode_blank(encoder, params, ids, content, baseline)), target))
    seconds["targets"] = time.perf_counter() - t0
    by_method = attribute_tokens(encoder, ids, content, target, names, options, key, baseline=baseline,
                                 strategy=strategy, batch_size=batch_size, seconds=seconds, on_method=on_method)
    gaps = {name: np.stack([o.sum(-1) for o in by_method[name]]) - (scores - baseline_scores)
            for name in names if methods_mod.get(name).complete}
    tokens = [[encoder.token_strings(row)[p] for p in c] for row, c in zip(ids, content)]
    return TextExplanation(tokens, by_method, ids, content, scores, baseline_scores, gaps, tuple(targets), names,
                           options, seconds)
