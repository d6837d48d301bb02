"""torchvision's and timm's tensor names -> our variables, and the architecture read from a checkpoint.

torchvision's ResNets, and timm's ResNets that share their layout, name their tensors ``conv1``
(``conv1.0``/``.1``/``.3``/``.4``/``.6`` for the deep stem), ``bn1``, ``layer{s}.{b}.conv{k}/bn{k}``,
``layer{s}.{b}.se.fc1/fc2`` (squeeze-and-excitation), ``layer{s}.0.downsample.0/1`` (``.1/.2`` after
the average pool of the ResNet-D shortcut) and ``fc``; they load into ``variant="v1.5"`` (the same
padding, BatchNorm epsilon and stride placement) built with the same stem, shortcut, attention and
groups, which are read from the tensors.
timm's ResNetV2 (pre-activation, ``resnetv2_50`` ...) names them ``stem.conv``,
``stages.{s}.blocks.{b}.norm{k}/conv{k}``, ``stages.{s}.blocks.0.downsample.conv``, ``norm`` (the final
BatchNorm) and ``head.fc`` (a 1x1 convolution); it loads into ``variant="preact"``, whose stem
max-pool pads with -inf as timm's does.
`read_architecture` reads the architecture from the tensors, naming a variant it does not cover. The
checks against a model and the assignment are in `keras_resnet.weights.assignment`; the sources (files,
Hub names) in `keras_resnet.weights.pretrained`.
"""

import re

import numpy as np

from keras_resnet import models

TORCHVISION = "torchvision"
RESNETV2 = "timm ResNetV2"
# torchvision's per-channel statistics, in [0, 1] scale as data.normalize takes them (it computes
# (x / 255 - mean) / std on uint8 images).
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SUPPORTED = (
    "torchvision's and timm's ResNets in their shared layout, into build(name) with variant='v1.5': "
    "resnet18 ... resnet152, the c and d forms (deep stem, average-pool shortcut: resnet50d ...), "
    "seresnet*, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, seresnext50_32x4d, wide_resnet50_2, "
    "wide_resnet101_2 (see keras_resnet.list_models()), and other stage lists of the same blocks, e.g. "
    "timm resnet26; timm's ResNetV2 with BatchNorm and the 7x7 stem into build(name) with "
    "variant='preact': resnetv2_18, resnetv2_34, resnetv2_50, resnetv2_101 (and resnetv2_152)"
)

# Our layer -> torchvision's (and timm's) module; blocks are stage{s}_block{b} -> layer{s}.{b - 1}.
# timm's deep stem is a Sequential of conv, BN, ReLU, conv, BN, ReLU, conv: conv1.0 ... conv1.6.
_MODULES = {"stem_conv": "conv1", "stem_conv1": "conv1.0", "stem_bn1": "conv1.1", "stem_conv2": "conv1.3",
            "stem_bn2": "conv1.4", "stem_conv3": "conv1.6", "stem_bn": "bn1", "logits": "fc",
            "se/fc1": "se.fc1", "se/fc2": "se.fc2"}
# The shortcut: downsample = (conv, BN), or (AvgPool2d, conv, BN) with the average-pool shortcut.
_SHORTCUT = {False: {"shortcut/conv": "downsample.0", "shortcut/bn": "downsample.1"},
             True: {"shortcut/conv": "downsample.1", "shortcut/bn": "downsample.2"}}
_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.")
# timm's ResNetV2: stage{s}_block{b} -> stages.{s - 1}.blocks.{b - 1}; bn{k} -> norm{k}; no BN on the shortcut.
_V2_MODULES = {"stem_conv": "stem.conv", "post_bn": "norm", "logits": "head.fc"}
_V2_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.")
# Keras variable -> PyTorch parameter or buffer.
PARAMS = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
          "moving_mean": "running_mean", "moving_variance": "running_var"}
HEAD_KEYS = {TORCHVISION: ("fc.weight", "fc.bias"), RESNETV2: ("head.fc.weight", "head.fc.bias")}


