"""The parts of the residual blocks: convolution and BatchNorm settings, the strided pad, the projection
shortcut, stochastic depth and squeeze-and-excitation. The blocks themselves are in
`keras_resnet.models.blocks`.

The projection shortcut is a strided 1x1 convolution (then BatchNorm, in the post-activation form) that
shapes ``x`` like ``F(x)`` where a block changes the spatial size or the channel count (He et al. 2015).
Convolutions pad as PyTorch does, and BatchNorm takes PyTorch's settings, so that weights ported from
torchvision and timm give the same numbers.

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
