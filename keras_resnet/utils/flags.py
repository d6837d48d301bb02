"""Command-line flags derived from the dataclasses (`Recipe`, `SearchSpace`, `Budget`), declared once.

A dataclass field made with `field` carries its help text (and, where the default's type does not say
it, the flag's type, choices or ``nargs``); `add_flags` turns the fields into ``--kebab-case`` flags of
an argparse parser or group, and `from_args` builds the dataclass back from the parsed arguments.
Every flag is named after the library argument it sets.
"""

import argparse
import dataclasses


def field(default, help, **flag):
    """A dataclass field with its flag's `help` and any argparse options (`type`, `choices`, `nargs`)."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


def int_list(text):
    """``"2,2,2"`` -> ``(2, 2, 2)``: the argparse type of comma-separated integers."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 2,2,2. Received: {text!r}")


def add_flags(parser, cls, *, only=None, skip=(), title=None, defaults=None):
    """Adds a flag for each field of `cls` (all, or those in `only`, less `skip`) to `parser`.

    `defaults` maps a field name to ``(default, what the default means)`` where a command's default
    differs from the dataclass's (`evaluate`'s dataset is the run folder's).
    """
    group = parser.add_argument_group(title or f"{cls.__name__} ({cls.__module__}.{cls.__name__})")
    for f in _fields(cls, only, skip):
        options = dict(f.metadata)
        help_text = options.pop("help", None)
        default = f.default
        if f.name in (defaults or {}):
            default, meaning = defaults[f.name]
            help_text = f"{help_text} (default: {meaning})"
        if "type" not in options and "action" not in options and default is not None:
            if isinstance(default, bool):
                options["action"] = argparse.BooleanOptionalAction
            else:
                options["type"] = type(default)
        if default is not None and not isinstance(default, bool):
            help_text = f"{help_text} (default {default})"
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=default, help=help_text,
                           **options)
    return group


def from_args(cls, args, *, only=None, skip=(), **overrides):
    """An instance of `cls` from the parsed `args` (fields not declared as flags keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in _fields(cls, only, skip) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def _fields(cls, only, skip):
    return [f for f in dataclasses.fields(cls) if (only is None or f.name in only) and f.name not in skip]
