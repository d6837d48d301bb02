"""Residual layers: the basic and bottleneck blocks, their pre-activation forms, the shortcut, SE.

A residual block computes ``y = F(x) + shortcut(x)`` (He et al. 2015). ``shortcut`` is the identity
when ``x`` and ``F(x)`` have the same shape and a `ProjectionShortcut` (a strided 1x1 convolution)
otherwise. Two orderings are provided:

* post-activation, ResNet v1.5: ``relu(BN(conv(...)) + shortcut(x))``, the stride on the 3x3
  convolution (as torchvision and NVIDIA's reference ResNet-50);
* pre-activation (He et al. 2016, "Identity Mappings in Deep Residual Networks"):
  ``conv(relu(BN(...))) + shortcut(x)``, with no activation after the addition.

Only `keras` and `keras.ops` are used, so the layers run on the TensorFlow, JAX and PyTorch backends.
"""

import keras
from keras import layers, ops

from keras_resnet.utils import checks

# BatchNorm settings, defined once: PyTorch's defaults (momentum 0.1 there is 0.9 here), so that
# weights ported from torchvision give the same numbers.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
CONV_INIT = "he_normal"  # Kaiming normal, fan-in, as He et al. 2015


def batch_norm(name, zero_gamma=False, dtype=None):
    return layers.BatchNormalization(
        dtype=dtype,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )


def conv(filters, kernel_size, strides, name, kernel_regularizer=None, dtype=None, groups=1):
    """A bias-free convolution with PyTorch-style symmetric padding ``kernel_size // 2``.

    Keras's ``padding="same"`` pads a strided convolution only at the bottom and right; padding
    both sides explicitly gives the same output size and the same numbers as torchvision.
    """
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        use_bias=False,
        kernel_initializer=CONV_INIT,
        kernel_regularizer=kernel_regularizer,
        groups=groups,
        dtype=dtype,
        name=name,
    )


@keras.saving.register_keras_serializable(package="keras_resnet")
class StridedPad(layers.Layer):
    """Pads ``kernel_size // 2`` pixels on every side before a strided 'valid' convolution."""

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.pad = layers.ZeroPadding2D(kernel_size // 2, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.pad.build(input_shape)

    def call(self, x):
        return self.pad(x)

    def compute_output_shape(self, input_shape):
        return self.pad.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="keras_resnet")
