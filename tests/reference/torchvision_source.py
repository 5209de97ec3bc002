"""torchvision's own `models/resnet.py`, executed from a torchvision wheel WITHOUT importing torchvision.

torchvision's PyPI wheel cannot be imported beside the CPU torch wheel used here, so the file is
read out of the wheel (a zip) and run with its package-relative imports replaced by small
stand-ins (weights enums, registration decorators, logging): the model classes themselves are
torchvision's code, unchanged. The wheel is looked for at $COCOA_JAX_TORCHVISION_WHEEL, then
~/.cache/cocoa-jax/torchvision-*.whl (get it with
`pip download torchvision==0.28.0 --no-deps -d ~/.cache/cocoa-jax`). Returns None when absent.
"""
from __future__ import annotations

import enum
import glob
import os
import sys
import types
import zipfile


def find_wheel():
    candidates = [os.environ.get("COCOA_JAX_TORCHVISION_WHEEL", "")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.cache/cocoa-jax/torchvision-*.whl")), reverse=True)
    return next((c for c in candidates if c and os.path.isfile(c)), None)


class _WeightsEnum(enum.Enum):
    @classmethod
    def verify(cls, obj):
        return obj


def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def load_resnet_module():
    """torchvision.models.resnet as a module object (None if no wheel is found)."""
    wheel = find_wheel()
    if wheel is None:
        return None
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("torchvision/models/resnet.py").decode()
    root = "_tv_source"
    stubs = {
        root: _module(root, __path__=[]),
        f"{root}.transforms": _module(f"{root}.transforms", __path__=[]),
        f"{root}.transforms._presets": _module(f"{root}.transforms._presets", ImageClassification=object),
        f"{root}.utils": _module(f"{root}.utils", _log_api_usage_once=lambda obj: None),
        f"{root}.models": _module(f"{root}.models", __path__=[]),
        f"{root}.models._api": _module(f"{root}.models._api", register_model=lambda *a, **k: (lambda f: f),
                                      Weights=lambda **kwargs: types.SimpleNamespace(**kwargs),
                                      WeightsEnum=_WeightsEnum),
        f"{root}.models._meta": _module(f"{root}.models._meta", _IMAGENET_CATEGORIES=[]),
        f"{root}.models._utils": _module(f"{root}.models._utils",
                                        _ovewrite_named_param=lambda kwargs, name, value: kwargs.setdefault(name, value),
                                        handle_legacy_interface=lambda **kw: (lambda f: f)),
    }
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        module = _module(f"{root}.models.resnet", __package__=f"{root}.models", __file__=f"{wheel}!resnet.py")
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    module.wheel = os.path.basename(wheel)
    return module
