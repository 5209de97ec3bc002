"""Token attributions (cocoa_jax.text): the embedding half of each tower equals the tower, IG is complete,
a dropped token has no influence, exact Shapley values over tokens by enumeration, special tokens
excluded, token insertion/deletion against a float64 re-computation, and explain_texts = token_scores."""
from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import metrics, targets
from cocoa_jax.models import make_loaded
from cocoa_jax.models.clip import CLIP, ClipConfig
from cocoa_jax.text import (attribution as TA, clip_text_encoder, digits_text_encoder, explain_texts,
                            token_insertion_deletion)

TINY_CLIP = ClipConfig(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                       context_length=77, vocab_size=49408, transformer_width=64, transformer_layers=2)
CORPUS = ["a handwritten seven", "the number seven", "a photo of the digit 7"]
FOIL = ["a handwritten one", "the number two", "a photo of the digit 3", "a scan of a handwritten 5"]


@pytest.fixture(scope="module")
def digits():
    return digits_text_encoder()


@pytest.fixture(scope="module")
def clip():
    pytest.importorskip("ftfy")
    pytest.importorskip("regex")
    from cocoa_jax.models.tokenizer import find_merges_file
    try:
        find_merges_file()
    except FileNotFoundError:
        pytest.skip("no CLIP BPE merges file installed (pip install --no-deps clip-anytorch)")
    # One jitted init program, not an eager init (one compile per op: ~10 s on the loaded 2-core host);
    # the tests compare two paths on the same random weights, whatever their values.
    variables = jax.jit(lambda key: CLIP(TINY_CLIP).init(key, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 77), jnp.int32),
                                                         method="init_all"))(jax.random.key(1))
    return make_loaded("clip_vit", dataclasses.asdict(TINY_CLIP), variables)


@pytest.fixture(scope="module")
def target(digits):
    return targets.stack([targets.cocoa(digits.encode(CORPUS), digits.encode(FOIL)),
                          targets.corpus(digits.encode(CORPUS))])


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_the_embedding_half_is_the_tower(digits, clip):
    texts = ["this is a photo of a seven", "a 7"]
    from cocoa_jax.models.digits_clip import load_digits_clip
    # the tower pads to 8 tokens, the encoder to the longest sentence: equal up to float32 rounding
    np.testing.assert_allclose(digits.encode(texts), np.asarray(load_digits_clip().encode_text(texts)), atol=1e-5)
    encoder = clip_text_encoder(clip)
    captions = ["a photo of a dog", "an X-ray of a broken wrist, 2 views"]
    reference = np.asarray(clip.encode_text(captions), np.float64)
    assert np.abs(encoder.encode(captions) - reference).max() <= 1e-5 * np.abs(reference).max()
    ids = encoder.tokenize(captions)
    assert ids.shape[1] == 13  # trimmed to the longest caption: SOT + 11 tokens + EOT
    assert encoder.token_strings(ids[0])[:6] == ["<|startoftext|>", "a", "photo", "of", "a", "dog"]
    assert list(TA.content_positions(encoder, ids[0])) == [1, 2, 3, 4, 5]  # SOT, EOT and padding excluded


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_integrated_gradients_is_complete(digits, target):
    ids = digits.tokenize(["this is a photo of a seven"])[0]
    content = TA.content_positions(digits, ids)
    scores = TA.token_scores(digits, digits.params, ids, content, target, "integrated_gradients", jax.random.key(0),
                             options={"n_steps": 24})   # gap 6e-7 measured
    assert scores.shape == (2, 7)
    f = TA.sentence_fn(digits, digits.params, ids, content, target, perturbation=False)
    x, base = TA.token_inputs(digits, digits.params, ids, content, TA.baseline_vector(digits, digits.params),
                              perturbation=False)
    assert not np.allclose(x, base)                      # the default baseline is not the input
    np.testing.assert_allclose(np.asarray(scores).sum(-1), np.asarray(f(x) - f(base)), atol=2e-5)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_a_dropped_token_has_no_influence(digits, clip):
    for encoder in (digits, clip_text_encoder(clip)):
        ids = jnp.asarray(encoder.tokenize(["this is a photo of a seven"])[0])
        emb = encoder.embed_fn(encoder.params, ids[None])
        keep = (ids != encoder.pad_id).at[2].set(False)[None]
        noise = emb.at[0, 2].set(jax.random.normal(jax.random.key(3), emb.shape[-1:]) * 10)
        a = encoder.encode_embeddings_fn(encoder.params, emb, keep)
        b = encoder.encode_embeddings_fn(encoder.params, noise, keep)
        assert np.array_equal(np.asarray(a), np.asarray(b)), encoder.name
        assert not np.allclose(a, encoder.encode_embeddings_fn(encoder.params, emb, ids[None] != encoder.pad_id))


