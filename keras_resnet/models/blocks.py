"""Residual blocks: the basic and the bottleneck block, each in its post- and pre-activation form.

A residual block computes ``y = F(x) + shortcut(x)`` (He et al. 2015). ``shortcut`` is the identity when
``x`` and ``F(x)`` have the same shape and a `ProjectionShortcut` (a strided 1x1 convolution) otherwise.
Each ordering is its own class:

* post-activation, ResNet v1.5 (`ResidualBlock`, `BottleneckBlock`): ``relu(F(x) + shortcut(x))``, F
  ending with BatchNorm, the stride on the 3x3 convolution (as torchvision and NVIDIA's reference
  ResNet-50);
* pre-activation (`PreActResidualBlock`, `PreActBottleneckBlock`, as timm's ``PreActBasic`` and
  ``PreActBottleneck``; He et al. 2016, "Identity Mappings in Deep Residual Networks"): BatchNorm-ReLU
  before each convolution, ``F(x) + shortcut(x)`` with no activation after the addition.

A block writes F once, as ``branch``: its sub-layers in the order they run. ``call`` runs that list;
build() and macs() walk the same one. ``ResidualBlock(..., preact=True)`` and ``BottleneckBlock(...,
preact=True)``, the pre-activation blocks of 0.1 and of ``build(variant="preact")``, run the figure of the
pre-activation class under their own class name, which saved models file their weights by (`PREACT_FORMS`).

Only `keras` and `keras.ops` are used, so the blocks run on the TensorFlow, JAX and PyTorch backends.
"""

import keras
from keras import layers, ops

from keras_resnet.models.layers import (
    DropPath,
    ProjectionShortcut,
    SqueezeExcite,
    StridedPad,
    batch_norm,
    build_chain,
    conv,
    conv_macs,
)
from keras_resnet.utils import checks

# 0.1's `keras_resnet.layers` is this module now (keras_resnet.MOVED): the rest of its names.
from keras_resnet.models.layers import BN_EPSILON, BN_MOMENTUM, CONV_INIT, se_channels  # noqa: F401


