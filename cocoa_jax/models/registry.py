"""Architectures cocoa-jax can load, the `LoadedModel` they load into, and the on-disk format: the public face.

Three modules, one job each, all re-exported here:

  architectures  ArchSpec, Encoders, ARCHITECTURES, CONVERTIBLE, DIGITS, DIGITS_CONFIG,
                 SIMCLR_HEAD_BIAS_NOTE, list_architectures, init_abstract (rebuild a module
                 from its stored config)
  loaded         LoadedModel, make_loaded and the input checks check_images, check_image_shape,
                 check_image_values, check_reps, check_tokens (static shapes: they run unchanged
                 under jit and vmap; values on eager calls)
  store          save, load, read_metadata, input_shape_of, restore_host_local, restore_variables,
                 check_out_dir, check_variables, ModelDirError, FORMAT_VERSION, METADATA_FILE,
                 VARIABLES_DIR (a converted model is OUT_DIR/model.json + OUT_DIR/variables/, an
                 orbax checkpoint; `load` needs neither torch nor the original checkpoint)

Every `LoadedModel` takes float pixels in [0, 1] in `encode` / `encode_fn` and applies its mean/std
inside (`network_fn` is the raw network on normalised input). Every `LoadedModel` function checks
its input's static shape against `input_shape` (rank, spatial size, channels): one unbatched image
is refused instead of being read as a batch.
"""
from __future__ import annotations

from cocoa_jax.models.architectures import (ARCHITECTURES, CONVERTIBLE, DIGITS, DIGITS_CONFIG,
                                            SIMCLR_HEAD_BIAS_NOTE, ArchSpec, Encoders, init_abstract,
                                            list_architectures, spec_of)
from cocoa_jax.models.loaded import (LoadedModel, check_image_shape, check_image_values, check_images,
                                     check_reps, check_tokens, make_loaded)
from cocoa_jax.models.store import (FORMAT_VERSION, METADATA_FILE, VARIABLES_DIR, ModelDirError,
                                    check_out_dir, check_variables, input_shape_of, load, read_metadata,
                                    restore_host_local, restore_variables, save)

__all__ = [
    "ARCHITECTURES", "CONVERTIBLE", "DIGITS", "DIGITS_CONFIG", "FORMAT_VERSION", "METADATA_FILE",
    "SIMCLR_HEAD_BIAS_NOTE", "VARIABLES_DIR",
    "ArchSpec", "Encoders", "LoadedModel", "ModelDirError",
    "check_image_shape", "check_image_values", "check_images", "check_out_dir", "check_reps", "check_tokens",
    "check_variables", "init_abstract", "input_shape_of", "list_architectures", "load", "make_loaded",
    "read_metadata", "restore_host_local", "restore_variables", "save", "spec_of",
]

_spec = spec_of  # former private name
