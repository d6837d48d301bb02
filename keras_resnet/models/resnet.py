"""`build()`: a stem, stages of blocks and a head, as `ResNet`, the model whose config is its arguments.

The depths and names it takes, and the rules that turn them into stages, are in
`keras_resnet.models.architectures`.
"""

import contextlib

import keras
from keras import layers

from keras_resnet.models.architectures import (
    ATTENTIONS,
    BLOCKS,
    IMAGENET_DEPTHS,
    SHORTCUTS,
    STAGE_WIDTHS,
    STEMS,
    VARIANTS,
    architecture_name,
    block_depth,
    resolve_architecture,
    resolve_depth,
)
from keras_resnet.models.layers import StridedPad, batch_norm, conv
from keras_resnet.utils import checks, io_utils

SMALL_INPUT = 64  # inputs whose smaller side is below this get the 3x3 stride-1 stem, no max-pool


def _check_input_shape(input_shape):
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3 or not all(
            s is None or (checks.is_int(s) and s > 0) for s in input_shape):
        raise ValueError(f"`input_shape` must be (height, width, channels) of positive integers "
                         f"(None for a variable side). Received: input_shape={input_shape!r}")
    return tuple(input_shape)


def _check_build_args(width, variant, num_classes, input_shape, include_top, pooling, total_stride,
                      drop_path_rate, classifier_activation):
    checks.check_number("drop_path_rate", drop_path_rate, 0.0, 1.0, high_open=True)
    checks.check_number("width", width, 0.0, low_open=True)
    checks.check_choice("variant", variant, VARIANTS)
    checks.check_bool("include_top", include_top)
    if include_top:
        checks.check_int("num_classes", num_classes, 1)
    checks.check_choice("pooling", pooling, (None, "avg", "max"))
    if input_shape[-1] is None:
        raise ValueError(f"`input_shape` needs a known channel count. Received: input_shape={input_shape!r}")
    for side in input_shape[:2]:
        if side is not None and side < total_stride:
            raise ValueError(
                f"`input_shape`={input_shape!r} is too small: this network downsamples by "
                f"{total_stride}, so each side must be at least {total_stride} pixels."
            )
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise ValueError(f"`classifier_activation` must be None or a Keras activation name such as "
                             f"'softmax'. Received: classifier_activation={classifier_activation!r}") from None


