"""The depth table and `build()`: every ResNet is a stem, a list of stages of blocks, and a head."""

import keras
from keras import layers

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
    if block is not None and block not in BLOCKS:
        raise ValueError(f"`block` must be one of {sorted(BLOCKS)}. Received: block={block!r}")
    if blocks is not None:
        if not isinstance(blocks, (list, tuple)) or len(blocks) not in STAGE_WIDTHS or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in blocks
        ):
            raise ValueError(
                "`blocks` must list 3 (CIFAR layout) or 4 (ImageNet layout) positive block counts. "
                f"Received: blocks={blocks!r}"
            )
        blocks = tuple(blocks)
        block = block or "basic"
        if depth is not None and depth != block_depth(block, blocks):
            raise ValueError(
                f"`depth`={depth!r} disagrees with blocks={blocks} of {block} blocks, which make "
                f"depth {block_depth(block, blocks)}. Pass one or the other."
            )
        return block, blocks
    depth = DEFAULT_DEPTH if depth is None else depth
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
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
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels). "
                         f"Received: input_shape={input_shape!r}")
    return tuple(input_shape)


def _check_build_args(width, variant, num_classes, input_shape, include_top, pooling, total_stride,
                      drop_path_rate):
    if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) or not (
        0.0 <= drop_path_rate < 1.0
    ):
        raise ValueError(f"`drop_path_rate` must be a number in [0, 1). "
                         f"Received: drop_path_rate={drop_path_rate!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"`width` must be a number > 0 (a multiplier of the standard widths). "
                         f"Received: width={width!r}")
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    if include_top and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                        or num_classes < 1):
        raise ValueError(f"`num_classes` must be an integer >= 1. Received: num_classes={num_classes!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    h, w, c = input_shape
    if not isinstance(c, int) or c < 1:
        raise ValueError(f"`input_shape` needs at least one channel. Received: input_shape={input_shape!r}")
    for side in (h, w):
        if side is not None and side < total_stride:
            raise ValueError(
                f"`input_shape`={input_shape!r} is too small: this network downsamples by "
                f"{total_stride}, so each side must be at least {total_stride} pixels."
            )


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

    Returns:
        An uncompiled `keras.Model` named ``resnet{depth}`` (``plain{depth}``, ``preresnet{depth}``).

    Example:

    >>> model = build(depth=20, input_shape=(28, 28, 1), num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    block, blocks = resolve_depth(depth, blocks, block)
    widths = STAGE_WIDTHS[len(blocks)]
    input_shape = _check_input_shape(input_shape)
    h, w = input_shape[:2]
    small = len(blocks) == 3 or min(s or SMALL_INPUT for s in (h, w)) < SMALL_INPUT
    total_stride = (1 if small else 4) * 2 ** (len(blocks) - 1)
    _check_build_args(width, variant, num_classes, input_shape, include_top, pooling, total_stride,
                      drop_path_rate)
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
    return keras.Model(inputs, x, name=f"{prefix}{d}{suffix}")
