"""Encoders for cocoa-jax: Flax ports of the paper's models and the embedded digits encoder.

    model = cocoa_jax.models.load("simclr_resnet50", "converted/simclr")   # no torch needed
    x = model.preprocess.batch(pil_images)          # (N, 224, 224, 3) float32 pixels in [0, 1]
    reps = model.encode(x)                          # (N, 2048); mean/std applied inside
    f = cocoa_jax.targets.explain_fn(model.encode, target)

One pixel convention: every loaded model takes float pixels in [0, 1], channels last, in
`encode` / `encode_fn(params, x)` and normalises inside (`repr(model)` says with which mean/std).
`model.network_fn(params, x_normalised)` is the raw network on `model.preprocess.normalize(x)`
(the expert path, what the PyTorch original takes).

Architectures (`list_architectures()`): simclr_resnet50, simsiam_cifar_resnet18,
resnet18_classifier, clip_vit_b32, clip_vit (any CLIP ViT, OpenAI or open_clip), resnet18/34/50/
101/152 (torchvision or SSL backbones), dino_vit, dinov2_vit, sentence_bert (a text-only BERT-family
sentence encoder: all-MiniLM, BGE, E5, GTE checkpoints, see `models.bert`; its tokenizer.json read by `TextTokenizer`;
`embed_tokens_fn` / `encode_embeddings_fn` work in token-embedding space) (converted with `cocoa-jax convert`,
see `ports/`, installed as `cocoa_jax_ports`; docs/models.md) and the shipped digits encoders (`load("digits")`, `load("digits_vit")`). Every encode/head function checks
its input's shape against `input_shape`; eager calls also refuse non-float dtypes and values
that are non-finite or outside `input_range` = [0, 1], normalised input included (`check_images(model,
x)`: call it before jitting, where values cannot be checked). This package never imports torch.

The face of the package (`__all__`) gathers three modules, one job each:

  architectures  ArchSpec, Encoders, ARCHITECTURES, CONVERTIBLE, DIGITS, DIGITS_CONFIG,
                 SIMCLR_HEAD_BIAS_NOTE, list_architectures, spec_of, init_abstract (rebuild a
                 module from its stored config)
  loaded         LoadedModel, make_loaded and the input checks check_images, check_image_shape,
                 check_image_values, check_reps, check_tokens, check_embeddings (static shapes:
                 they run unchanged under jit and vmap; values on eager calls)
  store          save, load, read_metadata, input_shape_of, restore_host_local, restore_variables,
                 check_out_dir, check_variables, ModelDirError, FORMAT_VERSION, METADATA_FILE,
                 VARIABLES_DIR (a converted model is OUT_DIR/model.json + OUT_DIR/variables/, an
                 orbax checkpoint; `load` needs neither torch nor the original checkpoint)

and `Preprocessing` (preprocessing), `TextTokenizer` and `TokenBatch` (text_tokenizers).
"""
from cocoa_jax.models.architectures import (ARCHITECTURES, CONVERTIBLE, DIGITS, DIGITS_CONFIG,
                                            SIMCLR_HEAD_BIAS_NOTE, ArchSpec, Encoders, init_abstract,
                                            list_architectures, spec_of)
from cocoa_jax.models.loaded import (LoadedModel, check_embeddings, check_image_shape, check_image_values,
                                     check_images, check_reps, check_tokens, make_loaded)
from cocoa_jax.models.preprocessing import Preprocessing
from cocoa_jax.models.text_tokenizers import TextTokenizer, TokenBatch
from cocoa_jax.models.store import (FORMAT_VERSION, METADATA_FILE, VARIABLES_DIR, ModelDirError,
                                    check_out_dir, check_variables, input_shape_of, load, read_metadata,
                                    restore_host_local, restore_variables, save)

__all__ = [
    "ARCHITECTURES", "CONVERTIBLE", "DIGITS", "DIGITS_CONFIG", "FORMAT_VERSION", "METADATA_FILE",
    "SIMCLR_HEAD_BIAS_NOTE", "VARIABLES_DIR",
    "ArchSpec", "Encoders", "LoadedModel", "ModelDirError", "Preprocessing", "TextTokenizer", "TokenBatch",
    "check_embeddings", "check_image_shape", "check_image_values", "check_images", "check_out_dir", "check_reps", "check_tokens",
    "check_variables", "init_abstract", "input_shape_of", "list_architectures", "load", "make_loaded",
    "read_metadata", "restore_host_local", "restore_variables", "save", "spec_of",
]