def _subset_scores(digits, ids, content, target):
    """f of every subset of content tokens kept (drop strategy), by direct encoder calls: {subset: (K,)}."""
    emb = digits.embed_fn(digits.params, jnp.asarray(ids)[None])
    subsets = [s for r in range(len(content) + 1) for s in itertools.combinations(range(len(content)), r)]
    keeps = np.tile(np.asarray(ids) != digits.pad_id, (len(subsets), 1))
    for row, subset in zip(keeps, subsets):
        row[np.asarray(content)] = False
        row[np.asarray(content)[list(subset)]] = True
    reps = jax.jit(digits.encode_embeddings_fn)(digits.params, jnp.broadcast_to(emb, (len(subsets),) + emb.shape[1:]),
                                                jnp.asarray(keeps))
    values = np.asarray(jax.vmap(target)(reps), np.float64)
    return dict(zip(subsets, values))


@pytest.mark.slow
def test_exact_shapley_and_occlusion_over_dropped_tokens(digits, target):
    ids = digits.tokenize(["a photo of a seven"])[0]
    content = TA.content_positions(digits, ids)
    n = len(content)
    f = _subset_scores(digits, ids, content, target)
    full = tuple(range(n))
    shapley = np.zeros((2, n))
    for j in range(n):
        for subset, value in f.items():
            if j in subset:
                continue
            weight = math.factorial(len(subset)) * math.factorial(n - len(subset) - 1) / math.factorial(n)
            shapley[:, j] += weight * (f[tuple(sorted(subset + (j,)))] - value)
    key = jax.random.key(0)
    shap = TA.token_scores(digits, digits.params, ids, content, target, "kernel_shap", key,
                           options={"efficient": True, "n_samples": 64})
    np.testing.assert_allclose(np.asarray(shap), shapley, atol=2e-5)
    occlusion = TA.token_scores(digits, digits.params, ids, content, target, "occlusion", key)
    expected = np.stack([f[full] - f[tuple(i for i in full if i != j)] for j in full], axis=1)
    np.testing.assert_allclose(np.asarray(occlusion), expected, atol=2e-5)
    # strategy="replace": token j takes the baseline embedding (zero), the others and the mask unchanged
    replaced = TA.token_scores(digits, digits.params, ids, content, target, "occlusion", key, strategy="replace")
    emb = np.asarray(digits.embed_fn(digits.params, jnp.asarray(ids)[None]))
    blanked = np.repeat(emb, n + 1, axis=0)
    for j in range(n):
        blanked[j + 1, content[j]] = 0.0
    reps = digits.encode_embeddings_fn(digits.params, jnp.asarray(blanked),
                                       jnp.broadcast_to(jnp.asarray(ids != 0), (n + 1, len(ids))))
    values = np.asarray(jax.vmap(target)(reps), np.float64)
    np.testing.assert_allclose(np.asarray(replaced), (values[0] - values[1:]).T, atol=2e-5)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_token_insertion_deletion_against_a_recomputation(digits, target):
    ids = digits.tokenize(["this is a photo of a seven"])[0]
    content = TA.content_positions(digits, ids)
    scores = np.asarray([0.1, -0.3, 0.05, 0.2, 0.0, 0.4, 0.9], np.float32)
    single = targets.cocoa(digits.encode(CORPUS), digits.encode(FOIL))
    curves, aucs = token_insertion_deletion(digits, digits.params, ids, content, scores,
                                            metrics.make_measures(["ccs"], ccs=single))
    emb = np.asarray(digits.embed_fn(digits.params, jnp.asarray(ids)[None]))[0]
    order = np.argsort(-scores, kind="stable")
    blanked = []
    for kind in (0, 1):
        for k in range(len(content) + 1):
            revealed = set(order[:k]) if kind == 0 else set(order[k:])
            e = emb.copy()
            for j, position in enumerate(content):
                if j not in revealed:
                    e[position] = 0.0                       # the default blank: the zero embedding
            blanked.append(e)
    reps = digits.encode_embeddings_fn(digits.params, jnp.asarray(np.stack(blanked)),
                                       jnp.broadcast_to(jnp.asarray(ids != 0), (len(blanked), len(ids))))
    expected = np.asarray(single(reps), np.float64).reshape(2, len(content) + 1)
    np.testing.assert_allclose(np.asarray(curves)[..., 0], expected, atol=1e-5)
    fractions = np.arange(len(content) + 1) / len(content)
    np.testing.assert_allclose(np.asarray(aucs)[:, 0], np.trapezoid(expected, fractions, axis=1), atol=1e-5)


