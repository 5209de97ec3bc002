"""Token attributions of text encoders: which words make a sentence's representation match a corpus and
not a foil. `encoders` (the token-embedding interface), `attribution` (any method of the table over
tokens), `evaluation` (token insertion / deletion), `pipeline` (`explain_texts`), `html` (the page),
`study` (the offline text sweep; `html` and `study` are imported by name: they sit a layer above)."""
from cocoa_jax.text.attribution import (BASELINES, NOISE_FRACTION, STRATEGIES, baseline_vector, content_positions,
                                        token_scores)
from cocoa_jax.text.encoders import (TextEncoder, clip_text_encoder, digits_text_encoder, loaded_text_encoder,
                                     text_encoder)
from cocoa_jax.text.evaluation import evaluate_explanation, sentence_aucs, token_insertion_deletion
from cocoa_jax.text.pipeline import DEFAULT_TEXT_METHODS, TextExplanation, attribute_tokens, explain_texts

__all__ = [
    "BASELINES", "DEFAULT_TEXT_METHODS", "NOISE_FRACTION", "STRATEGIES", "TextEncoder", "TextExplanation",
    "attribute_tokens", "baseline_vector", "clip_text_encoder", "content_positions", "digits_text_encoder",
    "explain_texts", "evaluate_explanation", "loaded_text_encoder", "sentence_aucs", "text_encoder",
    "token_insertion_deletion", "token_scores",
]
