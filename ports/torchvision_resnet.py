"""Converter for torchvision ResNets (18/34/50/101/152): supervised state dicts and the
ResNet backbones of self-supervised checkpoints.

A checkpoint is first unwrapped (a plain state dict, or one inside the entry `state_dict`,
`model`, `teacher`, `online_network_state_dict` or `student`, in that order), then matched
against `LAYOUTS`: each names the prefix its backbone keys carry and the prefixes of training-only
parts that are dropped (projection/prediction heads, momentum encoders, queues). Every other key
is refused by name. What was stripped and dropped is recorded in model.json's notes (and
printed by `cocoa-jax convert`).

The layouts are written from how each project saves (read from their public training code;
none of the released files could be downloaded here):
  MoCo v1/v2  main_moco.py: {'epoch','arch','state_dict','optimizer'}, DataParallel keys
              module.encoder_q.* (fc = projection head), module.encoder_k.*, module.queue(_ptr)
  MoCo v3     main_moco.py: module.base_encoder.* (fc = projection MLP), module.momentum_encoder.*,
              module.predictor.*
  SimSiam     main_simsiam.py (ImageNet): module.encoder.* (fc = projection MLP), module.predictor.*
  Barlow Twins / VICReg  full checkpoints {'epoch','model','optimizer'}: module.backbone.*,
              module.projector.*, Barlow Twins' module.bn.*; their released resnet50.pth files
              are plain torchvision state dicts without fc (matched by the plain layout)
  DINO        full checkpoint: teacher = backbone.* + head.* (the DINO head); the released
              dino_resnet50_pretrain.pth is a plain torchvision state dict without fc
  solo-learn / mmselfsup  backbone.* beside projector/predictor/momentum_* / neck; solo-learn's
              online linear probe `classifier.*` becomes the head (fc)
  BYOL        sthalles/PyTorch-BYOL: {'online_network_state_dict': encoder.{0,1,4..7}.* (an
              nn.Sequential of resnet children) + projetion.*}; other ports: online_network.encoder.*
  SwAV        main_swav.py: module.* (torchvision-compatible names) + module.projection_head.*,
              module.prototypes.*; the torch.hub resnet50 is a plain torchvision state dict
  DataParallel linear-evaluation checkpoints (module.* with module.fc.* as the classifier)
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Tuple

from cocoa_jax import models
from .common import CheckpointMismatchError, fill_variables, load_checkpoint
from .resnet import _drop_batch_counters, torchvision_key

# Entries of a checkpoint dict that may hold the model's state dict, in order of preference.
CONTAINERS = ("state_dict", "model", "teacher", "online_network_state_dict", "student")

# The torchvision ResNets by (block, stage sizes).
DEPTHS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
          ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
          ("bottleneck", (3, 8, 36, 3)): "resnet152"}

# nn.Sequential(*list(resnet.children())[:-1]) numbers the children: conv1, bn1, relu, maxpool, layer1..4.
_SEQUENTIAL = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    prefix: str
    dropped: Mapping[str, str]  # key prefix -> what it is (reported)
    sequential: bool = False  # backbone stored as nn.Sequential of the resnet's children
    head_prefix: str = ""  # a linear classifier stored apart from the backbone, used as fc


LAYOUTS = (
    Layout("MoCo v1/v2", "module.encoder_q.",
           {"module.encoder_q.fc.": "MoCo projection head", "module.encoder_k.": "momentum (key) encoder",
            "module.queue_ptr": "queue pointer", "module.queue": "negative-key queue"}),
    Layout("MoCo v3", "module.base_encoder.",
           {"module.base_encoder.fc.": "MoCo v3 projection MLP", "module.momentum_encoder.": "momentum encoder",
            "module.predictor.": "MoCo v3 prediction MLP"}),
    Layout("SimSiam (ImageNet)", "module.encoder.",
           {"module.encoder.fc.": "SimSiam projection MLP", "module.predictor.": "SimSiam prediction MLP"}),
    Layout("Barlow Twins / VICReg (DataParallel backbone)", "module.backbone.",
           {"module.projector.": "projector MLP", "module.bn.": "Barlow Twins embedding BatchNorm",
            "module.head.": "DINO head"}),
    Layout("DINO teacher / solo-learn / mmselfsup (backbone.)", "backbone.",
           {"head.": "DINO/SSL head", "projector.": "projector MLP", "predictor.": "predictor MLP",
            "momentum_backbone.": "momentum backbone", "momentum_projector.": "momentum projector",
            "neck.": "mmselfsup neck", "momentum_classifier.": "momentum classifier"},
           head_prefix="classifier."),
    Layout("BYOL (online_network.encoder.)", "online_network.encoder.",
           {"online_network.projector.": "BYOL projector", "online_network.projection.": "BYOL projector",
            "online_network.predictor.": "BYOL predictor", "target_network.": "BYOL target network",
            "predictor.": "BYOL predictor"}),
    Layout("BYOL (sthalles/PyTorch-BYOL, nn.Sequential encoder)", "encoder.",
           {"projetion.": "BYOL projection MLP", "projection.": "BYOL projection MLP"}, sequential=True),
    Layout("BYOL / SSL ports (encoder.)", "encoder.",
           {"projector.": "projector MLP", "projection.": "projection MLP", "projetion.": "projection MLP",
            "predictor.": "predictor MLP", "online_projector.": "projector MLP"}),
    Layout("DataParallel / SwAV (module.)", "module.",
           {"module.projection_head.": "SwAV projection head", "module.prototypes.": "SwAV prototypes"}),
    Layout("torchvision", "", {}),
)


def unwrap(checkpoint) -> Tuple[dict, Tuple[str, ...]]:
    """(state dict, notes): the checkpoint itself when it holds tensors, else its first `CONTAINERS` entry."""
    import torch

    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise CheckpointMismatchError(f"expected a state dict or a dict holding one under "
                                      f"{'/'.join(CONTAINERS)}, got {type(checkpoint).__name__}")
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint), ()
    for entry in CONTAINERS:
        inner = checkpoint.get(entry)
        if isinstance(inner, Mapping) and inner:
            bad = [k for k, v in inner.items() if not isinstance(v, torch.Tensor)]
            if bad:
                raise CheckpointMismatchError(f"checkpoint[{entry!r}] entry {bad[0]!r} is not a tensor")
            others = sorted(str(k) for k in checkpoint if k != entry)
            note = f"used checkpoint[{entry!r}]" + (f"; ignored the entries {', '.join(others)}" if others else "")
            return dict(inner), (note,)
    bad = next(k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    raise CheckpointMismatchError(f"checkpoint entry {bad!r} is not a tensor, and the checkpoint has none of "
                                  f"the entries {', '.join(CONTAINERS)} holding a state dict")


def _layout_of(state_dict: Mapping) -> Layout:
    for layout in LAYOUTS:
        anchor = layout.prefix + ("0.weight" if layout.sequential else "conv1.weight")
        if anchor in state_dict and len(state_dict[anchor].shape) == 4:
            return layout
    raise CheckpointMismatchError(
        "no ResNet stem found: expected 'conv1.weight' under one of the prefixes "
        f"{', '.join(repr(l.prefix) for l in LAYOUTS if l.prefix)} or none; first keys: "
        f"{', '.join(repr(k) for k in list(state_dict)[:5])}")


def _rename_sequential(key: str) -> str:
    head, _, rest = key.partition(".")
    if head not in _SEQUENTIAL:
        raise CheckpointMismatchError(f"unexpected key {key!r} in an nn.Sequential ResNet encoder "
                                      f"(children 0, 1, 4-7 hold conv1, bn1, layer1-4)")
    return _SEQUENTIAL[head] + "." + rest


def canonical_state_dict(state_dict: Mapping):
    """(torchvision-key dict, canonical key -> its key in the file, notes) for any of `LAYOUTS`
    (a key the file lacks is named with the layout's prefix)."""
    layout = _layout_of(state_dict)
    canonical, names, dropped = {}, {}, {}
    for key, value in state_dict.items():
        reason = next((why for prefix, why in layout.dropped.items() if key.startswith(prefix)), None)
        if reason is not None:
            dropped.setdefault(reason, []).append(key)
        elif layout.head_prefix and key.startswith(layout.head_prefix):
            new = "fc." + key[len(layout.head_prefix):]
            canonical[new], names[new] = value, key
        elif key.startswith(layout.prefix):
            new = key[len(layout.prefix):]
            new = _rename_sequential(new) if layout.sequential else new
            canonical[new], names[new] = value, key
        else:
            raise CheckpointMismatchError(
                f"unexpected key {key!r}: the checkpoint looks like {layout.name} (backbone keys "
                f"{layout.prefix or '(no prefix)'}*), and this key is neither backbone nor a known "
                f"training-only part ({', '.join(sorted(layout.dropped)) or 'none'})")
    notes = []
    if layout.prefix:
        notes.append(f"layout {layout.name}: stripped the prefix {layout.prefix!r}"
                     + (" and renamed nn.Sequential children 0,1,4-7 to conv1, bn1, layer1-4"
                        if layout.sequential else ""))
    for reason, keys in dropped.items():
        notes.append(f"dropped {len(keys)} key(s) of the {reason}: {_summary(keys)}")
    if layout.head_prefix and any(k.startswith(layout.head_prefix) for k in state_dict):
        notes.append(f"used {layout.head_prefix}* (online linear classifier) as the head fc")
    return canonical, lambda key: names.get(key, layout.prefix + key), tuple(notes)


def _summary(keys, limit: int = 4) -> str:
    return ", ".join(repr(k) for k in keys[:limit]) + (f" ... (+{len(keys) - limit})" if len(keys) > limit else "")


def depth_of(state_dict: Mapping) -> Tuple[str, Tuple[int, ...]]:
    """(block kind, blocks per stage) read off canonical keys."""
    blocks = {}
    for key in state_dict:
        m = re.match(r"layer(\d+)\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    sizes = tuple(len(blocks.get(i, ())) for i in range(1, 5))
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    return kind, sizes


def convert_state_dict(arch: str, state_dict: Mapping, *, what: str, stored_key=None):
    """Canonical (torchvision-key) state dict -> (config, Flax variables) for torchvision `arch`."""
    spec = models.ARCHITECTURES[arch]
    kind, sizes = depth_of(state_dict)
    want = (spec.default_config["block"], tuple(spec.default_config["stage_sizes"]))
    if (kind, sizes) != want:
        found = DEPTHS.get((kind, sizes))
        last = f"layer4.{sizes[3] - 1}" if sizes[3] else "layer4"
        raise CheckpointMismatchError(
            f"{what}: the checkpoint is a {found or f'{kind} ResNet with stages {list(sizes)}'} "
            f"(e.g. key {(stored_key or (lambda k: k))(last + '.conv1.weight')!r}), not {arch}"
            + (f": convert it as {found}" if found else ""))
    config = dict(spec.default_config)
    if "fc.weight" in state_dict:
        config["num_classes"] = int(state_dict["fc.weight"].shape[0])
    _, abstract = models.init_abstract(arch, config)
    variables = fill_variables(abstract, _drop_batch_counters(state_dict), torchvision_key, what=what,
                               stored_key=stored_key)
    return config, variables


def _converter(arch: str):
    def convert(checkpoint_path: str, out_dir: str, *, unsafe_unpickle=False, overwrite=False) -> str:
        checkpoint = load_checkpoint(checkpoint_path, unsafe_unpickle=unsafe_unpickle)
        stated = checkpoint.get("arch") if isinstance(checkpoint, Mapping) else None
        if isinstance(stated, str) and stated != arch and stated in DEPTHS.values():
            raise CheckpointMismatchError(f"{checkpoint_path}: checkpoint['arch'] is {stated!r}, not {arch!r}")
        raw, notes = unwrap(checkpoint)
        canonical, to_file, layout_notes = canonical_state_dict(raw)
        config, variables = convert_state_dict(arch, canonical, what=checkpoint_path, stored_key=to_file)
        notes = notes + layout_notes + ((f"head: fc {config['num_classes']} classes",)
                                        if config["num_classes"] else ("no head (the checkpoint has no fc)",))
        return models.save(arch, config, variables, out_dir, notes=notes, overwrite=overwrite)

    convert.__name__ = f"convert_{arch}"
    convert.__doc__ = f"torchvision {arch} or an SSL checkpoint of its backbone (see `LAYOUTS`) -> `out_dir`."
    return convert


convert_resnet18 = _converter("resnet18")
convert_resnet34 = _converter("resnet34")
convert_resnet50 = _converter("resnet50")
convert_resnet101 = _converter("resnet101")
convert_resnet152 = _converter("resnet152")