class Block(layers.Layer):
    """What every residual block shares: the options, the shortcut, and F run, built and counted in order.

    A block class lists F once, in ``branch``: the names of its sub-layers in the order they run
    (``"conv1"``, ``"bn1"``; one that is None, such as ``"se"`` without attention or the pad of an
    unstrided block, is skipped) and ``"relu"``. ``call`` applies the list (`run`); build() builds the
    same layers on the shapes they receive, and `macs` counts them. The pre-activation blocks list the
    BatchNorm-ReLU of the input, which the projection shortcut shares, in ``preactivation``.

    This class is the post-activation form: ``call`` is ``relu(F(x) + shortcut(x))``; with ``preact=True``
    it runs the pre-activation form instead (`PREACT_FORMS`). ``filters`` is the stage's width ("planes" in
    torchvision); the block outputs ``filters * expansion`` channels.
    """

    expansion = 1
    kernel_sizes = ()  # the convolutions of F, in order (what block_depth counts)
    preact = False
    preactivation = ()  # pre-activation blocks: the input's BN-ReLU, which F and the projection share
    branch = ()  # F, in the order it runs

    def __init__(self, filters, strides=1, use_projection=None, preact=False, residual=True,
                 zero_init_residual=True, drop_path_rate=0.0, kernel_regularizer=None, groups=1,
                 width_per_group=64, attention=None, avg_down=False, **kwargs):
        super().__init__(**kwargs)
        checks.check_int("filters", filters, 1)
        checks.check_choice("strides", strides, (1, 2))
        checks.check_number("drop_path_rate", drop_path_rate, 0.0, 1.0, high_open=True)
        checks.check_choice("use_projection", use_projection, (None, True, False))
        checks.check_int("groups", groups, 1)
        checks.check_int("width_per_group", width_per_group, 1)
        checks.check_choice("attention", attention, (None, "se"))
        checks.check_bool("avg_down", avg_down)
        self.filters = filters
        self.strides = strides
        self.use_projection = use_projection
        self.residual = residual
        self.zero_init_residual = zero_init_residual
        self.drop_path_rate = drop_path_rate
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.groups = groups
        self.width_per_group = width_per_group
        self.attention = attention
        self.avg_down = avg_down
        if preact and not self.preact:  # ResidualBlock(..., preact=True): see PREACT_FORMS
            form = next(PREACT_FORMS[c] for c in type(self).__mro__ if c in PREACT_FORMS)
            self.preact, self.preactivation, self.branch = True, form.preactivation, form.branch
        # The last BatchNorm of F starts at zero so that each block starts as the identity (Goyal et al.
        # 2017). Only for residual post-activation blocks: a plain block would output zeros.
        self._zero_last = zero_init_residual and residual and not self.preact
        self.shortcut = None  # decided in build(), once the input channel count is known
        # Sub-layers share this layer's dtype policy, so a mixed-precision model saved to .keras
        # loads and runs the same in a process whose global policy is float32.
        self.drop_path = (DropPath(drop_path_rate, dtype=self.dtype_policy, name="drop_path")
                          if drop_path_rate > 0 else None)
        self._create(filters, strides)

    def _create(self, filters, strides):
        """Creates the convolutions, BatchNorms and the SE gate of F (``conv1``, ``bn1``, ...)."""
        raise NotImplementedError

    def _conv(self, filters, kernel_size, index, strides=1, groups=1):
        """``conv{index}``: a bias-free convolution; ``(pad, conv)``, the pad only when strided."""
        c = conv(filters, kernel_size, strides, f"conv{index}", self.kernel_regularizer, self.dtype_policy,
                 groups)
        pad = StridedPad(kernel_size, dtype=self.dtype_policy, name=f"pad{index}") if strides > 1 else None
        return pad, c

    def _bn(self, index, last=False):
        return batch_norm(f"bn{index}", last and self._zero_last, self.dtype_policy)

    def _se(self, channels):
        return SqueezeExcite(channels, dtype=self.dtype_policy, name="se") if self.attention == "se" else None

    def run(self, steps, x, training=None):
        """Applies `steps` to `x` in order: the sub-layers they name (those that are None skipped), "relu"."""
        for step in steps:
            if step == "relu":
                x = ops.relu(x)
            elif getattr(self, step) is not None:
                x = getattr(self, step)(x, training=training)
        return x

    def branch_layers(self):
        """The sub-layers of ``preactivation`` and ``branch``, in the order they run (absent ones left out)."""
        names = [step for step in self.preactivation + self.branch if step != "relu"]
        return [getattr(self, name) for name in names if getattr(self, name) is not None]

    def drop(self, y, training=None):
        """Stochastic depth on the residual branch (in training); `y` itself without a drop path."""
        return y if self.drop_path is None else self.drop_path(y, training=training)

    def call(self, x, training=None):
        """``relu(F(x) + shortcut(x))`` (He et al. 2015, Figure 2); a plain block: ``relu(F(x))``."""
        if self.preact:  # built with preact=True: the pre-activation figure (PREACT_FORMS)
            return PreActBlock.call(self, x, training)
        shortcut = x if self.shortcut is None else self.shortcut(x, training=training)
        y = self.run(self.branch, x, training)
        if not self.residual:
            return ops.relu(y)
        return ops.relu(self.drop(y, training) + shortcut)

    def _needs_projection(self, in_channels):
        mismatch = self.strides != 1 or in_channels != self.filters * self.expansion
        if self.use_projection is False and mismatch and self.residual:
            raise ValueError(
                f"`use_projection=False` needs F(x) and x of the same shape, but this block maps "
                f"{in_channels} channels to {self.filters * self.expansion} with strides={self.strides}. "
                "Use use_projection=None to project only when needed."
            )
        return self.residual and (self.use_projection or (self.use_projection is None and mismatch))

    def build(self, input_shape):
        shape = tuple(input_shape)
        if shape[-1] is None:
            raise ValueError(f"The channel dimension of the input must be known. Received: {shape}")
        out = build_chain(shape, *self.branch_layers())
        if self._needs_projection(shape[-1]):
            self.shortcut = ProjectionShortcut(
                self.filters * self.expansion, self.strides, self.preact, self.kernel_regularizer,
                avg_down=self.avg_down, dtype=self.dtype_policy, name="shortcut",
            )
            self.shortcut.build(shape)
        if self.drop_path is not None:
            self.drop_path.build(out)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        down = lambda d: None if d is None else (d + self.strides - 1) // self.strides  # noqa: E731
        return (n, down(h), down(w), self.filters * self.expansion)

    def macs(self, input_shape):
        """Multiply-accumulates of one image through this block (convolutions; BN folds away)."""
        shape = (1, *tuple(input_shape)[1:])
        total = conv_macs(shape, *self.branch_layers())
        if self.shortcut is not None:
            total += conv_macs(shape, self.shortcut.pool, self.shortcut.conv)
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "use_projection": self.use_projection,
            "preact": self.preact,
            "residual": self.residual,
            "zero_init_residual": self.zero_init_residual,
            "drop_path_rate": self.drop_path_rate,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "groups": self.groups,
            "width_per_group": self.width_per_group,
            "attention": self.attention,
            "avg_down": self.avg_down,
        }


