"""Converters for the three ResNets: SimCLR ResNet-50, SimSiam CIFAR ResNet-18, ResNet-18 classifier.

Each checkpoint format is first renamed to canonical torchvision keys (`conv1.weight`,
`layer1.0.bn1.running_mean`, `layer2.0.downsample.0.weight`, `fc.weight`, ...), then one
mechanical rule maps every Flax leaf of `cocoa_jax.models.resnet.ResNet` to its key.
"""
from __future__ import annotations

import re
import warnings
from typing import Mapping, Tuple

from cocoa_jax import models
from .common import (CheckpointMismatchError, conv_kernel, extract_state_dict, fill_variables,
                     identity, linear_kernel, load_checkpoint, stored_key_lookup)

# BatchNorm's step counter: bookkeeping for training, no effect at inference.
_BATCH_COUNTER = re.compile(r"(^|\.)num_batches_tracked$")


def torchvision_key(path: Tuple[str, ...], shape: Tuple[int, ...]):
    """Flax path of `ResNet` (e.g. ('params', 'layer1_0', 'downsample_bn', 'scale')) ->
    (torchvision state-dict key, layout transform)."""
    collection, *modules, leaf = path
    parts = []
    for name in modules:
        if name == "downsample_conv":
            parts.append("downsample.0")
        elif name == "downsample_bn":
            parts.append("downsample.1")
        else:
            parts.append(re.sub(r"^(layer\d+)_(\d+)$", r"\1.\2", name))
    if collection == "batch_stats":
        return ".".join(parts + [{"mean": "running_mean", "var": "running_var"}[leaf]]), identity
    if leaf == "kernel":
        return ".".join(parts + ["weight"]), conv_kernel if len(shape) == 4 else linear_kernel
    return ".".join(parts + [{"scale": "weight", "bias": "bias"}[leaf]]), identity


def _drop_batch_counters(state_dict: Mapping) -> dict:
    return {k: v for k, v in state_dict.items() if not _BATCH_COUNTER.search(k)}


def _strip_prefix(state_dict: Mapping, prefix: str) -> dict:
    """Remove `prefix` from every key when ALL keys carry it (DataParallel's `module.`)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _num_classes(state_dict: Mapping):
    """Head width from `fc.weight` (out, in), or None when the checkpoint has no head."""
    return int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else None


def convert_state_dict(arch: str, state_dict: Mapping, *, what: str, stored_key=None):
    """Canonical torchvision-key state dict -> (config, Flax variables) for `arch`.

    stored_key: canonical key -> the key in the original file, for error messages.
    """
    config = dict(models.ARCHITECTURES[arch].default_config)
    config["num_classes"] = _num_classes(state_dict)
    _, abstract = models.init_abstract(arch, config)
    variables = fill_variables(abstract, _drop_batch_counters(state_dict), torchvision_key, what=what,
                               stored_key=stored_key)
    return config, variables


def _file_names(raw: Mapping, canonical: Mapping, to_file=lambda key: key):
    """canonical key -> the file's key (see `stored_key_lookup`). A key the file lacks is named
    as the file's format would: its common prefix (e.g. `module.`, `backbone.`, read off the
    stem's `conv1.weight`) + `to_file(key)`."""
    anchor, prefix = "conv1.weight", ""
    if anchor in canonical:
        found = stored_key_lookup(raw, canonical, lambda k: k, _SIMSIAM_TRAINING_ONLY)(anchor)
        prefix = found[: -len(anchor)] if found.endswith(anchor) else ""
    return stored_key_lookup(raw, canonical, lambda key: prefix + to_file(key), _SIMSIAM_TRAINING_ONLY)


def _write(arch, state_dict, out_dir, *, what, notes=(), overwrite=False, stored_key=None) -> str:
    config, variables = convert_state_dict(arch, state_dict, what=what, stored_key=stored_key)
    return models.save(arch, config, variables, out_dir, notes=notes, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# SimCLR v1 ResNet-50 (1x): tonylins/simclr-converter's resnet50-1x.pth = {'state_dict': ...}

def simclr_state_dict(checkpoint) -> dict:
    return _strip_prefix(extract_state_dict(checkpoint, "SimCLR checkpoint"), "module.")


def convert_simclr_resnet50(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False,
                            overwrite=False) -> str:
    """resnet50-1x.pth (torchvision keys, optional fc 2048->1000) -> `out_dir`.

    The converter that produced resnet50-1x.pth left `fc.bias` randomly initialised (it did not
    copy the TF head bias); we keep it but record a note, and `load` warns about it.
    """
    checkpoint = load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle)
    state_dict = simclr_state_dict(checkpoint)
    notes = (models.SIMCLR_HEAD_BIAS_NOTE,) if "fc.bias" in state_dict else ()
    names = _file_names(extract_state_dict(checkpoint, checkpoint_path), state_dict)
    out = _write("simclr_resnet50", state_dict, out_dir, what=checkpoint_path, notes=notes,
                 overwrite=overwrite, stored_key=names)
    if notes:
        warnings.warn(models.SIMCLR_HEAD_BIAS_NOTE, stacklevel=2)
    return out


