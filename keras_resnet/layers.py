"""Residual layers: the basic and bottleneck blocks, their pre-activation forms, the projection shortcut.

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

from keras_resnet import checks

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


def conv(filters, kernel_size, strides, name, kernel_regularizer=None, dtype=None):
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
class ProjectionShortcut(layers.Layer):
    """The projection shortcut: a 1x1 convolution with stride, then BatchNorm (option B of He et al.).

    Used when a block changes the spatial size or the channel count, so that ``x`` can be added to
    ``F(x)``. In the pre-activation form the input is already normalised, so there is no BatchNorm.

    Args:
        filters: output channels.
        strides: 1 or 2, the block's stride.
        preact: pre-activation form (convolution only).
    """

    def __init__(self, filters, strides=1, preact=False, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        checks.check_int("filters", filters, 1)
        checks.check_choice("strides", strides, (1, 2))
        self.filters = filters
        self.strides = strides
        self.preact = preact
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.conv = layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer=CONV_INIT,
            kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name="conv",
        )
        self.bn = None if preact else batch_norm("bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        x = self.conv(x)
        return x if self.bn is None else self.bn(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "preact": self.preact,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


class _Block(layers.Layer):
    """What the basic and bottleneck blocks share: the shortcut, the ordering, the options.

    Subclasses set ``expansion`` and ``kernel_sizes`` (one per convolution of ``F``); the stride sits on
    the 3x3 convolution. ``filters`` is the inner width; the block outputs ``filters * expansion``.
    """

    expansion = 1
    kernel_sizes = ()

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
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.check_int("filters", filters, 1)
        checks.check_choice("strides", strides, (1, 2))
        checks.check_number("drop_path_rate", drop_path_rate, 0.0, 1.0, high_open=True)
        checks.check_choice("use_projection", use_projection, (None, True, False))
        self.filters = filters
        self.strides = strides
        self.use_projection = use_projection
        self.preact = preact
        self.residual = residual
        self.zero_init_residual = zero_init_residual
        self.drop_path_rate = drop_path_rate
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

        out = filters * self.expansion
        n = len(self.kernel_sizes)
        widths = [filters] * (n - 1) + [out]
        # The last BatchNorm of F starts at zero so that each block starts as the identity (Goyal et al.
        # 2017). Only for residual post-activation blocks: a plain block would output zeros.
        zero_last = zero_init_residual and residual and not preact
        strided = self.kernel_sizes.index(3) + 1  # the stride sits on the first 3x3 (v1.5)
        # Sub-layers share this layer's dtype policy, so a mixed-precision model saved to .keras
        # loads and runs the same in a process whose global policy is float32.
        policy = self.dtype_policy
        for i, (k, w) in enumerate(zip(self.kernel_sizes, widths), start=1):
            s = strides if i == strided else 1
            setattr(self, f"conv{i}", conv(w, k, s, f"conv{i}", self.kernel_regularizer, policy))
            # Pre-activation: BN-ReLU come before each convolution; post-activation: after.
            setattr(self, f"bn{i}", batch_norm(f"bn{i}", zero_last and i == n, policy))
            setattr(self, f"pad{i}", StridedPad(k, dtype=policy, name=f"pad{i}") if s > 1 else None)
        self.shortcut = None  # decided in build(), once the input channel count is known
        self.drop_path = (DropPath(drop_path_rate, dtype=policy, name="drop_path")
                          if drop_path_rate > 0 else None)

    def _units(self):
        """(conv, bn, pad) for each convolution of F, in order; pad is None unless strided."""
        return [
            (getattr(self, f"conv{i}"), getattr(self, f"bn{i}"), getattr(self, f"pad{i}"))
            for i in range(1, len(self.kernel_sizes) + 1)
        ]

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
        in_shape = shape
        for c, b, p in self._units():
            if self.preact:
                b.build(shape)
            if p is not None:
                p.build(shape)
                shape = p.compute_output_shape(shape)
            c.build(shape)
            shape = c.compute_output_shape(shape)
            if not self.preact:
                b.build(shape)
        if self._needs_projection(in_shape[-1]):
            self.shortcut = ProjectionShortcut(
                self.filters * self.expansion, self.strides, self.preact,
                self.kernel_regularizer, dtype=self.dtype_policy, name="shortcut",
            )
            self.shortcut.build(in_shape)
        if self.drop_path is not None:
            self.drop_path.build(shape)

    def call(self, x, training=None):
        if self.preact:
            # y = F(x) + shortcut(x), F = (BN-ReLU-conv) * n. The projection takes the normalised input.
            units = self._units()
            h = ops.relu(units[0][1](x, training=training))
            shortcut = self.shortcut(h, training=training) if self.shortcut is not None else x
            y = h
            for i, (c, b, p) in enumerate(units):
                if i > 0:
                    y = ops.relu(b(y, training=training))
                y = c(p(y) if p is not None else y)
        else:
            # y = relu(F(x) + shortcut(x)), F = (conv-BN-ReLU) * (n - 1), conv-BN.
            shortcut = self.shortcut(x, training=training) if self.shortcut is not None else x
            y = x
            units = self._units()
            for i, (c, b, p) in enumerate(units):
                y = b(c(p(y) if p is not None else y), training=training)
                if i < len(units) - 1:
                    y = ops.relu(y)
        if self.residual:
            if self.drop_path is not None:
                y = self.drop_path(y, training=training)
            y = y + shortcut
        return y if self.preact else ops.relu(y)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        down = lambda d: None if d is None else (d + self.strides - 1) // self.strides  # noqa: E731
        return (n, down(h), down(w), self.filters * self.expansion)

    def macs(self, input_shape):
        """Multiply-accumulates of one image through this block (convolutions; BN folds away)."""
        _, h, w, c = input_shape
        total, shape = 0, (1, h, w, c)
        for conv_layer, _, p in self._units():
            if p is not None:
                shape = p.compute_output_shape(shape)
            out = conv_layer.compute_output_shape(shape)
            k = conv_layer.kernel_size
            total += out[1] * out[2] * k[0] * k[1] * shape[-1] * out[-1]
            shape = out
        if self.shortcut is not None:
            total += shape[1] * shape[2] * c * shape[-1]
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
        }


@keras.saving.register_keras_serializable(package="keras_resnet")
class ResidualBlock(_Block):
    """The basic residual block: two 3x3 convolutions, ``y = F(x) + shortcut(x)``.

    Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Figure 2);
    pre-activation form: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016.

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

    Example:

    >>> block = ResidualBlock(64, strides=2)          # D2L: Residual(64, use_1x1conv=True, strides=2)
    >>> tuple(block(keras.ops.ones((1, 32, 32, 32))).shape)
    (1, 16, 16, 64)
    """

    expansion = 1
    kernel_sizes = (3, 3)


@keras.saving.register_keras_serializable(package="keras_resnet")
class BottleneckBlock(_Block):
    """The bottleneck block: 1x1 reduce, 3x3 (with the stride, v1.5), 1x1 expand by 4.

    ``filters`` is the inner width; the block outputs ``4 * filters`` channels. Arguments as
    `ResidualBlock`.

    Example:

    >>> block = BottleneckBlock(64)
    >>> tuple(block(keras.ops.ones((1, 56, 56, 64))).shape)
    (1, 56, 56, 256)
    """

    expansion = 4
    kernel_sizes = (1, 3, 1)