class PreActBlock(Block):
    """What the pre-activation blocks share: ``F(x) + shortcut(x)``, BN-ReLU before each convolution.

    The input's BatchNorm-ReLU (``preactivation``) feeds F and the projection shortcut, which therefore
    has no BatchNorm of its own; the identity shortcut takes the input itself. Nothing follows the
    addition, and no BatchNorm starts at zero. The arguments are those of the post-activation blocks
    less ``preact`` and ``zero_init_residual``.
    """

    preact = True

    def __init__(self, filters, strides=1, use_projection=None, residual=True, drop_path_rate=0.0,
                 kernel_regularizer=None, groups=1, width_per_group=64, attention=None, avg_down=False,
                 **kwargs):
        if "preact" in kwargs:  # the class is the form
            raise TypeError(f"{type(self).__name__} is a pre-activation block and takes no `preact`. "
                            f"Received: preact={kwargs['preact']!r}")
        super().__init__(filters, strides, use_projection, residual=residual, zero_init_residual=False,
                         drop_path_rate=drop_path_rate, kernel_regularizer=kernel_regularizer, groups=groups,
                         width_per_group=width_per_group, attention=attention, avg_down=avg_down, **kwargs)

    def call(self, x, training=None):
        """``F(x) + shortcut(x)`` (He et al. 2016, Figure 1b); a plain block: ``F(x)``."""
        h = self.run(self.preactivation, x, training)
        shortcut = x if self.shortcut is None else self.shortcut(h, training=training)
        y = self.run(self.branch, h, training)
        if not self.residual:
            return y
        return self.drop(y, training) + shortcut

    def get_config(self):
        config = super().get_config()
        del config["preact"], config["zero_init_residual"]
        return config


class BasicLayers:
    """The layers of the basic block: two 3x3 convolutions of ``filters`` channels, the first strided."""

    expansion = 1
    kernel_sizes = (3, 3)

    def _create(self, filters, strides):
        if self.groups != 1 or self.width_per_group != 64:
            raise ValueError(f"The basic block has no grouped convolution: it takes groups=1 and "
                             f"width_per_group=64 (use the bottleneck block for ResNeXt and wide ResNets). "
                             f"Received: groups={self.groups!r}, width_per_group={self.width_per_group!r}")
        self.pad1, self.conv1 = self._conv(filters, 3, 1, strides)
        self.bn1 = self._bn(1)
        self.conv2 = self._conv(filters, 3, 2)[1]
        self.bn2 = self._bn(2, last=True)
        self.se = self._se(filters)


class BottleneckLayers:
    """The layers of the bottleneck block: 1x1 reduce, 3x3 (strided, grouped), 1x1 expand by 4."""

    expansion = 4
    kernel_sizes = (1, 3, 1)

    def _create(self, filters, strides):
        inner = int(filters * self.width_per_group / 64) * self.groups
        if inner < 1:
            raise ValueError(f"`width_per_group` is too small for filters={filters}: the inner width "
                             f"int(filters * width_per_group / 64) * groups is 0. Received: "
                             f"width_per_group={self.width_per_group!r}")
        self.conv1 = self._conv(inner, 1, 1)[1]
        self.bn1 = self._bn(1)
        self.pad2, self.conv2 = self._conv(inner, 3, 2, strides, self.groups)
        self.bn2 = self._bn(2)
        self.conv3 = self._conv(filters * 4, 1, 3)[1]
        self.bn3 = self._bn(3, last=True)
        self.se = self._se(filters * 4)


@keras.saving.register_keras_serializable(package="keras_resnet")
class ResidualBlock(BasicLayers, Block):
    """The basic residual block: ``relu(F(x) + shortcut(x))``, F two 3x3 convolutions with BatchNorm.

    The post-activation block of ResNet-18 and -34 and of the CIFAR ResNets; `PreActResidualBlock` is
    its pre-activation form.

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Figure 2);
    squeeze-and-excitation: Hu et al. 2018; the average-pool shortcut: He et al. 2019 (ResNet-D).

    Args:
        filters: output channels of both convolutions.
        strides: 1, or 2 to halve the spatial size (on the first convolution).
        use_projection: None (default) projects the shortcut with a 1x1 convolution exactly when the
            block changes spatial size or channels; True always projects; False never does (and raises
            if the shapes differ).
        preact: the pre-activation ordering (BN-ReLU-conv, no ReLU after the addition): the block
            computes what a `PreActResidualBlock` does, under this class's name, by which a saved model
            files its weights (what 0.1 and `build(variant="preact")` use).
        residual: False drops the shortcut, giving the "plain" block of the paper's comparison.
        zero_init_residual: start the last BatchNorm's gamma at zero, so the block starts as the
            identity (post-activation residual blocks only; ignored otherwise).
        drop_path_rate: stochastic-depth probability of dropping the residual branch in training.
        kernel_regularizer: optional regularizer for the convolution kernels.
        groups: convolution groups of the 3x3 (bottleneck only; 1 here, as torchvision).
        width_per_group: channels per group of the bottleneck's 3x3 per 64 of `filters` (bottleneck
            only; 64 here).
        attention: None, or "se" for a `SqueezeExcite` gate on F before the sum.
        avg_down: the projection shortcut average-pools, then convolves with stride 1 (ResNet-D).

    Example:

    >>> block = ResidualBlock(64, strides=2)          # D2L: Residual(64, use_1x1conv=True, strides=2)
    >>> tuple(block(keras.ops.ones((1, 32, 32, 32))).shape)
    (1, 16, 16, 64)
    """

    branch = ("pad1", "conv1", "bn1", "relu", "conv2", "bn2", "se")