def checkpoint_key(path, avg_down=False, preact=False):
    """The torchvision/timm tensor that holds a model variable, or None where there is none.

    `avg_down`: the model's shortcut is shortcut="avg_down" (its layers sit one place further on).
    `preact`: the model is variant="preact", whose tensors take timm ResNetV2's names.

    >>> checkpoint_key("stage2_block1/shortcut/bn/gamma")
    'layer2.0.downsample.1.weight'
    >>> checkpoint_key("stage2_block1/shortcut/bn/gamma", avg_down=True)
    'layer2.0.downsample.2.weight'
    >>> checkpoint_key("stage2_block1/bn1/moving_variance", preact=True)
    'stages.1.blocks.0.norm1.running_var'
    """
    *layer, param = path.split("/")
    if param not in PARAMS or not layer:
        return None
    block = re.fullmatch(r"stage(\d+)_block(\d+)", layer[0])
    if preact:
        return _resnetv2_key(layer, block, PARAMS[param])
    if block is None:
        module = _MODULES.get("/".join(layer))
    else:
        inner = "/".join(layer[1:])
        sub = (inner if re.fullmatch(r"(conv|bn)\d", inner)
               else _MODULES.get(inner) or _SHORTCUT[bool(avg_down)].get(inner))
        module = sub and f"layer{block[1]}.{int(block[2]) - 1}.{sub}"
    return module and f"{module}.{PARAMS[param]}"


def _resnetv2_key(layer, block, param):
    """timm ResNetV2's tensor for a variable of a pre-activation model (`checkpoint_key`'s parts)."""
    if block is None:
        module = _V2_MODULES.get("/".join(layer))
    else:
        inner = "/".join(layer[1:])
        sub = re.fullmatch(r"(conv|bn)(\d)", inner)
        sub = (f"{'norm' if sub[1] == 'bn' else 'conv'}{sub[2]}" if sub
               else "downsample.conv" if inner == "shortcut/conv" else None)
        module = sub and f"stages.{int(block[1]) - 1}.blocks.{int(block[2]) - 1}.{sub}"
    return module and f"{module}.{param}"


def key_function(config):
    """`checkpoint_key` for a model of this `config_of` (its variant and shortcut decide the names)."""
    avg_down, preact = config.get("shortcut") == "avg_down", config.get("variant") == "preact"
    return lambda path: checkpoint_key(path, avg_down, preact)


def layout_of(config):
    """The checkpoint layout of a model of this `config_of`: torchvision's, or timm ResNetV2's."""
    return RESNETV2 if config.get("variant") == "preact" else TORCHVISION


def in_file_layout(shape):
    """A Keras variable shape as PyTorch stores it: kernels (h, w, in, out) -> (out, in, h, w)."""
    shape = tuple(shape)
    if len(shape) == 4:
        h, w, i, o = shape
        return (o, i, h, w)
    return shape[::-1]


def to_keras(array):
    return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T


def to_state_dict(model):
    """A model's weights as NumPy arrays under torchvision's names and shapes (timm ResNetV2's for
    variant="preact", its classifier a 1x1 convolution).

    The inverse of loading: ``safetensors.numpy.save_file(to_state_dict(model), "m.safetensors")``
    writes a file that `keras_resnet.weights.pretrained.load_weights`, torchvision and timm read back.
    """
    config = models.config_of(model)
    if config["variant"] == "plain":
        raise ValueError("torchvision's and timm's layouts hold variant='v1.5' and variant='preact' models. "
                         "Received: a model of variant='plain'")
    state, key_of = {}, key_function(config)
    for var in model.weights:
        key, value = key_of(var.path), np.asarray(var.numpy())
        if key is not None:
            state[key] = np.ascontiguousarray(value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T)
    if layout_of(config) == RESNETV2 and "head.fc.weight" in state:
        state["head.fc.weight"] = state["head.fc.weight"][:, :, None, None]
    return state


# ------------------------------------------------------------------ the checkpoint's architecture