def build(
    depth=None,
    *,
    blocks=None,
    block=None,
    width=1.0,
    stem=None,
    stem_width=None,
    shortcut=None,
    attention=None,
    groups=None,
    width_per_group=None,
    variant=None,
    num_classes=1000,
    input_shape=(224, 224, 3),
    include_top=True,
    pooling=None,
    drop_path_rate=0.0,
    classifier_activation="softmax",
):
    """Builds a ResNet as an uncompiled functional `keras.Model`, its weights freshly initialised.

    `keras_resnet.build` takes the same arguments and ``weights=`` (a checkpoint to load).

    The network is a stem, stages of residual blocks (the first block of every stage after the first
    halves the spatial size and projects its shortcut), global pooling and a classifier. Inputs whose
    smaller side is below 64 pixels (CIFAR, Fashion-MNIST) get a 3x3 stride-1 stem without max-pool,
    as is standard for small images, so a ResNet-18 on 28x28 keeps a 4x4 final feature map; larger
    inputs get the 7x7 stride-2 stem with max-pool. Layer names are stable: ``stem_conv``,
    ``stem_bn``, ``stem_pool``, ``stage{s}_block{b}``, ``post_bn`` (pre-activation only), ``pool``,
    ``logits``, ``predictions``. The pre-activation stem ends with its convolution, so its max-pool
    pads with -inf (as PyTorch's ``MaxPool2d(3, 2, padding=1)``): a 3x3 stride-1 ``"same"`` pool
    ``stem_pool``, then every other pixel, ``stem_pool_stride``.

    A name from `list_models()` in place of the depth (``build("resnet50d")``, as timm's
    ``create_model``) stands for its row of `ARCHITECTURES`: a depth with a stem, a shortcut, an
    attention module, the bottleneck's groups and width per group and the variant (``resnetv2_50`` is
    timm's pre-activation ResNetV2), options that can also be given directly to any depth, the CIFAR
    family and custom stage lists included (a deep stem needs the ImageNet stem, grouped or wider
    3x3s need bottlenecks, and a plain network has no shortcut).

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; He et al.,
    "Identity Mappings in Deep Residual Networks", ECCV 2016; He et al., "Bag of Tricks for Image
    Classification with Convolutional Neural Networks", CVPR 2019 (ResNet-C/D); Hu et al.,
    "Squeeze-and-Excitation Networks", CVPR 2018; Xie et al., "Aggregated Residual Transformations for
    Deep Neural Networks", CVPR 2017 (ResNeXt).

    Args:
        depth: 18, 34, 50, 101 or 152 (ImageNet family); 6n+2 such as 20, 32, 44, 56, 110, 1202
            (CIFAR family, basic blocks), or 9n+2 such as 164 (CIFAR family, bottlenecks); or a
            name from `list_models()` such as "resnet50d", "seresnext50_32x4d", "wide_resnet50_2".
            Defaults to 34 unless `blocks` is given.
        blocks: custom blocks per stage instead of a depth: 4 stages use the ImageNet widths
            (64-128-256-512), 3 stages the CIFAR widths (16-32-64).
        block: "basic" or "bottleneck" for custom `blocks` (default "basic").
        width: multiplier of every stage's width (2.0 doubles all channels, as in Wide ResNets).
        stem: "default" (7x7 stride 2, or 3x3 stride 1 for small inputs) or "deep" (ResNet-C: three
            3x3 convolutions of stem_width/2, stem_width/2 and stem_width channels, ImageNet stem only).
        stem_width: channels out of the stem (default 64 * width, or 16 * width in the CIFAR family).
        shortcut: "projection" (a strided 1x1 convolution where shapes change) or "avg_down"
            (ResNet-D: 2x2 average pool, then a stride-1 1x1 convolution).
        attention: None or "se" (a squeeze-and-excitation gate on every block's branch).
        groups: groups of the bottleneck's 3x3 convolution (ResNeXt's cardinality; default 1).
        width_per_group: the bottleneck's inner width per group, per 64 channels of the stage's width
            (default 64; 4 with groups=32 is resnext50_32x4d, 128 is wide_resnet50_2).
        variant: "v1.5" (post-activation, stride on the 3x3), "preact" (pre-activation, stride on
            the 3x3: timm's ResNetV2), or "plain" (the same network without shortcuts, for the
            paper's degradation experiment). Default: the name's, else "v1.5".
        num_classes: classes of the classifier (with `include_top`).
        input_shape: (height, width, channels); any channel count, e.g. 1 for grayscale.
        include_top: add global average pooling and the classifier.
        pooling: without the top, None (4D features), "avg" or "max".
        drop_path_rate: stochastic-depth rate of the last block, rising linearly from 0 at the first.
        classifier_activation: activation of the classifier ("softmax", or None for logits).

    Returns:
        An uncompiled functional `ResNet` (a `keras.Model` whose config is these arguments, so a
        saved file knows its architecture: see `config_of`) named after its architecture
        (``resnet50d``), else ``resnet{depth}`` (``plain{depth}``, ``preresnet{depth}``).

    Example:

    >>> model = build(depth=20, input_shape=(28, 28, 1), num_classes=10)
    >>> model.output_shape
    (None, 10)
    >>> build("resnet18d", input_shape=(64, 64, 3), num_classes=10).name
    'resnet18d'
    """
    model = ResNet(depth, blocks=blocks, block=block, width=width, stem=stem, stem_width=stem_width,
                   shortcut=shortcut, attention=attention, groups=groups, width_per_group=width_per_group,
                   variant=variant, num_classes=num_classes, input_shape=input_shape, include_top=include_top,
                   pooling=pooling, drop_path_rate=drop_path_rate, classifier_activation=classifier_activation)
    return model


def _check_family_options(block, blocks, small, stem, stem_width, shortcut, attention, groups,
                          width_per_group, variant):
    checks.check_choice("stem", stem, STEMS)
    checks.check_int("stem_width", stem_width, 1)
    checks.check_choice("shortcut", shortcut, SHORTCUTS)
    checks.check_choice("attention", attention, ATTENTIONS)
    checks.check_int("groups", groups, 1)
    checks.check_int("width_per_group", width_per_group, 1)
    if stem == "deep" and small:
        raise ValueError(f"`stem`='deep' replaces the ImageNet stem (7x7 stride 2), but this network has the "
                         f"small-input stem (a 3x3 stride-1 convolution: the CIFAR family, or inputs under "
                         f"{SMALL_INPUT} pixels), which a deep stem would not improve. Received: stem='deep' "
                         f"with blocks={blocks}")
    if stem == "deep" and stem_width < 2:
        raise ValueError(f"`stem_width` must be at least 2 with stem='deep' (its first convolutions have "
                         f"stem_width / 2 channels). Received: stem_width={stem_width!r}")
    if block == "basic" and (groups, width_per_group) != (1, 64):
        raise ValueError(f"Grouped and wider 3x3 convolutions (`groups`, `width_per_group`) are options of "
                         f"the bottleneck block; this network has basic blocks. Received: groups={groups!r}, "
                         f"width_per_group={width_per_group!r}: pass block='bottleneck' with blocks=, or a "
                         f"bottleneck depth (50, 101, 152, 9n+2)")
    if shortcut == "avg_down" and variant == "plain":
        raise ValueError("`shortcut`='avg_down' shapes the shortcut, and variant='plain' has none. Received: "
                         "shortcut='avg_down' with variant='plain'")


