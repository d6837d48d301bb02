"""The depth table and `build()`: every ResNet is a stem, a list of stages of blocks, and a head."""

import contextlib

import keras
from keras import layers

from keras_resnet import checks, io_utils
from keras_resnet.layers import BottleneckBlock, ResidualBlock, StridedPad, batch_norm, conv

# depth -> (block, blocks per stage), ImageNet family: 7x7 stem, four stages of 64-128-256-512 channels.
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# The CIFAR family is a rule, not a table: depth 6n+2 is three stages of n basic blocks of 16-32-64
# channels (He et al. 2015, section 4.2); depth 9n+2 (164, 1001) is three stages of n bottlenecks
# (He et al. 2016). ImageNet depths take precedence (50 and 152 are also 6n+2).
BLOCKS = {"basic": ResidualBlock, "bottleneck": BottleneckBlock}
STAGE_WIDTHS = {4: (64, 128, 256, 512), 3: (16, 32, 64)}
VARIANTS = ("v1.5", "preact", "plain")
SMALL_INPUT = 64  # inputs whose smaller side is below this get the 3x3 stride-1 stem, no max-pool
DEFAULT_DEPTH = 34


def supported_depths_message():
    return (
        f"Supported depths: the ImageNet family {sorted(IMAGENET_DEPTHS)}, the CIFAR family 6n+2 "
        "(20, 32, 44, 56, 110, 1202, ...) with basic blocks, or 9n+2 (164, 1001, ...) with bottlenecks; "
        "or pass `blocks=` per stage, e.g. blocks=(2, 3, 4, 2) for four stages or (3, 3, 3) for three."
    )