def _unsupported(shapes):
    """``(what, tensor)`` naming a ResNet variant that the layout does not cover, or None."""
    for pattern, what in (
        (r"\.(attn|aa)\.", "a ResNet with attention or anti-aliasing modules other than squeeze-and-"
                           "excitation (resnetaa50, skresnet ...)"),
        (r"\.se\.(?!fc[12]\.)", "a ResNet with an attention module other than squeeze-and-excitation "
                                "(ecaresnet50d, gcresnet50t ...)"),
    ):
        key = next((k for k in shapes if re.search(pattern, k)), None)
        if key is not None:
            return what, key
    if "conv1.weight" not in shapes and "conv1.0.weight" not in shapes:
        return "not a ResNet in torchvision's layout (it has no conv1.weight)", None
    if "conv1.0.weight" in shapes:
        inner, mid, out = (shapes.get(f"conv1.{k}.weight") for k in (0, 3, 6))
        if mid is None or out is None or inner[2:] != (3, 3) or inner[0] != mid[0] or out[0] != 2 * mid[0]:
            return ("a ResNet with another deep stem than three 3x3 convolutions of w, w and 2w channels "
                    "(a tiered stem: timm resnet26t, resnet50t ...)", "conv1.0.weight")
    elif shapes["conv1.weight"][2:] != (7, 7):
        return "a ResNet without the 7x7 ImageNet stem", "conv1.weight"
    if "layer1.0.bn1.weight" in shapes and "layer1.0.bn1.running_var" not in shapes:
        return ("a ResNet without BatchNorm statistics (GroupNorm or frozen-norm variants)",
                "layer1.0.bn1.weight")
    return None


def _family(shapes, block):
    """The stem, shortcut, attention, groups and width per group that the tensors show."""
    deep = "conv1.0.weight" in shapes
    family = {"stem": "deep" if deep else "default",
              "stem_width": shapes["conv1.6.weight" if deep else "conv1.weight"][0],
              "shortcut": "avg_down" if any(re.search(r"\.downsample\.2\.weight$", k) for k in shapes)
              else "projection",
              "attention": "se" if any(k.endswith(".se.fc1.weight") for k in shapes) else None,
              **_groups(shapes, block, "layer1.0."), "variant": "v1.5"}
    return family


