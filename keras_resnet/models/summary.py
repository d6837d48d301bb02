"""Parameters and multiply-accumulates (MACs) per image: the figures a model summary should show."""

import math

import keras
from keras import layers

from keras_resnet.models.blocks import Block


def count_macs(model):
    """Multiply-accumulates for one image through `model`'s convolutions and dense layers.

    BatchNorm, activations, additions and pooling are not counted (BatchNorm folds into the
    convolutions at export; the rest are negligible), the convention of torchvision and the papers:
    ResNet-50 at 224x224 is about 4.1 GMACs.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, Block):
            total += layer.macs(layer.input.shape)
        elif isinstance(layer, layers.Conv2D):
            out = layer.output.shape
            k = layer.kernel.shape  # (kh, kw, in / groups, out)
            total += out[1] * out[2] * math.prod(k)
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.Model):
            total += count_macs(layer)
    return int(total)


def summarize(model):
    """A dict with the model's name, input shape, parameter counts and MACs per image."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {
        "name": model.name,
        "input_shape": list(model.input_shape[1:]),
        "params": int(model.count_params()),
        "trainable_params": int(trainable),
        "macs": count_macs(model),
    }


def format_summary(info):
    return (
        f"{info['name']}: input {tuple(info['input_shape'])}, "
        f"{info['trainable_params']:,} trainable parameters ({info['params']:,} in all), "
        f"{info['macs'] / 1e9:.3f} GMACs per image"
    )
