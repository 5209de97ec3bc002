"""Checkpoint reading and the key-by-key Flax filling shared by all converters."""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Callable, Iterable, Mapping, Tuple

import jax
import numpy as np


class CheckpointMismatchError(ValueError):
    """The checkpoint does not hold exactly the parameters the Flax model needs."""


class UnsafeCheckpointError(ValueError):
    """The checkpoint needs full (code-executing) unpickling, which was not allowed."""


def is_torchscript_archive(path: str) -> bool:
    """TorchScript archives (`torch.jit.save`, e.g. CLIP's ViT-B-32.pt) are zips with code/."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def load_checkpoint(path: str, *, unsafe_unpickle: bool = False):
    """Read a torch checkpoint: TorchScript archive -> its state_dict; else `torch.load`.

    `torch.load(weights_only=True)` only rebuilds tensors and plain containers. With
    `unsafe_unpickle=True` any pickled object is rebuilt, which can execute arbitrary code.
    """
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} is not a file")
    if is_torchscript_archive(path):
        # TorchScript is deserialised by torch.jit (no Python pickle of arbitrary objects).
        return dict(torch.jit.load(path, map_location="cpu").state_dict())
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_unpickle)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path!r} holds Python objects beyond tensors and plain containers, so it cannot be "
            f"read with torch.load(weights_only=True) ({str(err).splitlines()[0]}). Either re-save "
            f"just its state_dict (torch.save(ckpt['state_dict'], ...)) or, ONLY if you trust the "
            f"file, pass --unsafe-unpickle (unsafe_unpickle=True): full unpickling can execute "
            f"arbitrary code.") from err


def extract_state_dict(checkpoint, what: str) -> dict:
    """`{'state_dict': {...}, ...}` or a bare state dict -> {key: tensor}."""
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise CheckpointMismatchError(f"{what}: expected a state dict or {{'state_dict': ...}}, "
                                      f"got {type(checkpoint).__name__}")
    import torch

    bad = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointMismatchError(f"{what}: state dict entry {bad[0]!r} is not a tensor")
    return dict(checkpoint)


def to_float32(tensor) -> np.ndarray:
    """torch tensor (any float dtype, e.g. CLIP's fp16) -> float32 numpy array (a copy)."""
    import torch

    return tensor.detach().to(dtype=torch.float32, device="cpu").contiguous().numpy().copy()


# Layout transforms: torch array -> Flax array.
def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (O, I, kh, kw) -> flax Conv kernel (kh, kw, I, O)."""
    return np.transpose(w, (2, 3, 1, 0))


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in), applied as x @ W.T -> flax Dense kernel (in, out)."""
    return np.transpose(w)


def identity(w: np.ndarray) -> np.ndarray:
    return w


KeyRule = Callable[[Tuple[str, ...], Tuple[int, ...]], Tuple[str, Callable[[np.ndarray], np.ndarray]]]


def fill_variables(abstract, state_dict: Mapping, key_for: KeyRule, *, ignore: Iterable[str] = (),
                   what: str = "checkpoint"):
    """Build Flax variables shaped like `abstract` from `state_dict`, one key per leaf.

    key_for(path, flax_shape) -> (torch_key, transform) names the checkpoint entry of each
    Flax leaf (path = tuple of dict keys). Every leaf must find its key with the right shape
    after `transform`, and every state-dict key must be consumed or listed in `ignore`;
    otherwise CheckpointMismatchError names the offending key(s).
    """
    consumed = set()
    missing = []

    def fill(path, leaf):
        names = tuple(getattr(p, "key", str(p)) for p in path)
        key, transform = key_for(names, tuple(leaf.shape))
        if key not in state_dict:
            missing.append(f"{key!r} (for Flax {'/'.join(names)}, shape {tuple(leaf.shape)})")
            return None
        value = transform(to_float32(state_dict[key]))
        if value.shape != tuple(leaf.shape):
            raise CheckpointMismatchError(
                f"{what}: key {key!r} has shape {tuple(state_dict[key].shape)}, which gives "
                f"{value.shape} for Flax {'/'.join(names)}; expected {tuple(leaf.shape)}")
        consumed.add(key)
        return value.astype(leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, abstract)
    if missing:
        raise CheckpointMismatchError(f"{what}: missing key(s): {_preview(missing)}")
    unexpected = sorted(set(state_dict) - consumed - set(ignore))
    if unexpected:
        raise CheckpointMismatchError(f"{what}: unexpected key(s) not used by the model: "
                                      f"{_preview([repr(k) for k in unexpected])}")
    return variables


def _preview(items, limit: int = 8) -> str:
    """First `limit` already-formatted entries, and how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")
