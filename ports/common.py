"""Checkpoint reading and the key-by-key Flax filling shared by all converters."""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from typing import Callable, Iterable, Mapping, Tuple

import jax
import numpy as np


class CheckpointMismatchError(ValueError):
    """The checkpoint does not hold exactly the parameters the Flax model needs."""


class UnsafeCheckpointError(ValueError):
    """The checkpoint needs full (code-executing) unpickling, which was not allowed."""


class NotACheckpointError(ValueError):
    """The file is not a PyTorch checkpoint (text, random bytes, a truncated or damaged archive)."""


# torch.save writes a zip archive (PyTorch >= 1.6) or, in the legacy format, a pickle stream
# (protocol >= 2 starts with 0x80). A safetensors file (open_clip_model.safetensors, timm's and
# Hugging Face's model.safetensors) starts with its JSON header's length (8 bytes, little endian)
# and then the header, '{'. Anything else cannot be a checkpoint.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"
_BLOCKED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def is_safetensors(path: str) -> bool:
    """The file starts with a safetensors header: its length, then that many bytes of a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            return False
        length = int.from_bytes(head[:8], "little")
        if not 2 <= length <= min(os.path.getsize(path) - 8, 100_000_000):  # safetensors' own header cap
            return False
        f.seek(8)
        try:
            return isinstance(json.loads(f.read(length)), dict)
        except ValueError:  # not JSON / not UTF-8
            return False


def check_checkpoint_file(path: str) -> None:
    """Raise FileNotFoundError (no such file / a directory) or NotACheckpointError (wrong bytes)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} is not a file")
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        raise NotACheckpointError(f"checkpoint {path!r} is empty, not a PyTorch checkpoint")
    if is_safetensors(path):
        return
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise NotACheckpointError(f"checkpoint {path!r} is a truncated or damaged zip archive, not a "
                                      f"readable PyTorch checkpoint (re-download or re-save it)")
    elif head[8:9] == b"{" and head[4:8] == b"\0\0\0\0":  # a header length < 4 GiB, then '{'
        raise NotACheckpointError(f"checkpoint {path!r} looks like a truncated or damaged safetensors file "
                                  f"(its header is cut off or not JSON; re-download it)")
    elif not head.startswith(_PICKLE_PROTO):
        raise NotACheckpointError(f"checkpoint {path!r} is not a PyTorch checkpoint (neither a torch.save "
                                  f"zip archive, a legacy pickle nor a safetensors file; it starts with "
                                  f"{head[:4]!r})")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]


