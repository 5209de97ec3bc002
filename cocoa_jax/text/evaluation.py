"""Token insertion / deletion curves and AUCs, with the measures of `cocoa_jax.metrics.MEASURES`.

The image protocol unchanged (`metrics.insertion_deletion`), on the sentence's content tokens as a
one-column image (C, 1, E): tokens are ranked by score, most important first; one token per step by
default (`n_steps = C`); a removed token takes the blank-token reference, the baseline embedding of
`cocoa_jax.text.attribution.baseline_vector` (positions kept; special tokens and padding untouched).
Insertion starts from the all-blank sentence and reveals tokens; deletion blanks them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import metrics
from cocoa_jax.text.attribution import baseline_vector
from cocoa_jax.text.encoders import TextEncoder

__all__ = ["evaluate_explanation", "token_insertion_deletion"]


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
    keep = ids != encoder.pad_id
    x = embeddings[content][:, None, :]                                   # (C, 1, E)
    blank = jnp.broadcast_to(baseline_vector(encoder, params, baseline), x.shape).astype(x.dtype)

    def encode(batch):                                                    # (B, C, 1, E) -> (B, D)
        full = jax.vmap(lambda b: embeddings.at[content].set(b[:, 0, :]))(batch)
        return encoder.encode_embeddings_fn(params, full, jnp.broadcast_to(keep, full.shape[:2]))

    return metrics.insertion_deletion(encode, measures, x, blank, scores[..., None], n_steps=n_steps or n)


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
