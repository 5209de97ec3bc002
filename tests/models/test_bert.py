"""`sentence_bert` against code cocoa-jax did not write: random-weight `transformers` BertModel /
XLMRobertaModel wrapped and saved by sentence-transformers (tests/reference/bert_side.py),
converted with `cocoa-jax convert sentence_bert DIR OUT`. Sentence embeddings and gradients
w.r.t. the word embeddings (positions and token types added inside, as the model does) to 1e-5
relative; `encode_text` on raw strings equals sentence-transformers' own `encode` (its tokenizer,
truncation to max_seq_length, pooling, Normalize).
"""
from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
pytest.importorskip("tokenizers")

from cocoa_jax import models  # noqa: E402
from cocoa_jax.cli import main  # noqa: E402
from cocoa_jax_ports import CheckpointMismatchError, convert  # noqa: E402
from tests.reference import bert_side  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
torch.set_num_threads(2)
TOL = 1e-5
TEXTS = ["The dog runs in the park!", "Café naïve ÜBER 東京 😀", "", "unbelievable dogs playing " * 8]
# (kind, pooling, normalize, safetensors): every pooling mode, both weight files, both layouts.
CASES = {
    "bert_mean": ("bert", "mean", True, True),
    "bert_all_modes": ("bert", ("cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"), False, False),
    "xlm_roberta_cls": ("xlm_roberta", "cls", True, True),
}


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{case: (sentence-transformers dir, loaded model)}; the first through the command line."""
    out = {}
    for i, (case, (kind, pooling, normalize, safetensors)) in enumerate(CASES.items()):
        root = tmp_path_factory.mktemp(case)
        st_dir = bert_side.save_random_sentence_model(str(root / "st"), kind=kind, pooling=pooling,
                                                      normalize=normalize, seed=i, safetensors=safetensors)
        target = str(root / "converted")
        if i == 0:
            assert main(["convert", "sentence_bert", st_dir, target]) == 0
        else:
            convert("sentence_bert", st_dir, target)
        out[case] = (st_dir, models.load("sentence_bert", target))
    return out


@pytest.fixture(scope="module")
def grad_program():
    """One jitted program: representations and d<rep, direction>/d word embeddings."""
    def run(encode_embeddings_fn, params, words, mask, direction):
        def total(w):
            reps = encode_embeddings_fn(params, w, mask)
            return jnp.sum(reps * direction), reps
        (_, reps), grad = jax.value_and_grad(total, has_aux=True)(words)
        return reps, grad
    return jax.jit(run, static_argnums=0)


@pytest.mark.usefixtures("optimized_xla")  # max pooling's gradient (tests/conftest.py)
@pytest.mark.parametrize("case", list(CASES))
def test_representations_and_embedding_gradients_match_sentence_transformers(converted, grad_program, case):
    st_dir, model = converted[case]
    batch = model.tokenizer().batch(TEXTS[:3], length=16)
    direction = np.random.default_rng(5).normal(size=(3, model.representation_dim))
    ref_reps, ref_grad = bert_side.reference_outputs(st_dir, batch.ids, batch.mask, direction)
    words = model.embed_tokens_fn(model.params, batch.ids)
    reps, grad = grad_program(model.encode_embeddings_fn, model.params, words, jnp.asarray(batch.mask),
                              jnp.asarray(direction, jnp.float32))
    assert reps.shape == ref_reps.shape and grad.shape == ref_grad.shape
    assert _rel(reps, ref_reps) < TOL and _rel(grad, ref_grad) < TOL, (_rel(reps, ref_reps), _rel(grad, ref_grad))
    # Padding tokens get exactly zero gradient: they are no key of the attention and not pooled.
    assert np.all(np.asarray(grad)[batch.mask == 0] == 0)


def test_encode_text_equals_sentence_transformers_encode(converted):
    """Raw strings end to end (tokenizer, truncation of the long text to max_seq_length 24, the empty
    string, accents, CJK, emoji) against sentence-transformers' own encode."""
    for case in ("bert_mean", "xlm_roberta_cls"):
        st_dir, model = converted[case]
        assert model.config["context_length"] == 24
        reps = np.asarray(model.encode_text(TEXTS))
        assert _rel(reps, bert_side.encode_texts(st_dir, TEXTS)) < TOL, case
        assert model.tokenizer().batch(TEXTS).truncated == (False, False, False, True)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_masked_tokens_change_nothing(converted):
    """A masked token's embedding and the padded length do not change the representation."""
    _, model = converted["bert_all_modes"]
    encode = jax.jit(model.encode_embeddings_fn)
    batch = model.tokenizer().batch(["the red ball", "a photo of a cat"], length=10)
    words = np.asarray(jax.jit(model.embed_tokens_fn)(model.params, batch.ids))
    base = np.asarray(encode(model.params, words, batch.mask))
    noisy = words + np.random.default_rng(0).normal(size=words.shape).astype(np.float32) * (batch.mask == 0)[..., None]
    np.testing.assert_array_equal(np.asarray(encode(model.params, noisy, batch.mask)), base)
    longer = model.tokenizer().batch(["the red ball", "a photo of a cat"])  # padded to 24
    np.testing.assert_allclose(np.asarray(model.encode_text(longer.ids)), base, rtol=1e-5, atol=1e-6)
    # encode_text is encode_embeddings with the mask ids != pad.
    np.testing.assert_allclose(np.asarray(model.encode_text(batch.ids)), base, rtol=1e-6, atol=1e-7)