def is_torchscript_archive(path: str) -> bool:
    """TorchScript archives (`torch.jit.save`, e.g. CLIP's ViT-B-32.pt) are zips with code/."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def load_safetensors(path: str) -> dict:
    """{key: torch tensor} of a safetensors file (holds tensors only: nothing is unpickled)."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise NotACheckpointError(f"checkpoint {path!r} is a safetensors file: reading it needs the package "
                                  f"safetensors (pip install 'cocoa-jax[ports]' or pip install safetensors)") from None
    try:
        return dict(load_file(path, device="cpu"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise NotACheckpointError(f"checkpoint {path!r} is not a readable safetensors file "
                                  f"({type(err).__name__}: {_first_line(err)})") from None


def load_checkpoint(path: str, *, unsafe_unpickle: bool = False):
    """Read a torch checkpoint: safetensors file -> its tensors; TorchScript archive -> its
    state_dict; else `torch.load`.

    `torch.load(weights_only=True)` only rebuilds tensors and plain containers. With
    `unsafe_unpickle=True` any pickled object is rebuilt, which can execute arbitrary code.
    Raises FileNotFoundError (not a file), NotACheckpointError (not a PyTorch checkpoint) or
    UnsafeCheckpointError (a checkpoint that pickles Python objects; names the blocked global).
    """
    import torch

    check_checkpoint_file(path)
    if is_safetensors(path):
        return load_safetensors(path)
    if is_torchscript_archive(path):
        # TorchScript is deserialised by torch.jit (no Python pickle of arbitrary objects).
        try:
            return dict(torch.jit.load(path, map_location="cpu").state_dict())
        except Exception as err:  # torch.jit raises RuntimeError with C++ dumps
            raise NotACheckpointError(f"checkpoint {path!r} looks like a TorchScript archive but could not "
                                      f"be read ({type(err).__name__}: {_first_line(err)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_unpickle)
    except pickle.UnpicklingError as err:
        blocked = _BLOCKED_GLOBAL.search(str(err))
        if blocked and not unsafe_unpickle:
            raise UnsafeCheckpointError(
                f"checkpoint {path!r} pickles the Python object {blocked.group(1)}, beyond tensors and "
                f"plain containers, so it cannot be read safely (torch.load(weights_only=True)). Either "
                f"re-save just its state_dict (torch.save(ckpt['state_dict'], ...)) or, ONLY if you trust "
                f"the file, pass --unsafe-unpickle: full unpickling can execute arbitrary code.") from None
        raise NotACheckpointError(f"checkpoint {path!r} is not a readable PyTorch checkpoint "
                                  f"(unpickling failed: {_first_line(err)})") from None
    except (RuntimeError, KeyError, EOFError, ValueError, OSError, AttributeError, ImportError) as err:
        # Damaged archives (RuntimeError from the zip reader), streams that are not torch pickles
        # (KeyError/EOFError), or, with full unpickling, classes that do not exist here.
        raise NotACheckpointError(f"checkpoint {path!r} is not a readable PyTorch checkpoint "
                                  f"({type(err).__name__}: {_first_line(err)})") from None
    except Exception as err:  # torch.load hands files it takes for safetensors to safetensors
        if type(err).__name__ != "SafetensorError":
            raise
        raise NotACheckpointError(f"checkpoint {path!r} is not a readable safetensors file "
                                  f"({type(err).__name__}: {_first_line(err)})") from None


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
                   what: str = "checkpoint", stored_key: Callable[[str], str] | None = None):
    """Build Flax variables shaped like `abstract` from `state_dict`, one key per leaf.

    key_for(path, flax_shape) -> (torch_key, transform) names the checkpoint entry of each
    Flax leaf (path = tuple of dict keys). Every leaf must find its key with the right shape
    after `transform`, and every state-dict key must be consumed or listed in `ignore`;
    otherwise CheckpointMismatchError names the offending key(s).
    stored_key(key) -> the key as stored in the file, when the converter renamed keys (e.g.
    SimSiam's `shortcut` -> torchvision's `downsample`): messages use the file's names.
    """
    consumed = set()
    missing = []
    stored = stored_key or (lambda key: key)

    def fill(path, leaf):
        names = tuple(getattr(p, "key", str(p)) for p in path)
        key, transform = key_for(names, tuple(leaf.shape))
        if key not in state_dict:
            missing.append(f"{stored(key)!r} (for Flax {'/'.join(names)}, shape {tuple(leaf.shape)})")
            return None
        value = transform(to_float32(state_dict[key]))
        if value.shape != tuple(leaf.shape):
            raise CheckpointMismatchError(
                f"{what}: key {stored(key)!r} has shape {tuple(state_dict[key].shape)}, which gives "
                f"{value.shape} for Flax {'/'.join(names)}; expected {tuple(leaf.shape)}")
        consumed.add(key)
        return value.astype(leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, abstract)
    if missing:
        raise CheckpointMismatchError(f"{what}: missing key(s): {_preview(missing)}")
    unexpected = sorted(stored(k) for k in set(state_dict) - consumed - set(ignore))
    if unexpected:
        raise CheckpointMismatchError(f"{what}: unexpected key(s) not used by the model: "
                                      f"{_preview([repr(k) for k in unexpected])}")
    return variables


def stored_key_lookup(raw_state_dict: Mapping, renamed: Mapping, guess: Callable[[str], str],
                      avoid: Tuple[str, ...] = ()) -> Callable[[str], str]:
    """key of `renamed` -> its key in `raw_state_dict` (the file's name for the same tensor).

    Renaming keeps tensor objects, so a present key is found by identity; a key the file lacks
    gets `guess(key)`, the name the file's format would give it. Keys starting with `avoid`
    (aliases such as SimSiam's duplicated `encoder.*`) are used only when nothing else matches.
    """
    by_id: dict = {}
    for raw_key, tensor in raw_state_dict.items():
        by_id.setdefault(id(tensor), []).append(raw_key)

    def lookup(key: str) -> str:
        if key in renamed:
            names = by_id.get(id(renamed[key]), [])
            preferred = [n for n in names if not n.startswith(avoid)] or names
            if preferred:
                return preferred[0]
        return guess(key)

    return lookup


def _preview(items, limit: int = 8) -> str:
    """First `limit` already-formatted entries, and how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")