class DropPath(layers.Layer):
    """Stochastic depth (Huang et al. 2016): drops a whole residual branch per sample in training.

    Kept branches are scaled by ``1 / (1 - rate)`` so that inference needs no rescaling.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        checks.check_number("rate", rate, 0.0, 1.0, high_open=True)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype) < keep
        return x * ops.cast(mask, x.dtype) / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_resnet")
class SqueezeExcite(layers.Layer):
    """Squeeze-and-excitation: channels reweighted by a gate computed from their global average.

    ``x * sigmoid(fc2(relu(fc1(mean(x)))))`` with 1x1 convolutions (with bias) as the two fully
    connected layers, as timm's ``SEModule``: the squeeze has ``channels / 16`` channels rounded to a
    multiple of 8 (`se_channels`).

    Reference: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.

    Args:
        channels: input (and output) channels.
        reduction: the squeeze is ``channels / reduction`` channels before rounding.

    Example:

    >>> se = SqueezeExcite(64)
    >>> tuple(se(keras.ops.ones((1, 4, 4, 64))).shape)
    (1, 4, 4, 64)
    """

    def __init__(self, channels, reduction=16, **kwargs):
        super().__init__(**kwargs)
        self.channels = checks.check_int("channels", channels, 1)
        self.reduction = checks.check_int("reduction", reduction, 1)
        squeeze = se_channels(channels, reduction)
        self.fc1 = layers.Conv2D(squeeze, 1, dtype=self.dtype_policy, name="fc1")
        self.fc2 = layers.Conv2D(channels, 1, dtype=self.dtype_policy, name="fc2")

    def build(self, input_shape):
        self.fc1.build((None, 1, 1, self.channels))
        self.fc2.build((None, 1, 1, self.fc1.filters))

    def call(self, x):
        s = ops.mean(x, axis=(1, 2), keepdims=True)  # squeeze
        s = self.fc2(ops.relu(self.fc1(s)))  # excite
        return x * ops.sigmoid(s)

    def compute_output_shape(self, input_shape):
        return input_shape

    def macs(self):
        return 2 * self.channels * self.fc1.filters

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "reduction": self.reduction}


def se_channels(channels, reduction=16, divisor=8):
    """timm's ``make_divisible(channels / reduction, 8, round_limit=0)``: the squeeze's width.

    >>> se_channels(256), se_channels(64), se_channels(2048)
    (16, 8, 128)
    """
    return max(divisor, int(channels / reduction + divisor / 2) // divisor * divisor)


@keras.saving.register_keras_serializable(package="keras_resnet")
class ProjectionShortcut(layers.Layer):
    """The projection shortcut: a 1x1 convolution with stride, then BatchNorm (option B of He et al.).

    Used when a block changes the spatial size or the channel count, so that ``x`` can be added to
    ``F(x)``. In the pre-activation form the input is already normalised, so there is no BatchNorm.
    With ``avg_down`` (ResNet-D, He et al. 2019, "Bag of Tricks"), a strided shortcut first averages
    2x2 windows (the last partial window of an odd side averages only the pixels it covers, as
    PyTorch's ``AvgPool2d(2, ceil_mode=True, count_include_pad=False)``), then convolves with stride 1,
    so that no input pixel is skipped.

    Args:
        filters: output channels.
        strides: 1 or 2, the block's stride.
        preact: pre-activation form (convolution only).
        avg_down: average-pool before a stride-1 convolution instead of a strided convolution.
    """

    def __init__(self, filters, strides=1, preact=False, kernel_regularizer=None, avg_down=False, **kwargs):
        super().__init__(**kwargs)
        checks.check_int("filters", filters, 1)
        checks.check_choice("strides", strides, (1, 2))
        checks.check_bool("avg_down", avg_down)
        self.filters = filters
        self.strides = strides
        self.preact = preact
        self.avg_down = avg_down
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        pooled = avg_down and strides > 1
        self.pool = (layers.AveragePooling2D(2, strides, padding="same", dtype=self.dtype_policy, name="pool")
                     if pooled else None)
        self.conv = layers.Conv2D(
            filters, 1, strides=1 if pooled else strides, use_bias=False, kernel_initializer=CONV_INIT,
            kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name="conv",
        )
        self.bn = None if preact else batch_norm("bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        build_chain(input_shape, self.pool, self.conv, self.bn)

    def call(self, x, training=None):
        if self.pool is not None:
            x = self.pool(x)
        x = self.conv(x)
        return x if self.bn is None else self.bn(x, training=training)

    def compute_output_shape(self, input_shape):
        if self.pool is not None:
            input_shape = self.pool.compute_output_shape(input_shape)
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "preact": self.preact,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "avg_down": self.avg_down,
        }


def build_chain(shape, *steps):
    """Builds each layer (None skipped) on the output shape of the one before; returns the last shape."""
    for layer in steps:
        if layer is not None:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
    return shape


def conv_macs(shape, *steps):
    """Multiply-accumulates of the convolutions among `steps` (in order) on one image of `shape`."""
    total = 0
    for layer in steps:
        if layer is None:
            continue
        out = layer.compute_output_shape(shape)
        if isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * kh * kw * shape[-1] // layer.groups * out[-1]
        elif isinstance(layer, SqueezeExcite):
            total += layer.macs()
        shape = out
    return total


class Block(layers.Layer):
    """What the basic and bottleneck blocks share: the options, the shortcut and the sum.

    Subclasses create their convolutions in ``_create``, list them in order in ``_branch()`` and write
    ``call`` step by step. ``filters`` is the stage's width ("planes" in torchvision); the block
    outputs ``filters * expansion`` channels.
    """

    expansion = 1
    kernel_sizes = ()  # the convolutions of F, in order (what block_depth counts)

    def __init__(
        self,
        filters,
        strides=1,
        use_projection=None,
        preact=False,
        residual=True,
        zero_init_residual=True,
        drop_path_rate=0.0,
        kernel_regularizer=None,
        groups=1,
        width_per_group=64,
        attention=None,
        avg_down=False,
        **kwargs,
    ):
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
        self.preact = preact
        self.residual = residual
        self.zero_init_residual = zero_init_residual
        self.drop_path_rate = drop_path_rate
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.groups = groups
        self.width_per_group = width_per_group
        self.attention = attention
        self.avg_down = avg_down
        # The last BatchNorm of F starts at zero so that each block starts as the identity (Goyal et al.
        # 2017). Only for residual post-activation blocks: a plain block would output zeros.
        self._zero_last = zero_init_residual and residual and not preact
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

    def _branch(self):
        """The layers of F in the order they run (None where absent), for build() and macs()."""
        raise NotImplementedError

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
        out = build_chain(shape, *self._branch())
        if self._needs_projection(shape[-1]):
            self.shortcut = ProjectionShortcut(
                self.filters * self.expansion, self.strides, self.preact, self.kernel_regularizer,
                avg_down=self.avg_down, dtype=self.dtype_policy, name="shortcut",
            )
            self.shortcut.build(shape)
        if self.drop_path is not None:
            self.drop_path.build(out)

    def _add(self, y, shortcut, training):
        """The sum of the branch and the shortcut (none for a plain block), then ReLU (post-activation)."""
        if self.residual:
            if self.drop_path is not None:
                y = self.drop_path(y, training=training)
            y = y + shortcut
        return y if self.preact else ops.relu(y)

    def _shortcut(self, x, training):
        return x if self.shortcut is None else self.shortcut(x, training=training)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        down = lambda d: None if d is None else (d + self.strides - 1) // self.strides  # noqa: E731
        return (n, down(h), down(w), self.filters * self.expansion)

    def macs(self, input_shape):
        """Multiply-accumulates of one image through this block (convolutions; BN folds away)."""
        shape = (1, *tuple(input_shape)[1:])
        total = conv_macs(shape, *self._branch())
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


@keras.saving.register_keras_serializable(package="keras_resnet")
class ResidualBlock(Block):
    """The basic residual block: two 3x3 convolutions, ``y = F(x) + shortcut(x)``.

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Figure 2);
    pre-activation form: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016;
    squeeze-and-excitation: Hu et al. 2018; the average-pool shortcut: He et al. 2019 (ResNet-D).

    Args:
        filters: output channels of both convolutions.
        strides: 1, or 2 to halve the spatial size (on the first convolution).
        use_projection: None (default) projects the shortcut with a 1x1 convolution exactly when the
            block changes spatial size or channels; True always projects; False never does (and raises
            if the shapes differ).
        preact: pre-activation ordering (BN-ReLU-conv, no ReLU after the addition).
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

    def _branch(self):
        if self.preact:
            return [self.bn1, self.pad1, self.conv1, self.bn2, self.conv2, self.se]
        return [self.pad1, self.conv1, self.bn1, self.conv2, self.bn2, self.se]

    def call(self, x, training=None):
        if self.preact:  # y = F(x) + shortcut(x); the projection takes the normalised input
            h = ops.relu(self.bn1(x, training=training))
            shortcut = x if self.shortcut is None else self.shortcut(h, training=training)
            y = self.conv1(_pad(self.pad1, h))
            y = self.conv2(ops.relu(self.bn2(y, training=training)))
        else:  # y = relu(F(x) + shortcut(x))
            shortcut = self._shortcut(x, training)
            y = ops.relu(self.bn1(self.conv1(_pad(self.pad1, x)), training=training))
            y = self.bn2(self.conv2(y), training=training)
        if self.se is not None:
            y = self.se(y)
        return self._add(y, shortcut, training)


