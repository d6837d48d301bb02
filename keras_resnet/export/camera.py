"""Camera-ready input: the exported graph takes RGB pixels, as a camera or an image decoder gives them.

In front of the model goes one fixed affine map per pixel, ``x @ matrix + offset`` in `keras.ops`,
that the converter keeps as a 1x1 CONV_2D. It holds the model's normalisation ``(pixels / 255 - mean)
/ std``, so the app feeds 0-255 pixels (uint8 for int8 files, float32 otherwise) and the file's
metadata says so (mean 0, std 1: MediaPipe Tasks apply only one normalisation value to all channels,
which a per-channel one could not be). A grayscale model also gets the luminance of the RGB input,
ITU-R BT.601 weights (what Pillow's ``convert("L")`` computes), which sum to 1: on gray images
(R = G = B) it is the identity.

`Front` holds the map: `Front.with_input_map` puts it in front of the Keras model (what is converted),
and `Front.file_input` turns the normalised images of verification and calibration into what the file
takes, so that the file is verified against the Keras model with the same map in front.
"""

import dataclasses

import numpy as np

LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class Front:
    """The file's input for a model of `channels` channels: RGB pixels (`rgb`) or the model's own."""

    channels: int
    rgb: bool
    normalization: dict = None  # the model's, [0, 1] pixel scale, one value per model channel

    @property
    def input_channels(self):
        return 3 if self.rgb else self.channels

    @property
    def color_space(self):
        return "RGB" if self.input_channels == 3 else "GRAYSCALE"

    def _mean_std(self):
        return (np.asarray(self.normalization[k], np.float64) for k in ("mean", "std"))

    def with_input_map(self, model):
        """`model` with the map in front (a new functional model of the same name), or `model`."""
        import keras

        if not self.rgb:
            return model
        mean, std = self._mean_std()
        luma = np.asarray(LUMA)[:, None] if self.channels == 1 else np.eye(3)
        kernel = (luma / (255 * std)).astype(np.float32).reshape(1, 1, 3, self.channels)
        h, w = (int(d) for d in model.inputs[0].shape[1:3])
        inputs = keras.Input((h, w, 3), name="image")
        x = keras.ops.conv(inputs, kernel, strides=1, padding="valid") + (-mean / std).astype(np.float32)
        return keras.Model(inputs, model(x), name=model.name)

    def file_input(self, x):
        """Normalised float32 images of the model -> the file's input (0-255 RGB pixels, or `x`)."""
        if x is None or not self.rgb:
            return x
        mean, std = self._mean_std()
        pixels = np.clip(np.round((x * std + mean) * 255), 0, 255).astype(np.float32)
        return np.repeat(pixels, 3, axis=-1) if self.channels == 1 else pixels

    def input_normalization(self):
        """The input's normalisation from 0-255 pixels, ``(pixels - mean) / std``, per input channel
        (as TFLite Metadata's NormalizationOptions state it), or None when unknown."""
        if self.rgb:
            return {"mean": [0.0] * 3, "std": [1.0] * 3}
        if self.normalization is None:
            return None
        return {k: [255 * v for v in self.normalization[k]] for k in ("mean", "std")}


def front(channels, rgb_input, normalization):
    """The `Front` for `rgb_input` (None: True for a grayscale or RGB model whose normalisation is known)."""
    if rgb_input is None:
        rgb_input = channels in (1, 3) and normalization is not None
    if not isinstance(rgb_input, bool):
        raise TypeError(f"`rgb_input` must be None, True or False. Received: rgb_input={rgb_input!r}")
    if rgb_input and channels not in (1, 3):
        raise ValueError(f"rgb_input=True needs a grayscale or RGB model; this one takes {channels} "
                         "channels. Export it with rgb_input=False.")
    if rgb_input and normalization is None:
        raise ValueError("rgb_input=True makes the file take 0-255 pixels and normalise them inside: pass "
                         "`mean` and `std` (the training statistics), or export with rgb_input=False. "
                         "Received: mean=None, std=None")
    return Front(channels, rgb_input, normalization)