# ---------------------------------------------------------------------------------------------
# SimSiam CIFAR-10 ResNet-18 (Reza-Safdari/SimSiam-91.9-top1-acc-on-CIFAR10 layout)

# Pre-training parts that are not the encoder: `encoder` = Sequential(backbone, projector)
# duplicates the backbone's tensors; projector/predictor are SimSiam's training MLPs.
_SIMSIAM_TRAINING_ONLY = ("projector.", "predictor.", "encoder.")


def simsiam_state_dict(checkpoint) -> Tuple[dict, Tuple[str, ...]]:
    """Linear-eval `{'epoch','arch','state_dict'}` (keys maybe `module.`-prefixed, head `fc.*`)
    or pre-training `{'state_dict': {'backbone.*', 'projector.*', ...}}` -> (canonical dict, notes)."""
    if isinstance(checkpoint, Mapping) and checkpoint.get("arch") not in (None, "resnet18"):
        raise CheckpointMismatchError(f"SimSiam checkpoint has arch {checkpoint['arch']!r}; "
                                      f"only 'resnet18' is supported")
    state_dict = _strip_prefix(extract_state_dict(checkpoint, "SimSiam checkpoint"), "module.")
    notes = ()
    if any(k.startswith("backbone.") for k in state_dict):
        # Pre-training checkpoint: keep the backbone; the SimSiam MLPs are not the representation.
        other = [k for k in state_dict if not k.startswith(("backbone.",) + _SIMSIAM_TRAINING_ONLY)]
        if other:
            raise CheckpointMismatchError(f"SimSiam pre-training checkpoint: unexpected key {other[0]!r}")
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        if any(k.startswith("fc.") for k in state_dict):
            raise CheckpointMismatchError("SimSiam pre-training checkpoint: unexpected key 'backbone.fc.*' "
                                          "(the pre-training backbone's fc is an Identity)")
        notes = ("converted from a SimSiam pre-training checkpoint: no linear-probe head",)
    # The CIFAR ResNet calls its projection shortcut `shortcut`; torchvision calls it `downsample`.
    renamed = {re.sub(r"\.shortcut\.(\d)\.", r".downsample.\1.", k): v for k, v in state_dict.items()}
    return renamed, notes


def convert_simsiam_cifar_resnet18(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False,
                                   overwrite=False) -> str:
    """SimSiam linear-eval or pre-training checkpoint -> `out_dir` (512-d; head 512->10 if present)."""
    checkpoint = load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle)
    state_dict, notes = simsiam_state_dict(checkpoint)
    names = _file_names(extract_state_dict(checkpoint, checkpoint_path), state_dict,
                        lambda key: re.sub(r"\.downsample\.(\d)\.", r".shortcut.\1.", key))
    return _write("simsiam_cifar_resnet18", state_dict, out_dir, what=checkpoint_path, notes=notes,
                  overwrite=overwrite, stored_key=names)


# ---------------------------------------------------------------------------------------------
# ResNet-18 classifier (the paper's MURA model): Lightning or plain torchvision state dict

def classifier_state_dict(checkpoint) -> dict:
    """Lightning `{'state_dict': {'network.backbone.*', 'network.head.*'}, ...}` or a plain
    torchvision resnet18 state dict (`fc.*` head) -> canonical dict."""
    state_dict = _strip_prefix(extract_state_dict(checkpoint, "ResNet-18 checkpoint"), "module.")
    if not any(k.startswith("network.") for k in state_dict):
        return state_dict
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("network.backbone."):
            new = key[len("network.backbone."):]
            if new.startswith("fc."):
                raise CheckpointMismatchError(f"unexpected key {key!r}: the backbone's fc should be an "
                                              f"Identity, the classifier lives in network.head.*")
        elif key.startswith("network.head."):
            new = "fc." + key[len("network.head."):]
        else:
            raise CheckpointMismatchError(f"Lightning checkpoint: unexpected key {key!r} "
                                          f"(expected network.backbone.* or network.head.*)")
        renamed[new] = value
    return renamed


def convert_resnet18_classifier(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False,
                                overwrite=False) -> str:
    """Lightning or torchvision ResNet-18 checkpoint -> `out_dir` (512-d; head from fc/network.head)."""
    checkpoint = load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle)
    raw = extract_state_dict(checkpoint, checkpoint_path)
    state_dict = classifier_state_dict(checkpoint)
    lightning = any(k.startswith("network.") for k in _strip_prefix(raw, "module."))
    to_file = ((lambda key: "network.head." + key[3:] if key.startswith("fc.") else "network.backbone." + key)
               if lightning else (lambda key: key))
    if lightning:  # the head's keys do not share the backbone's prefix: name them directly
        base = stored_key_lookup(raw, state_dict, lambda key: ("module." if all(k.startswith("module.")
                                                                                 for k in raw) else "") + to_file(key))
    else:
        base = _file_names(raw, state_dict)
    return _write("resnet18_classifier", state_dict, out_dir, what=checkpoint_path, overwrite=overwrite,
                  stored_key=base)