@keras.saving.register_keras_serializable(package="keras_resnet")
class BottleneckBlock(Block):
    """The bottleneck block: 1x1 reduce, 3x3 (with the stride, v1.5), 1x1 expand by 4.

    ``filters`` is the stage's width ("planes"); the block outputs ``4 * filters`` channels. The inner
    width is ``int(filters * width_per_group / 64) * groups`` as in torchvision: ``filters`` with the
    defaults (groups=1, width_per_group=64), twice that for a wide ResNet (width_per_group=128), and
    ``groups`` groups of ``width_per_group`` channels (per 64 of ``filters``) in the grouped 3x3 of a
    ResNeXt (Xie et al. 2017: resnext50_32x4d is groups=32, width_per_group=4). Other arguments as
    `ResidualBlock`.

    Example:

    >>> block = BottleneckBlock(64)
    >>> tuple(block(keras.ops.ones((1, 56, 56, 64))).shape)
    (1, 56, 56, 256)
    >>> resnext = BottleneckBlock(64, groups=32, width_per_group=4, attention="se")
    >>> tuple(resnext(keras.ops.ones((1, 8, 8, 256))).shape)
    (1, 8, 8, 256)
    """

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

    def _branch(self):
        if self.preact:
            return [self.bn1, self.conv1, self.bn2, self.pad2, self.conv2, self.bn3, self.conv3, self.se]
        return [self.conv1, self.bn1, self.pad2, self.conv2, self.bn2, self.conv3, self.bn3, self.se]

    def call(self, x, training=None):
        if self.preact:  # y = F(x) + shortcut(x); the projection takes the normalised input
            h = ops.relu(self.bn1(x, training=training))
            shortcut = x if self.shortcut is None else self.shortcut(h, training=training)
            y = self.conv1(h)
            y = self.conv2(_pad(self.pad2, ops.relu(self.bn2(y, training=training))))
            y = self.conv3(ops.relu(self.bn3(y, training=training)))
        else:  # y = relu(F(x) + shortcut(x)), as torchvision's Bottleneck.forward
            shortcut = self._shortcut(x, training)
            y = ops.relu(self.bn1(self.conv1(x), training=training))
            y = ops.relu(self.bn2(self.conv2(_pad(self.pad2, y)), training=training))
            y = self.bn3(self.conv3(y), training=training)
        if self.se is not None:
            y = self.se(y)
        return self._add(y, shortcut, training)


def _pad(pad, x):
    return x if pad is None else pad(x)