def test_loaded_model_faces(converted):
    _, model = converted["bert_mean"]
    assert not model.images and model.input_shape == () and "text only" in repr(model)
    assert model.config["mask_token_id"] == bert_side.WORDPIECE_VOCAB.index("[MASK]")
    assert model.config["pad_token_id"] == 0 and model.config["pooling"] == ["mean"]
    assert any("pooler" in note for note in model.notes)
    with pytest.raises(ValueError, match="encodes text only"):
        model.encode(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, L\) with L <= 24"):
        model.encode_text(np.zeros((1, 25), np.int32))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(N, L\) = \(1, 4\)"):
        model.encode_embeddings_fn(model.params, np.zeros((1, 4, 32), np.float32), np.ones((1, 5)))
    with pytest.raises(TypeError, match="floats"):
        model.encode_embeddings_fn(model.params, np.zeros((1, 4, 32), np.int32), np.ones((1, 4)))


def test_converter_errors_name_what_is_wrong(converted, tmp_path):
    st_dir, _ = converted["bert_mean"]
    plain = tmp_path / "plain"
    shutil.copytree(st_dir, plain)
    os.remove(plain / "modules.json")
    with pytest.raises(ValueError, match="no modules.json.*--option pooling=mean"):
        convert("sentence_bert", str(plain), str(tmp_path / "a"))
    # A plain transformers directory converts with the pooling given as an option.
    convert("sentence_bert", str(plain), str(tmp_path / "b"), options={"pooling": "cls", "normalize": "true"})
    assert models.load("sentence_bert", str(tmp_path / "b")).config["pooling"] == ["cls"]
    dense = tmp_path / "dense"
    shutil.copytree(st_dir, dense)
    entries = json.loads((dense / "modules.json").read_text())
    entries.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(entries))
    with pytest.raises(CheckpointMismatchError, match="module 'Dense' is not supported"):
        convert("sentence_bert", str(dense), str(tmp_path / "c"))
    os.remove(dense / "tokenizer.json")
    (dense / "modules.json").write_text(json.dumps(entries[:2] + entries[3:]))
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        convert("sentence_bert", str(dense), str(tmp_path / "d"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        convert("sentence_bert", str(dense / "config.json"), str(tmp_path / "e"))
    with pytest.raises(ValueError, match="unknown option 'activation'"):
        convert("sentence_bert", st_dir, str(tmp_path / "f"), options={"activation": "gelu"})
    assert main(["convert", "sentence_bert", str(dense / "config.json"), str(tmp_path / "g")]) == 2


@pytest.mark.slow
def test_plugs_into_the_text_attribution_interface(converted):
    """A `cocoa_jax.text.TextEncoder` built from the loaded model's halves (as docs/text.md's Encoders
    section says): explain_texts' IG is complete and the special tokens are not attributed."""
    from cocoa_jax.text.encoders import TextEncoder
    from cocoa_jax.text.pipeline import explain_texts

    _, model = converted["bert_mean"]
    tok = model.tokenizer()

    def tokenize(texts):
        batch = tok.batch(list(texts))
        return batch.ids[:, :int(batch.mask.sum(axis=1).max())]

    table = np.asarray(model.params["params"]["word_embeddings"]["embedding"])
    encoder = TextEncoder(name=model.name, params=model.params, embed_fn=model.embed_tokens_fn,
                          encode_embeddings_fn=model.encode_embeddings_fn, tokenize=tokenize,
                          token_strings=lambda ids: [tok.id_to_token(i) for i in np.asarray(ids)],
                          pad_id=tok.pad_id, special_ids=tok.special_ids, baseline_id=model.config["mask_token_id"],
                          embedding_scale=float(np.sqrt(np.mean(table ** 2))),
                          context_length=int(model.config["context_length"]))
    result = explain_texts(encoder, ["the red ball", "a photo of a dog"], corpus=["a dog runs"],
                           foil=["the cat"], targets=("cocoa",), methods=("integrated_gradients",),
                           options={"integrated_gradients": {"n_steps": 64}})
    assert result.tokens == [["the", "red", "ball"], ["a", "photo", "of", "a", "dog"]]
    gaps = np.abs(result.completeness_gaps["integrated_gradients"])
    assert gaps.max() < 1e-3 * max(np.abs(result.scores - result.baseline_scores).max(), 1e-6), gaps