def resolve_depth(depth=None, blocks=None, block=None):
    """Returns ``(block, blocks)`` for a depth, or checks and completes a custom stage list."""
    if block is not None:
        checks.check_choice("block", block, sorted(BLOCKS))
    if blocks is not None:
        blocks = checks.check_int_tuple("blocks", blocks, STAGE_WIDTHS)  # 3 (CIFAR) or 4 (ImageNet) stages
        block = block or "basic"
        if depth is not None and depth != block_depth(block, blocks):
            raise ValueError(
                f"`depth`={depth!r} disagrees with blocks={blocks} of {block} blocks, which make "
                f"depth {block_depth(block, blocks)}. Pass one or the other."
            )
        return block, blocks
    depth = DEFAULT_DEPTH if depth is None else depth
    if not checks.is_int(depth) or depth < 1:
        raise ValueError(f"`depth` must be a positive integer. Received: depth={depth!r}. "
                         + supported_depths_message())
    if depth in IMAGENET_DEPTHS:
        found = IMAGENET_DEPTHS[depth]
    elif (depth - 2) % 6 == 0 and depth > 2 and block in (None, "basic"):
        found = ("basic", ((depth - 2) // 6,) * 3)
    elif (depth - 2) % 9 == 0 and depth > 2 and block in (None, "bottleneck"):
        found = ("bottleneck", ((depth - 2) // 9,) * 3)
    else:
        raise ValueError(f"Unsupported depth: depth={depth!r}. " + supported_depths_message())
    if block is not None and block != found[0]:
        raise ValueError(
            f"depth={depth} is built from {found[0]} blocks, not block={block!r}. Pass `blocks=` "
            "with `block=` for a custom network."
        )
    return found


def block_depth(block, blocks):
    """Weighted layers: the convolutions of every block, plus the stem and the classifier."""
    return len(BLOCKS[block].kernel_sizes) * sum(blocks) + 2


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
    variant="v1.5",
    num_classes=1000,
    input_shape=(224, 224, 3),
    include_top=True,
    pooling=None,
    drop_path_rate=0.0,
    classifier_activation="softmax",
    weights=None,
):
    """Builds a ResNet as an uncompiled functional `keras.Model`.

    The network is a stem, stages of residual blocks (the first block of every stage after the first
    halves the spatial size and projects its shortcut), global pooling and a classifier. Inputs whose
    smaller side is below 64 pixels (CIFAR, Fashion-MNIST) get a 3x3 stride-1 stem without max-pool,
    as is standard for small images, so a ResNet-18 on 28x28 keeps a 4x4 final feature map; larger
    inputs get the 7x7 stride-2 stem with max-pool. Layer names are stable: ``stem_conv``,
    ``stem_bn``, ``stem_pool``, ``stage{s}_block{b}``, ``post_bn`` (pre-activation only), ``pool``,
    ``logits``, ``predictions``.

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; He et al.,
    "Identity Mappings in Deep Residual Networks", ECCV 2016.

    Args:
        depth: 18, 34, 50, 101 or 152 (ImageNet family); 6n+2 such as 20, 32, 44, 56, 110, 1202
            (CIFAR family, basic blocks), or 9n+2 such as 164 (CIFAR family, bottlenecks).
            Defaults to 34 unless `blocks` is given.
        blocks: custom blocks per stage instead of a depth: 4 stages use the ImageNet widths
            (64-128-256-512), 3 stages the CIFAR widths (16-32-64).
        block: "basic" or "bottleneck" for custom `blocks` (default "basic").
        width: multiplier of every stage's width (2.0 doubles all channels, as in Wide ResNets).
        variant: "v1.5" (post-activation, stride on the 3x3), "preact" (pre-activation), or
            "plain" (the same network without shortcuts, for the paper's degradation experiment).
        num_classes: classes of the classifier (with `include_top`).
        input_shape: (height, width, channels); any channel count, e.g. 1 for grayscale.
        include_top: add global average pooling and the classifier.
        pooling: without the top, None (4D features), "avg" or "max".
        drop_path_rate: stochastic-depth rate of the last block, rising linearly from 0 at the first.
        classifier_activation: activation of the classifier ("softmax", or None for logits).
        weights: None (random initialisation) or a checkpoint to load, as
            `keras_resnet.pretrained.load_weights` takes it.

    Returns:
        An uncompiled functional `ResNet` (a `keras.Model` whose config is these arguments, so a
        saved file knows its architecture: see `config_of`) named ``resnet{depth}``
        (``plain{depth}``, ``preresnet{depth}``).

    Example:

    >>> model = build(depth=20, input_shape=(28, 28, 1), num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    model = ResNet(depth, blocks=blocks, block=block, width=width, variant=variant, num_classes=num_classes,
                   input_shape=input_shape, include_top=include_top, pooling=pooling,
                   drop_path_rate=drop_path_rate, classifier_activation=classifier_activation)
    if weights is not None:
        from keras_resnet import pretrained

        pretrained.load_weights(model, weights)
    return model


def _graph(depth, blocks, block, width, variant, num_classes, input_shape, include_top, pooling,
           drop_path_rate, classifier_activation):
    """``(inputs, outputs, name)`` of the network `build` describes."""
    block, blocks = resolve_depth(depth, blocks, block)
    widths = STAGE_WIDTHS[len(blocks)]
    input_shape = _check_input_shape(input_shape)
    h, w = input_shape[:2]
    small = len(blocks) == 3 or min(s or SMALL_INPUT for s in (h, w)) < SMALL_INPUT
    total_stride = (1 if small else 4) * 2 ** (len(blocks) - 1)
    _check_build_args(width, variant, num_classes, input_shape, include_top, pooling, total_stride,
                      drop_path_rate, classifier_activation)
    preact, residual = variant == "preact", variant != "plain"
    block_cls = BLOCKS[block]

    inputs = keras.Input(shape=input_shape, name="input")
    stem_width = max(1, round(widths[0] * width))
    if small:
        x = conv(stem_width, 3, 1, "stem_conv")(inputs)
    else:
        x = conv(stem_width, 7, 2, "stem_conv")(StridedPad(7, name="stem_pad")(inputs))
    if not preact:  # pre-activation: the first block normalises its input itself
        x = layers.Activation("relu", name="stem_relu")(batch_norm("stem_bn")(x))
    if not small:
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(StridedPad(3, name="stem_pool_pad")(x))

    total, index = sum(blocks), 0
    for s, (count, base) in enumerate(zip(blocks, widths), start=1):
        for b in range(1, count + 1):
            x = block_cls(
                max(1, round(base * width)),
                strides=2 if (b == 1 and s > 1) else 1,
                preact=preact,
                residual=residual,
                drop_path_rate=drop_path_rate * index / max(total - 1, 1),
                name=f"stage{s}_block{b}",
            )(x)
            index += 1
    if preact:
        x = layers.Activation("relu", name="post_relu")(batch_norm("post_bn")(x))

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

    d = block_depth(block, blocks)
    prefix = {"v1.5": "resnet", "preact": "preresnet", "plain": "plain"}[variant]
    suffix = "" if width == 1 else f"_w{width:g}"
    return inputs, x, f"{prefix}{d}{suffix}"


@keras.saving.register_keras_serializable(package="keras_resnet")
class ResNet(keras.Model):
    """The functional model that `build` returns; its config is the `build` arguments.

    A `.keras` file of it records depth, blocks, block, width and the rest, and loads (with
    ``safe_mode=True`` and no ``custom_objects``) by building the same network again.
    """

    def __init__(self, depth=None, *, blocks=None, block=None, width=1.0, variant="v1.5", num_classes=1000,
                 input_shape=(224, 224, 3), include_top=True, pooling=None, drop_path_rate=0.0,
                 classifier_activation="softmax", name=None, trainable=True, dtype=None, **kwargs):
        block, blocks = resolve_depth(depth, blocks, block)
        # The dtype policy the layers were made under (mixed precision): a loaded file gets it back.
        dtype = dtype or keras.mixed_precision.dtype_policy().name
        arguments = dict(depth=block_depth(block, blocks), blocks=blocks, block=block, width=width,
                         variant=variant, num_classes=num_classes, input_shape=_check_input_shape(input_shape),
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

    Returns a dict with ``depth``, ``blocks``, ``block``, ``width``, ``variant``, ``num_classes``,
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
