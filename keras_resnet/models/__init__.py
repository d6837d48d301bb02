"""Layers, blocks, the depth table and the named architectures, and `build` without weights.

Only `keras` and `keras.ops`: the models run on the TensorFlow, JAX and PyTorch backends. Nothing here
imports the checkpoint code (`keras_resnet.weights`); `keras_resnet.build` puts the two together.
"""

from keras_resnet.models.architectures import (  # noqa: F401
    ARCHITECTURE_FIELDS, ARCHITECTURES, ATTENTIONS, BLOCKS, IMAGENET_DEPTHS, SHORTCUTS, STEMS, VARIANTS,
    architecture_name, block_depth, list_models, resolve_architecture, resolve_depth,
    supported_depths_message)
from keras_resnet.models.blocks import (  # noqa: F401
    Block, BottleneckBlock, PreActBlock, PreActBottleneckBlock, PreActResidualBlock, ResidualBlock)
from keras_resnet.models.layers import (  # noqa: F401
    DropPath, ProjectionShortcut, SqueezeExcite, StridedPad)
from keras_resnet.models.losses import SmoothedSparseCrossentropy  # noqa: F401
from keras_resnet.models.resnet import (  # noqa: F401
    SMALL_INPUT, ResNet, build, config_of, dtype_policy_scope)
from keras_resnet.models.summary import count_macs, format_summary, summarize  # noqa: F401
