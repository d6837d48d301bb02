"""`keras-resnet`: thin argparse over the package. Every flag mirrors a library argument name.

Each concern registers its own subcommands in one function below (``_add_*``); the handlers import
their module on first use, so ``keras-resnet summary`` does not load TensorFlow's data stack.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output


def _blocks(text):
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--blocks takes comma-separated integers, e.g. 2,2,2,2. Got {text!r}")


def _shape(text):
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape takes H,W,C, e.g. 28,28,1. Got {text!r}")


def add_model_args(p, input_shape=(224, 224, 3), num_classes=1000, depth=None):
    """The `build()` arguments, shared by every subcommand that builds a model."""
    g = p.add_argument_group("model (arguments of keras_resnet.build)")
    g.add_argument("--depth", type=int, default=depth, help="18/34/50/101/152, or 6n+2 (20, 56, 110, ...)")
    g.add_argument("--blocks", type=_blocks, default=None, help="custom blocks per stage, e.g. 2,3,4,2")
    g.add_argument("--block", choices=["basic", "bottleneck"], default=None)
    g.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    g.add_argument("--variant", choices=["v1.5", "preact", "plain"], default="v1.5")
    g.add_argument("--num-classes", type=int, default=num_classes)
    g.add_argument("--input-shape", type=_shape, default=input_shape, help="H,W,C")
    g.add_argument("--drop-path-rate", type=float, default=0.0)


def model_kwargs(args):
    return {k: getattr(args, k) for k in ("depth", "blocks", "block", "width", "variant",
                                          "num_classes", "input_shape", "drop_path_rate")}


def _summary(args):
    from keras_resnet.models import build
    from keras_resnet.summary import format_summary, summarize

    info = summarize(build(**model_kwargs(args)))
    print(json.dumps(info) if args.json else format_summary(info))


def _add_summary(sub):
    p = sub.add_parser("summary", help="parameters and MACs per image of a ResNet")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_summary)


def _add_training(sub):
    """`train` and `evaluate` (keras_resnet.training)."""


def _add_tuning(sub):
    """`tune` (keras_resnet.tuning)."""


def _add_export(sub):
    """`export` and `predict` (keras_resnet.export)."""


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keras-resnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_summary, _add_training, _add_tuning, _add_export):
        add(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:
        print(f"keras-resnet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