@keras.saving.register_keras_serializable(package="keras_resnet")
class BottleneckBlock(BottleneckLayers, Block):
    """The bottleneck block: 1x1 reduce, 3x3 (with the stride, v1.5), 1x1 expand by 4.

    ``relu(F(x) + shortcut(x))`` as torchvision's ``Bottleneck``. ``filters`` is the stage's width
    ("planes"); the block outputs ``4 * filters`` channels. The inner width is
    ``int(filters * width_per_group / 64) * groups`` as in torchvision: ``filters`` with the defaults
    (groups=1, width_per_group=64), twice that for a wide ResNet (width_per_group=128), and ``groups``
    groups of ``width_per_group`` channels (per 64 of ``filters``) in the grouped 3x3 of a ResNeXt (Xie et
    al. 2017: resnext50_32x4d is groups=32, width_per_group=4). ``preact=True`` computes what a
    `PreActBottleneckBlock` does. Other arguments as `ResidualBlock`.

    Example:

    >>> block = BottleneckBlock(64)
    >>> tuple(block(keras.ops.ones((1, 56, 56, 64))).shape)
    (1, 56, 56, 256)
    >>> resnext = BottleneckBlock(64, groups=32, width_per_group=4, attention="se")
    >>> tuple(resnext(keras.ops.ones((1, 8, 8, 256))).shape)
    (1, 8, 8, 256)
    """

    branch = ("conv1", "bn1", "relu", "pad2", "conv2", "bn2", "relu", "conv3", "bn3", "se")


@keras.saving.register_keras_serializable(package="keras_resnet")
class PreActResidualBlock(BasicLayers, PreActBlock):
    """The pre-activation basic block: ``F(x) + shortcut(x)``, BN-ReLU before each 3x3 convolution.

    The block of timm's ResNetV2 (``PreActBasic``) and of the pre-activation CIFAR ResNets: the input's
    BatchNorm-ReLU feeds both F and the projection shortcut, and nothing follows the addition, so the
    identity path runs from block to block untouched. A network of them ends with a BatchNorm-ReLU.
    ``ResidualBlock(..., preact=True)`` computes the same under its own class name. The arguments are
    those of `ResidualBlock`, less ``preact`` and ``zero_init_residual``.

    Reference: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016.

    Example:

    >>> block = PreActResidualBlock(64, strides=2)
    >>> tuple(block(keras.ops.ones((1, 32, 32, 32))).shape)
    (1, 16, 16, 64)
    >>> ResidualBlock(64, preact=True).branch == block.branch   # the same figure, 0.1's class name
    True
    """

    preactivation = ("bn1", "relu")
    branch = ("pad1", "conv1", "bn2", "relu", "conv2", "se")


@keras.saving.register_keras_serializable(package="keras_resnet")
class PreActBottleneckBlock(BottleneckLayers, PreActBlock):
    """The pre-activation bottleneck: BN-ReLU, then 1x1 reduce, 3x3 (with the stride), 1x1 expand by 4.

    ``F(x) + shortcut(x)`` with BatchNorm-ReLU before each convolution, as timm's ``PreActBottleneck``
    (ResNetV2: ``resnetv2_50`` ...). Widths as `BottleneckBlock`; other arguments as
    `PreActResidualBlock`.

    Reference: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016.

    Example:

    >>> block = PreActBottleneckBlock(64)
    >>> tuple(block(keras.ops.ones((1, 56, 56, 64))).shape)
    (1, 56, 56, 256)
    """

    preactivation = ("bn1", "relu")
    branch = ("conv1", "bn2", "relu", "pad2", "conv2", "bn3", "relu", "conv3", "se")


# What ResidualBlock(..., preact=True) and BottleneckBlock(..., preact=True), 0.1's pre-activation blocks,
# run: the figure of the pre-activation class. They keep their own class, because Keras names the weights
# of a model's layers after their class (`layers/residual_block_1/conv1/...` in a .keras or .weights.h5
# file): as pre-activation classes they would no longer read what 0.1 wrote, nor write what it reads.
PREACT_FORMS = {ResidualBlock: PreActResidualBlock, BottleneckBlock: PreActBottleneckBlock}
