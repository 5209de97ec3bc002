"""Attribution-method flags of the commands, built from the method table (`cocoa_jax.methods`).

`add_arguments` gives a command `--methods` and one flag per option of the table's methods
(`--n-steps`, `--n-masks`, ...; help and parsing from each option's `OptionSpec`, defaults listed
from the signatures), `--option METHOD.OPTION=JSON` for one method's option or one without
a flag, and `--estimators PROFILE` (`methods.PROFILES`: the options a profile sets go under the
flags given; default `methods.COMMAND_PROFILE`). `selected` and `options` read them back and check every value by the methods' own checks
(`methods.check_values`) before any work. A registered method gets all of this with no edit here.
"""
from __future__ import annotations

import argparse
import json

from cocoa_jax.commands.errors import UsageError


def _option_names(names) -> dict[str, list[str]]:
    """option -> the methods (of `names`) that have it, in table order."""
    from cocoa_jax import methods

    out: dict[str, list[str]] = {}
    for name in names:
        for option in methods.defaults(name):
            out.setdefault(option, []).append(name)
    return out


def flag_of(option: str, owners) -> str:
    from cocoa_jax import methods

    spec = methods.get(owners[0]).option_spec(option)
    return spec.flag or "--" + option.replace("_", "-")


def _default_text(option, owners) -> str:
    from cocoa_jax import methods

    values = []
    for name in owners:
        default = methods.defaults(name)[option]
        none = methods.OPTION_SPECS[option].none if option in methods.OPTION_SPECS else "auto"
        values.append(f"{methods.get(name).title} {none if default is None else default}")
    return "defaults: " + ", ".join(values)


def add_arguments(parser: argparse.ArgumentParser, *, default_methods, choices=None) -> None:
    """`--methods` (default `default_methods`, from `choices` or every attribution method), one
    flag per option of the offered methods, and `--option METHOD.OPTION=JSON`."""
    from cocoa_jax import methods

    offered = tuple(choices or methods.ATTRIBUTION_METHODS)
    parser.set_defaults(_method_choices=offered)
    group = parser.add_argument_group("attribution methods (options apply to every selected method that has them)")
    group.add_argument("--methods", default=",".join(default_methods),
                       help=f"comma-separated, from {', '.join(offered)} (default: {','.join(default_methods)})")
    for option, owners in _option_names(offered).items():
        spec = methods.get(owners[0]).option_spec(option)
        if spec.parse is None:
            continue  # arrays and the like: the API (or --option with JSON) only
        kwargs = dict(default=None, dest=f"option_{option}", metavar=spec.metavar,
                      help=f"{spec.help} ({_default_text(option, owners)})")
        if spec.parse is methods.parse_bool:
            kwargs.update(nargs="?", const=True)
        group.add_argument(flag_of(option, owners), type=_argparse_type(spec.parse), **kwargs)
    group.add_argument("--option", action="append", default=[], metavar="METHOD.OPTION=JSON",
                       help="one method's option, e.g. --option rise.centered=true --option rise.n_masks=416")
    fast = "; ".join(f"{methods.get(m).title} " + ", ".join(f"{k} {v}" for k, v in o.items())
                     for m, o in methods.PROFILES["fast"].items())
    group.add_argument("--estimators", default=None, choices=tuple(methods.PROFILES),
                       help=f"estimator profile, under the option flags given (cocoa_jax.methods.PROFILES): "
                            f"fast = {fast} (default: measured at least as accurate as the paper's, "
                            f"docs/estimators.md); paper = the paper's estimators (RISE 5000 uncentred masks, "
                            f"IG 50 steps), as the sweep runs them")


def _argparse_type(parse):
    if parse in (int, float, str):
        return parse  # argparse's own message: "invalid int value: 'abc'"

    def convert(text):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: {err}") from None

    return convert


def selected(args) -> tuple[str, ...]:
    """The methods of `--methods`, checked against the offered ones (order kept, no duplicates)."""
    from cocoa_jax.commands.checks import parse_names

    return parse_names("--methods", args.methods, args._method_choices)


def given(args, names) -> dict[str, dict]:
    """{method: options set on the command line} for the selected `names` (unset: not present)."""
    from cocoa_jax import methods

    owners_of = _option_names(args._method_choices)
    out: dict[str, dict] = {name: {} for name in names}
    for option, owners in owners_of.items():
        value = getattr(args, f"option_{option}", None)
        if value is None:
            continue
        targets = [n for n in owners if n in names]
        if not targets:
            raise UsageError(f"{flag_of(option, owners)} is an option of {', '.join(owners)}, none of which is "
                             f"selected by --methods ({', '.join(names)}); it would have no effect")
        for name in targets:
            out[name][option] = value
    for item in args.option:
        path, sep, text = item.partition("=")
        name, dot, option = path.partition(".")
        if not sep or not dot or not option:
            raise UsageError(f"--option expects METHOD.OPTION=JSON, got {item!r}")
        if name not in names:
            raise UsageError(f"--option {item!r}: method {name!r} is not selected by --methods ({', '.join(names)})")
        if option not in methods.defaults(name):
            raise UsageError(f"--option {item!r}: {name} has no option {option!r}; its options: "
                             f"{', '.join(methods.defaults(name)) or 'none'}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string, e.g. a rule name
        out[name][option] = tuple(value) if isinstance(value, list) else value
    return out


def profile(args) -> str:
    """The `--estimators` profile of an image command (`methods.COMMAND_PROFILE` when not given)."""
    from cocoa_jax import methods

    return methods.COMMAND_PROFILE if getattr(args, "estimators", None) is None else args.estimators


def options(args, names, image_shape, *, batch_size=None, estimators: str | None = None) -> dict[str, dict]:
    """{method: options}: those given on the command line over profile `estimators`' (None: no
    profile, the signature defaults), every value checked by the method's own checks on (H, W, C)
    images (`methods.check_values`), errors naming the flag. Options neither given nor set by the
    profile are absent: the method's signature default applies."""
    from cocoa_jax import methods

    out = given(args, names)
    owners_of = _option_names(args._method_choices)
    for name, values in out.items():
        display = {option: flag_of(option, owners_of[option]) for option in values if option in owners_of}
        display.update({option: f"--option {name}.{option}" for option in values if option not in display})
        from_profile = {} if estimators is None else {
            option: value for option, value in methods.profile_options(estimators, name).items() if option not in values}
        display.update({option: f"--estimators {estimators}" for option in from_profile})
        values.update(from_profile)
        display["batch_size"] = "--batch-size"
        try:
            methods.check_values(name, values, image_shape, batch_size=batch_size, names=display)
        except (TypeError, ValueError) as err:
            # The profile's values were not typed by the user: say where they came from.
            origin = (f"; --estimators {estimators} sets " + ", ".join(f"{k}={v}" for k, v in from_profile.items())
                      if from_profile else "")
            raise UsageError(f"{err} (method {name}{origin})") from None
    return out


def describe(name: str, values: dict) -> str:
    """'RISE (n_masks 2000, centered True)' for progress lines and figure captions."""
    from cocoa_jax import methods

    resolved = {**methods.defaults(name), **values}
    shown = ", ".join(f"{k} {v}" for k, v in resolved.items() if v is not None and k != "feature_mask")
    return f"{methods.get(name).title} ({shown})" if shown else methods.get(name).title
