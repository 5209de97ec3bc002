"""The on-disk format of a converted model: save, load, restore, read metadata.

A converted model is a directory:
  OUT_DIR/model.json   {"format": 1, "arch": ..., "config": {...}, "notes": [...]} (human-readable)
  OUT_DIR/variables/   orbax checkpoint of the Flax variables ({"params": ..., ["batch_stats": ...]})

`load(arch, OUT_DIR)` rebuilds the Flax module from `config`, restores the variables against its
abstract shapes (so a wrong file fails loudly) and needs neither torch nor the original checkpoint.
The embedded `digits` encoder is an ordinary entry whose weights ship with the package: its
directory may also be a bare orbax checkpoint (what `cocoa-jax train-digits` writes).
Re-exported by `cocoa_jax.models`.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax.models.architectures import ARCHITECTURES, SIMCLR_HEAD_BIAS_NOTE, init_abstract, spec_of
from cocoa_jax.files import atomic_directory
from cocoa_jax.models.loaded import LoadedModel, make_loaded

FORMAT_VERSION = 1
METADATA_FILE = "model.json"
VARIABLES_DIR = "variables"


def input_shape_of(arch: str, directory: Optional[str] = None) -> Optional[Tuple[int, int, int]]:
    """(H, W, C) of ONE input of `arch` (stored in `directory`'s model.json), without loading weights;
    None when it cannot be told here (unknown arch, unreadable directory: `load` reports those)."""
    spec = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if spec is None:
        return None
    config = spec.default_config
    if directory is not None:
        path = os.path.join(os.path.expanduser(directory), METADATA_FILE)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    config = json.load(f)["config"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
        elif spec.default_dir is None:
            return None
    try:
        return tuple(int(v) for v in spec.input_shape(config))
    except (KeyError, TypeError, ValueError):
        return None


class ModelDirError(ValueError):
    """A model directory is damaged: a file is missing, truncated or unreadable."""


def save(arch: str, config: Mapping[str, Any], variables, out_dir: str, notes=(),
         overwrite: bool = False, files: Optional[Mapping[str, str]] = None) -> str:
    """Write a converted model to `out_dir` (see module docstring); returns the absolute path.

    `variables` must match the abstract variables of `arch` with `config` exactly (structure,
    shapes, float32 dtype); anything else is a ValueError naming the leaf. A non-empty `out_dir`
    is refused unless `overwrite` (`--overwrite` on the command line). The model is written to
    a temporary sibling directory and moved into place, so a failure leaves no partial model.
    files: {file name: text} written beside model.json (a text encoder's tokenizer.json).
    """
    import orbax.checkpoint as ocp

    _, abstract = init_abstract(arch, config)
    check_variables(variables, abstract)
    out_dir = os.path.abspath(out_dir)
    check_out_dir(out_dir, overwrite=overwrite)
    with atomic_directory(out_dir) as tmp_dir:
        os.makedirs(tmp_dir)
        tree = jax.tree_util.tree_map(lambda a: np.asarray(a), variables)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.join(tmp_dir, VARIABLES_DIR), tree)
            checkpointer.wait_until_finished()
        meta = {"format": FORMAT_VERSION, "arch": arch, "config": dict(config), "notes": list(notes)}
        with open(os.path.join(tmp_dir, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2)
        for name, text in (files or {}).items():
            if os.path.basename(name) != name or name in (METADATA_FILE, VARIABLES_DIR):
                raise ValueError(f"files: {name!r} must be a plain file name other than {METADATA_FILE}")
            with open(os.path.join(tmp_dir, name), "w", encoding="utf-8") as f:
                f.write(text)
    return out_dir


def check_out_dir(out_dir: str, *, overwrite: bool) -> None:
    """Refuse an `out_dir` that is a file, or a non-empty directory unless `overwrite`."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"out_dir {out_dir!r} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"out_dir {out_dir!r} exists and is not empty (pass --overwrite to replace it)")


def check_variables(variables, abstract) -> None:
    """Raise ValueError naming the first leaf whose path, shape or dtype differs."""
    got = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(variables)}
    want = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(abstract)}
    for key in sorted(set(want) - set(got)):
        raise ValueError(f"variables are missing leaf {key} (shape {want[key].shape})")
    for key in sorted(set(got) - set(want)):
        raise ValueError(f"variables have unexpected leaf {key}")
    for key, ref in want.items():
        leaf = got[key]
        if tuple(np.shape(leaf)) != tuple(ref.shape):
            raise ValueError(f"leaf {key} has shape {tuple(np.shape(leaf))}, expected {tuple(ref.shape)}")
        if np.asarray(leaf).dtype != ref.dtype:
            raise ValueError(f"leaf {key} has dtype {np.asarray(leaf).dtype}, expected {ref.dtype}")


def read_metadata(directory: str) -> dict:
    """model.json of a model directory; ModelDirError naming the file if it is missing or broken."""
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model directory {directory!r} has no {METADATA_FILE}: is it the "
                                f"out_dir of `cocoa-jax convert`?")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} is not valid JSON "
                            f"(truncated or damaged: {type(err).__name__} at {getattr(err, 'pos', '?')}); "
                            f"re-run `cocoa-jax convert`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} has format {found!r}, "
                            f"expected {FORMAT_VERSION}")
    for field in ("arch", "config"):
        if field not in meta:
            raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} lacks the field {field!r}")
    return meta


# Files every orbax checkpoint directory has; checked first so a missing one is named plainly.
_CHECKPOINT_FILES = ("_METADATA", "manifest.ocdbt")


class _DropAbslNotice(logging.Filter):
    """Hides orbax's notice that size logging is off for `primary_host=None` (expected here)."""

    def filter(self, record):
        return "primary_host=None" not in record.getMessage()


