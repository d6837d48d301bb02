"""The depth table, the named architectures and the rules that resolve a depth or a name to stages.

The ImageNet depths are one table; the CIFAR family is a rule (6n+2 basic, 9n+2 bottleneck blocks); a
name (``"resnet50d"``) is a row of `ARCHITECTURES`, as timm registers it. `keras_resnet.models.resnet`
builds what these describe.
"""

import difflib

from keras_resnet.models.blocks import BottleneckBlock, ResidualBlock
from keras_resnet.utils import checks

# depth -> (block, blocks per stage), ImageNet family: 7x7 stem, four stages of 64-128-256-512 channels.
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# The named architectures, as timm registers them: depth (in the table above), stem ("deep": three 3x3
# convolutions, ResNet-C), shortcut ("avg_down": average-pool then a 1x1 stride-1 projection,
# ResNet-D; He et al. 2019), attention ("se": squeeze-and-excitation, Hu et al. 2018), and the
# bottleneck's groups and width per group (ResNeXt, Xie et al. 2017; wide ResNets, Zagoruyko and
# Komodakis 2016, as torchvision's wide_resnet50_2). The c and d forms have a stem of 32-32-64. The
# variant is "v1.5" (post-activation, torchvision's layout) or "preact": timm's ResNetV2 (He et al. 2016,
# pre-activation, the stride on the 3x3, a final BatchNorm-ReLU), whose stem is the 7x7 convolution alone.
ARCHITECTURES = {
    # name:              (depth, stem,      shortcut,     attention, groups, width_per_group, variant)
    "resnet18":          (18,    "default", "projection", None,      1,      64,             "v1.5"),
    "resnet34":          (34,    "default", "projection", None,      1,      64,             "v1.5"),
    "resnet50":          (50,    "default", "projection", None,      1,      64,             "v1.5"),
    "resnet101":         (101,   "default", "projection", None,      1,      64,             "v1.5"),
    "resnet152":         (152,   "default", "projection", None,      1,      64,             "v1.5"),
    "resnet18c":         (18,    "deep",    "projection", None,      1,      64,             "v1.5"),
    "resnet34c":         (34,    "deep",    "projection", None,      1,      64,             "v1.5"),
    "resnet50c":         (50,    "deep",    "projection", None,      1,      64,             "v1.5"),
    "resnet101c":        (101,   "deep",    "projection", None,      1,      64,             "v1.5"),
    "resnet152c":        (152,   "deep",    "projection", None,      1,      64,             "v1.5"),
    "resnet18d":         (18,    "deep",    "avg_down",   None,      1,      64,             "v1.5"),
    "resnet34d":         (34,    "deep",    "avg_down",   None,      1,      64,             "v1.5"),
    "resnet50d":         (50,    "deep",    "avg_down",   None,      1,      64,             "v1.5"),
    "resnet101d":        (101,   "deep",    "avg_down",   None,      1,      64,             "v1.5"),
    "resnet152d":        (152,   "deep",    "avg_down",   None,      1,      64,             "v1.5"),
    "seresnet18":        (18,    "default", "projection", "se",      1,      64,             "v1.5"),
    "seresnet34":        (34,    "default", "projection", "se",      1,      64,             "v1.5"),
    "seresnet50":        (50,    "default", "projection", "se",      1,      64,             "v1.5"),
    "seresnet101":       (101,   "default", "projection", "se",      1,      64,             "v1.5"),
    "seresnet152":       (152,   "default", "projection", "se",      1,      64,             "v1.5"),
    "resnext50_32x4d":   (50,    "default", "projection", None,      32,     4,              "v1.5"),
    "resnext101_32x8d":  (101,   "default", "projection", None,      32,     8,              "v1.5"),
    "resnext101_64x4d":  (101,   "default", "projection", None,      64,     4,              "v1.5"),
    "seresnext50_32x4d": (50,    "default", "projection", "se",      32,     4,              "v1.5"),
    "wide_resnet50_2":   (50,    "default", "projection", None,      1,      128,            "v1.5"),
    "wide_resnet101_2":  (101,   "default", "projection", None,      1,      128,            "v1.5"),
    "resnetv2_18":       (18,    "default", "projection", None,      1,      64,             "preact"),
    "resnetv2_34":       (34,    "default", "projection", None,      1,      64,             "preact"),
    "resnetv2_50":       (50,    "default", "projection", None,      1,      64,             "preact"),
    "resnetv2_101":      (101,   "default", "projection", None,      1,      64,             "preact"),
}
ARCHITECTURE_FIELDS = ("depth", "stem", "shortcut", "attention", "groups", "width_per_group", "variant")
STEMS = ("default", "deep")
SHORTCUTS = ("projection", "avg_down")
ATTENTIONS = (None, "se")
# The CIFAR family is a rule, not a table: depth 6n+2 is three stages of n basic blocks of 16-32-64
# channels (He et al. 2015, section 4.2); depth 9n+2 (164, 1001) is three stages of n bottlenecks
# (He et al. 2016). ImageNet depths take precedence (50 and 152 are also 6n+2).
BLOCKS = {"basic": ResidualBlock, "bottleneck": BottleneckBlock}
STAGE_WIDTHS = {4: (64, 128, 256, 512), 3: (16, 32, 64)}
VARIANTS = ("v1.5", "preact", "plain")
DEFAULT_DEPTH = 34


def supported_depths_message():
    return (
        f"Supported depths: the ImageNet family {sorted(IMAGENET_DEPTHS)}, the CIFAR family 6n+2 "
        "(20, 32, 44, 56, 110, 1202, ...) with basic blocks, or 9n+2 (164, 1001, ...) with bottlenecks; "
        "or pass `blocks=` per stage, e.g. blocks=(2, 3, 4, 2) for four stages or (3, 3, 3) for three."
    )


def list_models():
    """The names `build` takes in place of a depth, sorted.

    >>> [name for name in list_models() if name.startswith("resnet50")]
    ['resnet50', 'resnet50c', 'resnet50d']
    """
    return sorted(ARCHITECTURES)


def resolve_architecture(depth=None, **options):
    """``(name or None, depth, options)``: a name in place of `depth` replaced by its table row.

    `options` are build()'s stem, shortcut, attention, groups, width_per_group and variant (None: not
    given); one given with a name must agree with the name's row.
    """
    if not isinstance(depth, str):
        return None, depth, options
    if depth not in ARCHITECTURES:
        close = difflib.get_close_matches(depth, ARCHITECTURES, n=3)
        raise ValueError(f"`depth` must be an integer or a name from keras_resnet.list_models(). Received: "
                         f"depth={depth!r}" + (f"; did you mean {', '.join(close)}?" if close else ". ")
                         + f" Names: {', '.join(list_models())}.")
    row = dict(zip(ARCHITECTURE_FIELDS, ARCHITECTURES[depth]))
    for key, value in options.items():
        if value is not None and value != row[key]:
            raise ValueError(f"`{key}`={value!r} disagrees with {depth!r}, which has {key}={row[key]!r}. "
                             f"Pass the name alone, or a depth with the options you want.")
    return depth, row.pop("depth"), row


def architecture_name(depth, options):
    """The table's name of an ImageNet depth with these options, or None."""
    row = (depth, *(options[k] for k in ARCHITECTURE_FIELDS[1:]))
    return next((name for name, r in ARCHITECTURES.items() if r == row), None)


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
