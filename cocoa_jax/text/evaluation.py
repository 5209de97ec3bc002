"""Token insertion / deletion curves and AUCs, with the measures of `cocoa_jax.metrics.MEASURES`.

The image protocol unchanged (`metrics.insertion_deletion`), on the sentence's content tokens as a
one-column image (C, 1, E): tokens are ranked by score, most important first; one token per step by
default (`n_steps = C`); a removed token takes the blank-token reference, the baseline embedding of
`cocoa_jax.text.attribution.baseline_vector` (positions kept; special tokens and padding untouched).
Insertion starts from the all-blank sentence and reveals tokens; deletion blanks them.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import metrics
from cocoa_jax.text.attribution import baseline_vector
from cocoa_jax.text.encoders import TextEncoder

__all__ = ["evaluate_explanation", "sentence_aucs", "token_insertion_deletion"]


def token_insertion_deletion(encoder: TextEncoder, params, ids, content, scores, measures, *, baseline="default",
                             n_steps: int | None = None):
    """Curves and AUCs of one sentence for K token maps.

    Args:
      ids: (T,) token ids; content: (C,) attributed positions (may be traced: only its length sets the steps).
      scores: (C,) or (K, C) token scores (e.g. `token_scores`).
      measures: (B, D) -> (B, M), e.g. `metrics.make_measures(["ccs"], ccs=target)`.
      n_steps: steps of the curves (default C: one token per step).
    Returns (curves ([K,] 2, n_steps + 1, M), aucs ([K,] 2, M)); kind 0 = insertion, 1 = deletion.
    """
    ids = jnp.asarray(ids, jnp.int32)
    content = jnp.asarray(content)
    n = int(content.shape[0])
    scores = jnp.asarray(scores)
    if scores.shape[-1] != n or scores.ndim not in (1, 2):
        raise ValueError(f"`scores` must have shape (C,) or (K, C) with C = {n} content tokens, got {scores.shape}")
    embeddings = jnp.asarray(encoder.embed_fn(params, ids[None])[0])
    keep = encoder.keep_of(ids)
    x = embeddings[content][:, None, :]                                   # (C, 1, E)
    blank = jnp.broadcast_to(baseline_vector(encoder, params, baseline), x.shape).astype(x.dtype)

    def encode(batch):                                                    # (B, C, 1, E) -> (B, D)
        full = jax.vmap(lambda b: embeddings.at[content].set(b[:, 0, :]))(batch)
        return encoder.encode_embeddings_fn(params, full, jnp.broadcast_to(keep, full.shape[:2]))

    return metrics.insertion_deletion(encode, measures, x, blank, scores[..., None], n_steps=n_steps or n)


@functools.lru_cache(maxsize=32)
def _aucs_program(encoder: TextEncoder, baseline):
    one = lambda params, ids, content, scores, m: token_insertion_deletion(
        encoder, params, ids, content, scores, m, baseline=baseline)[1]
    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)))


def sentence_aucs(encoder: TextEncoder, ids, content, scores, measures, *, baseline="default") -> list:
    """Insertion / deletion AUCs of many sentences, each with its own maps and measures.

    Args:
      ids: (N, T) token ids; content: N arrays of content positions (C_i,).
      scores: N arrays (K, C_i) (K maps of one sentence, e.g. one per target).
      measures: N `metrics.Measures` of the same names (e.g. each sentence's corpus and foil).
    Returns N arrays (K, 2, M): kind 0 = insertion, 1 = deletion. Sentences with the same number of
    content tokens (and K) are evaluated by one vmapped, jit-compiled program.
    """
    n = len(content)
    if not (len(scores) == len(measures) == n == len(ids)):
        raise ValueError(f"`ids`, `content`, `scores` and `measures` must have one entry per sentence, got "
                         f"{len(ids)}, {n}, {len(scores)} and {len(measures)}")
    program = _aucs_program(encoder, baseline)
    groups = {}
    for i in range(n):
        groups.setdefault((len(content[i]), np.shape(scores[i])), []).append(i)
    out = [None] * n
    for members in groups.values():
        stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[measures[i] for i in members])
        result = np.asarray(program(encoder.params, jnp.asarray(np.asarray(ids)[members]),
                                    jnp.asarray(np.stack([content[i] for i in members])),
                                    jnp.asarray(np.stack([scores[i] for i in members])), stacked))
        for j, i in enumerate(members):
            out[i] = result[j]
    return out


def evaluate_explanation(model, explanation, measures, *, target: str | None = None, key=None,
                         baseline="default", n_random: int = 1) -> dict:
    """Mean insertion / deletion AUCs of every method of a `TextExplanation`, and of the random reference
    (`metrics.RANDOM_REFERENCE`: i.i.d. U[0, 1) token scores), the text sweep's table.

    Args:
      model: what `explain_texts` was given (`text_encoder(model)` is used).
      measures: (B, D) -> (B, M) (e.g. `metrics.make_measures(["ccs"], ccs=cocoa_target)`).
      target: which of the explanation's targets ranks the tokens (default: the first).
      key: PRNG key of the random reference (default key(0)); n_random: random maps per sentence.
    Returns {row: (2, M) mean AUCs over sentences (insertion, deletion)}, rows = methods + "random".
    """
    import jax

    from cocoa_jax.text.encoders import text_encoder

    encoder = text_encoder(model)
    k = 0 if target is None else explanation.target_names.index(target)
    key = jax.random.key(0) if key is None else key
    # one compiled program per number of content tokens (params and measures are arguments, not constants)
    program = jax.jit(lambda params, ids, content, scores, m: token_insertion_deletion(
        encoder, params, ids, content, scores, m, baseline=baseline)[1])
    auc = lambda ids, content, scores: np.asarray(program(encoder.params, ids, content, scores, measures))
    rows = {}
    for name in explanation.method_names:
        rows[name] = np.mean(np.stack([auc(ids, content, scores[k]) for ids, content, scores in zip(
            explanation.ids, explanation.content, explanation.scores_by_method[name])]), axis=0)
    keys = jax.random.split(key, len(explanation.ids) * n_random)
    random_aucs = []
    for i, (ids, content) in enumerate(zip(explanation.ids, explanation.content)):
        for r in range(n_random):
            scores = metrics.RANDOM_REFERENCE.fn(keys[i * n_random + r], (len(content), 1))[:, 0]
            random_aucs.append(auc(ids, content, scores))
    rows[metrics.RANDOM_REFERENCE.name] = np.mean(np.stack(random_aucs), axis=0)
    return rows
