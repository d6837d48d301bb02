"""Checkpoint files and Hub names -> the weights of a built model: torchvision's and timm's tensor
layouts (`layout`) and the loaders (`pretrained`). Imports `keras_resnet.models`, never the reverse."""

from keras_resnet.weights.pretrained import (  # noqa: F401
    architecture_of, load_weights, normalization_of, to_state_dict)