def _groups(shapes, block, first):
    """``groups`` and ``width_per_group`` of the bottleneck's 3x3 (`first`: the first block's prefix)."""
    if block != "bottleneck":
        return {"groups": 1, "width_per_group": 64}
    c2, c3 = shapes[f"{first}conv2.weight"], shapes[f"{first}conv3.weight"]
    inner, planes = c2[0], c3[0] // 4
    groups = inner // c2[1]
    return {"groups": groups, "width_per_group": inner // groups * 64 // planes}


def file_layout(names):
    """The layout of a checkpoint's tensor names: timm ResNetV2's (stem., stages.) or torchvision's."""
    return RESNETV2 if any(k.startswith(("stem.", "stages.")) for k in names) else TORCHVISION


def _unsupported_resnetv2(shapes):
    """``(what, tensor)`` naming a timm ResNetV2 that build() does not make, or None."""
    if "stem.conv1.weight" in shapes:
        return ("a timm ResNetV2 with a deep or tiered stem (resnetv2_18d, resnetv2_50d, resnetv2_50t ...), "
                "whose average-pool shortcut leaves no tensor to read it from", "stem.conv1.weight")
    if "stem.conv.weight" not in shapes:
        return "a timm ResNetV2 without the stem convolution stem.conv", None
    if shapes["stem.conv.weight"][2:] != (7, 7):
        return "a timm ResNetV2 without the 7x7 stem", "stem.conv.weight"
    if "stem.norm.weight" in shapes:
        return ("a timm ResNetV2 without pre-activation (a hybrid ViT backbone: a BatchNorm in its stem, "
                "none at the end)", "stem.norm.weight")
    if "norm.running_var" not in shapes or "stages.0.blocks.0.norm1.running_var" not in shapes:
        key = next((k for k in ("stages.0.blocks.0.norm1.weight", "norm.weight") if k in shapes), None)
        return ("a timm ResNetV2 without BatchNorm statistics: the BiT models (resnetv2_50x1_bit ...), with "
                "weight-standardised convolutions and GroupNorm, or another norm (resnetv2_50d_gn, "
                "resnetv2_50d_evos ...)", key)
    return None


def _refuse(found, shapes):
    """Raises the error for an unsupported checkpoint `found` (what it is, the tensor that shows it)."""
    if found is not None:
        what, key = found
        shown = f" ({key}: shape {shapes[key]})" if key else f" (first tensors: {sorted(shapes)[:4]})"
        raise ValueError(f"The checkpoint is {what}{shown}; it is not supported. Supported: {SUPPORTED}.")


def _stage_blocks(shapes, pattern, first):
    """Blocks per stage, from the tensor names that `pattern` (stage, block) matches; four stages."""
    last = {}
    for key in shapes:
        match = pattern.match(key)
        if match:
            last[int(match[1])] = max(last.get(int(match[1]), 0), int(match[2]) + 1)
    blocks = tuple(last[s] for s in sorted(last))
    if len(blocks) != 4:
        raise ValueError(f"The checkpoint has {len(blocks)} stages ({first} ...); ImageNet ResNets have 4. "
                         f"Supported: {SUPPORTED}.")
    return blocks


def _read_resnetv2(shapes):
    """`read_architecture` of timm's ResNetV2 layout (stem.conv, stages.{s}.blocks.{b}, norm, head.fc)."""
    found = _unsupported_resnetv2(shapes)
    _refuse(found, shapes)
    blocks = _stage_blocks(shapes, _V2_BLOCK, "stages.0")
    block = "bottleneck" if "stages.0.blocks.0.conv3.weight" in shapes else "basic"
    stem = shapes["stem.conv.weight"]
    family = {"stem": "default", "stem_width": stem[0], "shortcut": "projection", "attention": None,
              **_groups(shapes, block, "stages.0.blocks.0."), "variant": "preact"}
    depth = models.block_depth(block, blocks)
    standard = models.IMAGENET_DEPTHS.get(depth) == (block, blocks)
    named = models.architecture_name(depth, family) if standard and family["stem_width"] == 64 else None
    head = shapes.get("head.fc.weight")

    def show(key):
        return f"{key} {shapes[key]}" if key in shapes else f"{key} absent"

    grouped = show("stages.0.blocks.0.conv2.weight")
    evidence = {"stem": show("stem.conv.weight"), "stem_width": show("stem.conv.weight"),
                "shortcut": show("stages.1.blocks.0.downsample.conv.weight"),
                "attention": "no attention module", "groups": grouped, "width_per_group": grouped}
    return {"block": block, "blocks": blocks, "num_classes": head[0] if head else None, "in_channels": stem[1],
            **family, "layout": RESNETV2, "evidence": evidence,
            "name": named or f"a pre-activation ResNet of {block} blocks {blocks}"}


def read_architecture(shapes):
    """The architecture a checkpoint's tensors describe, from ``{tensor name: shape}``.

    Returns ``{"block", "blocks", "num_classes", "in_channels", "stem", "stem_width", "shortcut",
    "attention", "groups", "width_per_group", "variant", "layout", "evidence", "name"}``
    (``evidence``: per option, the tensor that shows it, with its shape; ``layout``: "torchvision",
    or "timm ResNetV2" for timm's pre-activation ResNets, variant "preact"); raises `ValueError`
    naming an unsupported variant and the tensor that shows it.
    """
    shapes = {k: tuple(v) for k, v in shapes.items()}
    if file_layout(shapes) == RESNETV2:
        return _read_resnetv2(shapes)
    found = _unsupported(shapes)
    _refuse(found, shapes)
    blocks = _stage_blocks(shapes, _BLOCK, "layer1")
    block = "bottleneck" if "layer1.0.conv3.weight" in shapes else "basic"
    family = _family(shapes, block)
    depth = models.block_depth(block, blocks)
    standard = models.IMAGENET_DEPTHS.get(depth) == (block, blocks)
    named = models.architecture_name(depth, family) if standard and family["stem_width"] == 64 else None
    head = shapes.get("fc.weight")
    stem = shapes["conv1.0.weight" if family["stem"] == "deep" else "conv1.weight"]
    return {"block": block, "blocks": blocks, "num_classes": head[0] if head else None,
            "in_channels": stem[1], **family, "layout": TORCHVISION, "evidence": _evidence(shapes, family),
            "name": named or f"a ResNet of {block} blocks {blocks}"}


def _evidence(shapes, family):
    """Per option, the tensor (and its shape) that shows the checkpoint's choice."""
    def show(key):
        return f"{key} {shapes[key]}" if key in shapes else f"{key} absent"

    se = next((k for k in shapes if k.endswith(".se.fc1.weight")), "layer1.0.se.fc1.weight")
    down = next((k for k in shapes if re.search(r"\.downsample\.[12]\.weight$", k) and len(shapes[k]) == 4),
                "layer2.0.downsample.0.weight")
    grouped = show("layer1.0.conv2.weight")
    return {"stem": show("conv1.0.weight"), "stem_width": show("conv1.6.weight" if family["stem"] == "deep"
                                                               else "conv1.weight"),
            "shortcut": show(down), "attention": show(se), "groups": grouped, "width_per_group": grouped}
