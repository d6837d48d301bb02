"""`models` and `summary`: the names `--depth` takes, and what a ResNet or a .keras file holds."""

import json

from keras_resnet.cli.arguments import add_model_args, model_kwargs
from keras_resnet.utils.io_utils import jsonable


def _summary(args):
    from keras_resnet.utils.io_utils import load_model
    from keras_resnet.models.resnet import ResNet, build, config_of
    from keras_resnet.models.summary import format_summary, summarize

    model = load_model(args.model) if args.model else build(**model_kwargs(args))
    info = summarize(model)
    if isinstance(model, ResNet):  # the architecture a saved file records
        info["build"] = jsonable(config_of(model))
    if args.json:
        print(json.dumps(info))
        return
    print(format_summary(info))
    if args.model and "build" in info:
        print("  build(" + ", ".join(f"{k}={v!r}" for k, v in info["build"].items()) + ")")


def _models(args):
    from keras_resnet.models.architectures import ARCHITECTURE_FIELDS, ARCHITECTURES

    for name, row in sorted(ARCHITECTURES.items()):
        options = dict(zip(ARCHITECTURE_FIELDS, row))
        print(f"{name:20s} " + " ".join(f"{k}={v}" for k, v in options.items()) if args.verbose else name)


def add_parsers(sub):
    """The `models` and `summary` subcommands."""
    p = sub.add_parser("models", help="the names that --depth (--arch) takes, as keras_resnet.list_models()")
    p.add_argument("--verbose", action="store_true", help="with each name's build() arguments")
    p.set_defaults(func=_models)

    p = sub.add_parser("summary", help="parameters, MACs per image and architecture of a ResNet or a .keras file")
    p.add_argument("model", nargs="?", default=None, help="a .keras file (else the model of the flags below)")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_summary)
