"""`keras_resnet.build`: the architecture from `keras_resnet.models`, the weights from
`keras_resnet.weights`. The one place that joins the two (as timm's ``create_model``), so the model
code never imports the checkpoint code."""

import inspect

from keras_resnet.models import resnet
from keras_resnet.weights import pretrained

FAMILY_OPTIONS = ("stem", "stem_width", "shortcut", "attention", "groups", "width_per_group")


def build(depth=None, *, weights=None, **options):
    """Builds a ResNet (`keras_resnet.models.build`, whose arguments these are) and loads `weights`.

    Args:
        depth: as `keras_resnet.models.build` takes it: a depth, a name from `list_models()`, or None.
        weights: None (random initialisation) or a checkpoint to load, as
            `keras_resnet.weights.load_weights` takes it. Without `depth` and ``blocks``, the
            architecture is the checkpoint's (`keras_resnet.weights.architecture_of`: timm's
            config.json names it, else its tensors show it), e.g.
            ``build(weights="timm/resnet50d.ra2_in1k")``.
        **options: the other keyword arguments of `keras_resnet.models.build` (blocks, width,
            variant, num_classes, input_shape, include_top, pooling, ...).

    Returns:
        An uncompiled functional `ResNet`, named after its architecture.

    Example:

    >>> model = build(depth=20, input_shape=(28, 28, 1), num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    if weights is not None and depth is None and options.get("blocks") is None:
        depth, options = _checkpoint_architecture(weights, options)
    model = resnet.build(depth, **options)
    if weights is not None:
        pretrained.load_weights(model, weights)
    return model


# What `inspect.signature` (help(), IDEs) shows: every argument of `keras_resnet.models.build`, and weights.
build.__signature__ = inspect.signature(resnet.build).replace(parameters=[
    *inspect.signature(resnet.build).parameters.values(),
    inspect.Parameter("weights", inspect.Parameter.KEYWORD_ONLY, default=None)])


def _checkpoint_architecture(weights, options):
    """The depth and options of the checkpoint's architecture; options given explicitly win, and
    for a named architecture they are checked against its row."""
    found = pretrained.architecture_of(weights)
    depth = found.pop("depth")
    options = dict(options)
    options["blocks"], options["block"] = found.pop("blocks", None), found.pop("block", None)
    options["width"] = found.pop("width", options.get("width", 1.0))
    if options.get("variant") is None and not isinstance(depth, str):
        options["variant"] = found.pop("variant", None)
    if isinstance(depth, str):  # a name: options given here are checked against its row
        found = {}
    for key in FAMILY_OPTIONS:
        if options.get(key) is None:
            options[key] = found.get(key)
    return depth, options
