"""keras_resnet: residual networks for Keras 3, from the layer to the phone.

    >>> import keras_resnet
    >>> model = keras_resnet.build(depth=34)                 # an uncompiled keras.Model
    >>> model = keras_resnet.build("resnet50d")              # a name from keras_resnet.list_models()
    >>> recipe = keras_resnet.training.Recipe(epochs=1)      # Fashion-MNIST, offline; 500 images here
    >>> result = keras_resnet.train(depth=8, recipe=recipe, train_size=500, test_size=500, verbose=0)
    >>> sidecar = keras_resnet.to_tflite(result["run_dir"] + "/model.keras", "m.tflite")  # verified
    >>> sidecar["quantize"], sidecar["input"]["shape"]
    ('float32', [-1, 28, 28, 1])

The layers and builders use only `keras` and `keras.ops` (TensorFlow, JAX or PyTorch backend). The
TensorFlow-only parts (tf.data pipelines, LiteRT export) are imported on first use:
``keras_resnet.data``, ``keras_resnet.training``, ``keras_resnet.tuning``, ``keras_resnet.export``.
"""

import importlib
import importlib.abc
import importlib.util
import os
import signal
import sys

_COMMAND = os.path.basename(sys.argv[0] if sys.argv else "") in ("keras-resnet", "-m")


def interrupted_while_starting(signum, frame):
    """Ctrl-C while the command imports Keras and TensorFlow: one line, not the import's traceback."""
    try:  # Python's stderr: while the imports run, file descriptor 2 goes to /dev/null (quiet_native_logs)
        sys.stderr.write("keras-resnet: interrupted while starting; nothing was written\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


if _COMMAND:  # `keras_resnet.cli.main` hands Ctrl-C back to Python once the imports are done
    signal.signal(signal.SIGINT, interrupted_while_starting)

from keras_resnet.utils.io_utils import quiet_native_logs  # noqa: E402

# The `keras-resnet` command (also `python -m keras_resnet.cli`) keeps TensorFlow's C++ start-up log
# lines out of its output unless it runs with --debug; a library import leaves them as they are.
with quiet_native_logs(_COMMAND and "--debug" not in sys.argv):  # noqa: E402
    from keras_resnet.models.architectures import ARCHITECTURES, IMAGENET_DEPTHS, list_models
    from keras_resnet.models.blocks import (
        BottleneckBlock,
        PreActBottleneckBlock,
        PreActResidualBlock,
        ResidualBlock,
    )
    from keras_resnet.models.layers import DropPath, ProjectionShortcut, SqueezeExcite
    from keras_resnet.models.losses import SmoothedSparseCrossentropy
    from keras_resnet.models.resnet import ResNet, config_of
    from keras_resnet.factory import build
    from keras_resnet.models.summary import count_macs, summarize

__version__ = "0.1.0"

_LAZY = ("data", "training", "tuning", "export", "weights", "gradcam", "cli")
# Entry points of the packages above, importable from the top without loading them all up front.
_ENTRY_POINTS = {
    "load_data": ("data", "load"),
    "train": ("training", "train"),
    "evaluate": ("training", "evaluate"),
    "search": ("tuning", "run_search"),
    "to_tflite": ("export", "to_tflite"),
    "load_weights": ("weights", "load_weights"),
    "explain": ("gradcam", "explain"),
}
# Where the modules of the flat layout of 0.1 live now. Their old import paths stay importable (the
# same module objects) for one release; see docs/changelog.md.
MOVED = {
    "checks": "utils.checks", "flags": "utils.flags", "io_utils": "utils.io_utils",
    "layers": "models.blocks", "summary": "models.summary", "losses": "models.losses",
    "pretrained": "weights.pretrained", "checkpoint_layout": "weights.layout",
    "folders": "data.folders", "images": "data.images", "streams": "data.streams",
    "tfds_streams": "data.tfds_streams", "pipelines": "data.pipelines",
    "callbacks": "training.callbacks", "history": "training.history", "run_folder": "training.run_folder",
    "distributed": "training.distributed", "diagnostics": "training.diagnostics",
    "execution": "training.devices", "gradcam_tf": "gradcam.tf_gradients",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``keras_resnet.<old name>`` as the module it moved to (the same object, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{MOVED[spec.name.rpartition('.')[2]]}")

    def exec_module(self, module):
        """The module ran when it was imported under its own name."""


sys.meta_path.append(_MovedModules())


def __getattr__(name):
    if name in _LAZY or name in MOVED:
        return importlib.import_module(f"keras_resnet.{name}")
    if name in _ENTRY_POINTS:
        module, attr = _ENTRY_POINTS[name]
        return getattr(importlib.import_module(f"keras_resnet.{module}"), attr)
    raise AttributeError(f"module 'keras_resnet' has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "BottleneckBlock",
    "DropPath",
    "IMAGENET_DEPTHS",
    "PreActBottleneckBlock",
    "PreActResidualBlock",
    "ResNet",
    "ProjectionShortcut",
    "ResidualBlock",
    "SmoothedSparseCrossentropy",
    "SqueezeExcite",
    "build",
    "config_of",
    "count_macs",
    "list_models",
    "summarize",
    "__version__",
]