def restore_host_local(checkpoint_dir: str, abstract=None):
    """An orbax checkpoint restored by THIS process alone, every leaf a host `np.ndarray`.

    Why: orbax's default restore is collective (barriers over every process, arrays placed
    with the topology they were saved with), so under `jax.distributed` it hangs or fails on
    another topology. Here this process is orbax's only participant and no device is touched:
    the same in one process and in each process of any job. The on-disk format is unchanged.
    abstract: the expected tree (leaves with shape/dtype; restored leaves take its dtypes), or
    None for the checkpoint's own tree.
    """
    import orbax.checkpoint as ocp

    alone = ocp.options.MultiprocessingOptions(primary_host=None, active_processes={jax.process_index()})
    notice = _DropAbslNotice()
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(notice)
    try:
        handler = ocp.PyTreeCheckpointHandler(multiprocessing_options=alone)
        with ocp.Checkpointer(handler, multiprocessing_options=alone) as checkpointer:
            if abstract is None:
                abstract = checkpointer.metadata(checkpoint_dir).item_metadata.tree
                restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
            else:
                restore_args = jax.tree_util.tree_map(
                    lambda leaf: ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype), abstract)
            return checkpointer.restore(checkpoint_dir,
                                        args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args))
    finally:
        absl_logger.removeFilter(notice)


def restore_variables(checkpoint_dir: str, abstract, directory: str):
    """Restore a model's checkpoint against `abstract` (host-local, see `restore_host_local`).

    ModelDirError names what is missing or broken. A JAX runtime error (e.g. a failing
    `jax.distributed` job) is re-raised as it is: it says nothing about the directory.
    """
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"model directory {directory!r} has no checkpoint folder "
                                f"{os.path.relpath(checkpoint_dir, directory)!r}")
    for name in _CHECKPOINT_FILES:
        if not os.path.isfile(os.path.join(checkpoint_dir, name)):
            raise ModelDirError(f"model directory {directory!r}: checkpoint file "
                                f"{os.path.relpath(os.path.join(checkpoint_dir, name), directory)!r} is missing")
    try:
        host = restore_host_local(checkpoint_dir, abstract)
    except jax.errors.JaxRuntimeError:
        raise
    except Exception as err:  # orbax/tensorstore raise many types with multi-line dumps
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelDirError(f"model directory {directory!r}: the checkpoint in "
                            f"{os.path.relpath(checkpoint_dir, directory) or '.'!r} could not be restored "
                            f"(files missing or damaged: {type(err).__name__}: {first})") from None
    # On this process's default device (as before); `meshes.global_array` places them on a mesh.
    return jax.tree_util.tree_map(jax.device_put, host)  # device_put: no per-shape conversion program to compile


def _is_bare_checkpoint(directory: str) -> bool:
    """A bare orbax checkpoint (what `cocoa-jax train-digits` writes), not a model directory."""
    return (not os.path.exists(os.path.join(directory, METADATA_FILE))
            and os.path.exists(os.path.join(directory, "_CHECKPOINT_METADATA")))


def load(arch: str, directory: Optional[str] = None) -> LoadedModel:
    """Restore a model (no torch needed).

    The model takes float pixels in [0, 1], (N, H, W, C) channels last, in `encode(x)` and
    `encode_fn(params, x)`, and applies its normalisation (mean/std of `model.preprocess`) inside;
    `model.preprocess(image)` gives such pixels and `repr(model)` states the convention.
    `model.network_fn(params, x_normalised)` is the raw network (the expert path: input already
    normalised, as the PyTorch original takes it). Normalised input given to `encode` is refused.

    arch: one of `list_architectures()`; must match the arch recorded at conversion.
    directory: the `out_dir` given to `cocoa-jax convert`. For shipped models ("digits") it is
      optional and defaults to the checkpoint inside the package; for "digits" it may also be
      a checkpoint written by `cocoa-jax train-digits --out DIR`.
    Raises ValueError for an unknown arch, FileNotFoundError for a missing directory or file,
    and `ModelDirError` (a ValueError) naming the broken file of a damaged directory.
    """
    spec = spec_of(arch)
    if directory is None:
        if spec.default_dir is None:
            raise ValueError(f"directory is required for arch {arch!r}: the out_dir of "
                             f"`cocoa-jax convert {arch} CHECKPOINT OUT_DIR`")
        directory = spec.default_dir
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {type(directory).__name__}")
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        hint = (f"`{spec.trained_by}` creates it" if spec.trained_by is not None
                else f"the out_dir of `cocoa-jax convert {arch} CHECKPOINT OUT_DIR`")
        raise FileNotFoundError(f"model directory {directory!r} does not exist ({hint})")
    if spec.default_dir is not None and _is_bare_checkpoint(directory):
        config, notes, checkpoint_dir = dict(spec.default_config), (), directory
    else:
        meta = read_metadata(directory)
        if meta["arch"] != arch:
            raise ValueError(f"arch {arch!r} does not match the converted model in {directory!r} "
                             f"({meta['arch']!r})")
        config, notes = meta["config"], tuple(meta.get("notes", ()))
        checkpoint_dir = os.path.join(directory, VARIABLES_DIR)
    try:
        _, abstract = init_abstract(arch, config)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelDirError(f"model directory {directory!r}: {METADATA_FILE} has an invalid config "
                            f"for {arch!r} ({type(err).__name__}: {err})") from None
    variables = restore_variables(checkpoint_dir, abstract, directory)
    if SIMCLR_HEAD_BIAS_NOTE in notes:
        warnings.warn(SIMCLR_HEAD_BIAS_NOTE, stacklevel=2)
    return make_loaded(arch, config, variables, notes, directory=directory)