SEVENS = ["a handwritten seven", "a handwritten 7", "the number seven"]    # 3 tokens each: one program
SEVENS_CORPUS = ["a photo of the digit 7", "this is a photo of a seven", "a scan of a handwritten 7"]


@pytest.fixture(scope="module")
def sevens(digits):
    """One explain_texts run shared by the pipeline and evaluation-table tests (one IG program)."""
    return explain_texts(digits, SEVENS, corpus=SEVENS_CORPUS, foil=FOIL, targets=("cocoa", "label_free"),
                         methods=("integrated_gradients",), options={"integrated_gradients": {"n_steps": 16}})


@pytest.mark.slow
def test_explain_texts_equals_token_scores(digits, sevens):
    result = sevens
    assert result.tokens[1] == ["a", "handwritten", "7"] and result.ids.shape == (3, 3)
    assert set(result.scores_by_method) == {"integrated_gradients"}
    assert np.abs(result.completeness_gaps["integrated_gradients"]).max() < 1e-3   # 16 steps
    reps = digits.encode(SEVENS)
    one = targets.stack([targets.cocoa(digits.encode(SEVENS_CORPUS), digits.encode(FOIL)),
                         targets.label_free(reps[2])])
    direct = TA.token_scores(digits, digits.params, result.ids[2], result.content[2], one, "integrated_gradients",
                             jax.random.key(0), options={"n_steps": 16})
    np.testing.assert_allclose(result.scores_by_method["integrated_gradients"][2], np.asarray(direct), atol=1e-6)
    with pytest.raises(ValueError, match="strategy"):
        explain_texts(digits, SEVENS, corpus=CORPUS, foil=FOIL, strategy="mask")
    with pytest.raises(ValueError, match="baseline"):
        explain_texts(digits, SEVENS, corpus=CORPUS, foil=FOIL, baseline="blank")


@pytest.mark.slow
def test_cross_modal_corpus_of_digit_images_points_at_the_digit_word():
    """Corpus of either modality: sevens as IMAGES (the dual encoder's image tower) vs random digit images;
    in "this is a photo of a seven" the word that makes the caption match them is "seven"."""
    from cocoa_jax.data.digits import load_digits_split
    from cocoa_jax.models.digits_clip import load_digits_clip

    model = load_digits_clip()
    data = load_digits_split(seed=0)
    rng = np.random.default_rng(0)
    corpus = np.asarray(model.encode(data.x_train[data.y_train == 7][:40]))
    foil = np.asarray(model.encode(data.x_train[rng.choice(len(data.x_train), 80, replace=False)]))
    result = explain_texts(model, ["this is a photo of a seven"], corpus_reps=corpus, foil_reps=foil,
                           targets=("cocoa",), methods=("integrated_gradients",),
                           options={"integrated_gradients": {"n_steps": 16}})
    scores = result.scores_by_method["integrated_gradients"][0][0]
    assert result.tokens[0][int(np.argmax(scores))] == "seven"


@pytest.mark.slow
def test_the_text_evaluation_table_ranks_ig_above_random(digits, sevens):
    """The small offline text sweep: digit-7 captions explained against other 7 captions (corpus) and other
    digits' captions (foil). IG's tokens raise the COCOA measure faster than random ones when inserted, and
    drop it faster when deleted."""
    from cocoa_jax.text.evaluation import evaluate_explanation

    measures = metrics.make_measures(["ccs"], ccs=targets.cocoa(digits.encode(SEVENS_CORPUS), digits.encode(FOIL)))
    table = evaluate_explanation(digits, sevens, measures, target="cocoa", n_random=3)
    assert set(table) == {"integrated_gradients", "random"} and table["random"].shape == (2, 1)
    assert table["integrated_gradients"][0, 0] > table["random"][0, 0]     # insertion: higher is better
    assert table["integrated_gradients"][1, 0] < table["random"][1, 0]     # deletion: lower is better