def _stem(inputs, small, stem, stem_width):
    """The stem: 3x3 stride 1 (small inputs), 7x7 stride 2 (default) or three 3x3s (deep)."""
    if small:
        return conv(stem_width, 3, 1, "stem_conv")(inputs)
    if stem == "default":
        return conv(stem_width, 7, 2, "stem_conv")(StridedPad(7, name="stem_pad")(inputs))
    # ResNet-C: 3x3 stride 2, 3x3, 3x3 (timm's stem_type="deep"); stem_bn and stem_relu follow
    x = conv(stem_width // 2, 3, 2, "stem_conv1")(StridedPad(3, name="stem_pad")(inputs))
    x = layers.Activation("relu", name="stem_relu1")(batch_norm("stem_bn1")(x))
    x = conv(stem_width // 2, 3, 1, "stem_conv2")(x)
    x = layers.Activation("relu", name="stem_relu2")(batch_norm("stem_bn2")(x))
    return conv(stem_width, 3, 1, "stem_conv3")(x)


def _graph(depth, blocks, block, width, stem, stem_width, shortcut, attention, groups, width_per_group,
           variant, num_classes, input_shape, include_top, pooling, drop_path_rate, classifier_activation):
    """``(inputs, outputs, name)`` of the network `build` describes."""
    block, blocks = resolve_depth(depth, blocks, block)
    input_shape = _check_input_shape(input_shape)
    small = len(blocks) == 3 or min(s or SMALL_INPUT for s in input_shape[:2]) < SMALL_INPUT
    total_stride = (1 if small else 4) * 2 ** (len(blocks) - 1)
    _check_build_args(width, variant, num_classes, input_shape, include_top, pooling, total_stride,
                      drop_path_rate, classifier_activation)
    _check_family_options(block, blocks, small, stem, stem_width, shortcut, attention, groups,
                          width_per_group, variant)
    preact = variant == "preact"

    inputs = keras.Input(shape=input_shape, name="input")
    x = _stem(inputs, small, stem, stem_width)
    if not preact:  # pre-activation: the first block normalises its input itself
        x = layers.Activation("relu", name="stem_relu")(batch_norm("stem_bn")(x))
    if not small and preact:  # -inf padding, as PyTorch's MaxPool2d(3, 2, padding=1): the stem has no ReLU
        x = layers.MaxPooling2D(3, strides=1, padding="same", name="stem_pool")(x)
        x = layers.MaxPooling2D(1, strides=2, name="stem_pool_stride")(x)
    elif not small:  # after the ReLU, zero padding is -inf padding
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(StridedPad(3, name="stem_pool_pad")(x))
    # preact=True, not the pre-activation classes: a saved model files its blocks' weights under their class
    # name, and these are the names that 0.1 wrote and reads (keras_resnet.models.blocks.PREACT_FORMS).
    options = dict(preact=preact, residual=variant != "plain", attention=attention,
                   avg_down=shortcut == "avg_down")
    if block == "bottleneck":
        options.update(groups=groups, width_per_group=width_per_group)
    x = _stages(x, BLOCKS[block], blocks, width, drop_path_rate, options)
    if preact:
        x = layers.Activation("relu", name="post_relu")(batch_norm("post_bn")(x))
    x = _head(x, num_classes, include_top, pooling, classifier_activation)
    family = dict(stem=stem, shortcut=shortcut, attention=attention, groups=groups,
                  width_per_group=width_per_group, variant=variant)
    return inputs, x, _default_name(block, blocks, width, stem_width, family)


def _stages(x, block_cls, blocks, width, drop_path_rate, options):
    """The stages: the first block of each after the first halves the size; drop path rises from 0."""
    widths = STAGE_WIDTHS[len(blocks)]
    total, index = sum(blocks), 0
    for s, (count, base) in enumerate(zip(blocks, widths), start=1):
        for b in range(1, count + 1):
            x = block_cls(
                max(1, round(base * width)),
                strides=2 if (b == 1 and s > 1) else 1,
                drop_path_rate=drop_path_rate * index / max(total - 1, 1),
                name=f"stage{s}_block{b}",
                **options,
            )(x)
            index += 1
    return x


def _head(x, num_classes, include_top, pooling, classifier_activation):
    """Global pooling and the classifier (``include_top``), or the pooling asked for, or nothing."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        x = layers.Dense(num_classes, name="logits")(x)
        if classifier_activation is not None:
            # float32 so that mixed-precision training keeps a stable softmax
            x = layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="pool")(x)
    return x


def _default_name(block, blocks, width, stem_width, family):
    """The table's name of the network (``resnet50d``), else ``resnet{depth}`` with its options as tags."""
    d = block_depth(block, blocks)
    named = (architecture_name(d, family) if (len(blocks) == 4 and IMAGENET_DEPTHS.get(d) == (block, blocks)
             and stem_width == round(64 * width)) else None)
    if named:
        return named + ("" if width == 1 else f"_w{width:g}")
    prefix = {"v1.5": "resnet", "preact": "preresnet", "plain": "plain"}[family["variant"]]
    # options outside a named row show in the name (and so in the default run folder)
    tags = [tag for tag, on in (("deep_stem", family["stem"] == "deep"),
                                ("avg_down", family["shortcut"] == "avg_down"),
                                (family["attention"], family["attention"] is not None),
                                (f"{family['groups']}x{family['width_per_group']}d",
                                 (family["groups"], family["width_per_group"]) != (1, 64))) if on]
    suffix = "".join(f"_{t}" for t in tags) + ("" if width == 1 else f"_w{width:g}")
    return f"{prefix}{d}{suffix}"


@keras.saving.register_keras_serializable(package="keras_resnet")
class ResNet(keras.Model):
    """The functional model that `build` returns; its config is the `build` arguments.

    A `.keras` file of it records depth, blocks, block, width, the stem, shortcut, attention and
    groups, and the rest, and loads (with ``safe_mode=True`` and no ``custom_objects``) by building
    the same network again.
    """

    def __init__(self, depth=None, *, blocks=None, block=None, width=1.0, stem=None, stem_width=None,
                 shortcut=None, attention=None, groups=None, width_per_group=None, variant=None,
                 num_classes=1000, input_shape=(224, 224, 3), include_top=True, pooling=None, drop_path_rate=0.0,
                 classifier_activation="softmax", name=None, trainable=True, dtype=None, **kwargs):
        _, depth, family = resolve_architecture(depth, stem=stem, shortcut=shortcut, attention=attention,
                                                groups=groups, width_per_group=width_per_group, variant=variant)
        block, blocks = resolve_depth(depth, blocks, block)
        checks.check_number("width", width, 0.0, low_open=True)
        base = STAGE_WIDTHS[len(blocks)][0]
        family = dict(stem=family["stem"] or "default",
                      stem_width=max(1, round(base * width)) if stem_width is None else stem_width,
                      shortcut=family["shortcut"] or "projection", attention=family["attention"],
                      groups=1 if family["groups"] is None else family["groups"],
                      width_per_group=64 if family["width_per_group"] is None else family["width_per_group"],
                      variant=family["variant"] or "v1.5")
        # The dtype policy the layers were made under (mixed precision): a loaded file gets it back.
        dtype = dtype or keras.mixed_precision.dtype_policy().name
        arguments = dict(depth=block_depth(block, blocks), blocks=blocks, block=block, width=width, **family,
                         num_classes=num_classes, input_shape=_check_input_shape(input_shape),
                         include_top=include_top, pooling=pooling, drop_path_rate=drop_path_rate,
                         classifier_activation=classifier_activation)
        with dtype_policy_scope(dtype):
            inputs, outputs, default_name = _graph(**arguments)
        super().__init__(inputs, outputs, name=name or default_name, trainable=trainable, **kwargs)
        self._build_arguments, self._policy_name = arguments, dtype

    def get_config(self):
        config = io_utils.jsonable(self._build_arguments)
        return {"name": self.name, "trainable": self.trainable, "dtype": self._policy_name, **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


@contextlib.contextmanager
def dtype_policy_scope(policy):
    """Sets Keras's global dtype policy inside the block and restores the one it found."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield keras.mixed_precision.dtype_policy()
    finally:
        keras.mixed_precision.set_global_policy(previous)


def config_of(model):
    """The `build` arguments of a model that `build` made (also after a `.keras` round trip).

    Returns a dict with ``depth``, ``blocks``, ``block``, ``width``, ``stem``, ``stem_width``,
    ``shortcut``, ``attention``, ``groups``, ``width_per_group``, ``variant``, ``num_classes``,
    ``input_shape``, ``include_top``, ``pooling``, ``drop_path_rate`` and ``classifier_activation``;
    ``build(**config_of(model))`` builds the same architecture. Raises `ValueError` for another model.
    """
    if not isinstance(model, ResNet):
        raise ValueError(f"`model` must be a model made by keras_resnet.build (or loaded from its .keras "
                         f"file). Received: model={getattr(model, 'name', model)!r} of type "
                         f"{type(model).__name__}")
    config = model.get_config()
    for key in ("name", "trainable", "dtype"):
        config.pop(key)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
