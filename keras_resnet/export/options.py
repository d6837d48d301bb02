"""The export's constants and the checks of `to_tflite`'s arguments (each raises a ValueError or
TypeError that names the argument, the value received and what is allowed)."""

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from keras_resnet.utils.checks import check_bool, check_choice, check_int, check_number
from keras_resnet.utils.flags import field

QUANTIZE_MODES = ("float32", "float16", "dynamic", "int8")
IO_DTYPES = ("int8", "uint8", "float32")

# Operators that the Edge TPU compiler and the common NPU delegates (NNAPI, Qualcomm, MediaTek) run
# when quantized to 8 bits; the Coral "Edge TPU supported operations" table is the reference. The edge
# profile fails when the written file holds any other operator, so a model never falls back to the CPU
# without the user knowing.
EDGE_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "FULLY_CONNECTED", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "SOFTMAX", "SQUEEZE", "SUB",
})

# Verification defaults. float32 must reproduce Keras; quantized files must agree with it on top-1
# (on a trained model; near-uniform outputs of an untrained one flip easily) and, with labels, lose at
# most one accuracy point.
FLOAT32_MAX_ABS_DIFF = 1e-4
MIN_AGREEMENT = {"float16": 0.99, "dynamic": 0.98, "int8": 0.97}
MAX_ACCURACY_DROP = 0.01
CALIBRATION_COUNT = 200


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What `to_tflite` writes and how strictly it verifies the file: the flags of `keras-resnet export`,
    declared here once, and the settings of a search's deployed file.

    `to_tflite` checks every value (a bad one raises a ValueError naming it). A mode name stands for
    ``ExportOptions(quantize=name)`` wherever options are taken.
    """

    quantize: str = field(None, "float32 (no quantization; the default, int8 with --edge), float16 (float16 "
                                "weights), dynamic (int8 weights) or int8 (full integer, calibrated)",
                          type=str, choices=QUANTIZE_MODES)
    calibration_count: int = field(CALIBRATION_COUNT, "int8 calibration images (a seeded random sample)")
    io_dtype: str = field(None, "input/output type of an int8 file (default int8; uint8 with --rgb-input)",
                          type=str, choices=IO_DTYPES)
    edge: bool = field(False, "Edge TPU / NPU profile: int8, batch 1, allow-listed operators only")
    batch_size: int = field(None, "fixed batch size (default resizable)", type=int)
    rgb_input: bool = field(None, "camera-ready input: RGB 0-255 pixels, normalised (and made gray) inside "
                                  "the file (default on for grayscale and RGB models with a normalisation)",
                            action=argparse.BooleanOptionalAction)
    max_abs_diff: float = field(None, "largest |LiteRT - Keras| output difference (default 1e-4 for float32, "
                                      "unchecked when quantized)", type=float)
    min_agreement: float = field(None, "smallest top-1 agreement with Keras of a quantized file (default "
                                       "0.99 float16, 0.98 dynamic, 0.97 int8)", type=float)
    max_accuracy_drop: float = field(None, "largest accuracy loss against Keras on labelled images (default "
                                           "0.01)", type=float)
    strip_names: bool = field(False, "drop the inner tensor names (a smaller file)")

    @classmethod
    def of(cls, options):
        """`options` as an `ExportOptions`: itself, a mode name's options, or the defaults for None."""
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if isinstance(options, str):
            return cls(quantize=options)
        raise TypeError(f"`options` must be an ExportOptions or a mode name {QUANTIZE_MODES}. "
                        f"Received: options={options!r}")


class ExportError(ValueError):
    """A conversion or verification check failed; nothing was written. The message says which and why."""


def check_mode(quantize, edge):
    check_bool("edge", edge)
    if quantize is not None:
        check_choice("quantize", quantize, (None,) + QUANTIZE_MODES)
    mode = "float32" if quantize is None else quantize
    if edge:
        if quantize is None:
            return "int8"
        if mode != "int8":
            raise ValueError("edge=True is full-integer: `quantize` must be 'int8' (or None, meaning "
                             f"'int8'). Received: quantize={quantize!r}")
    return mode


def check_io_dtype(io_dtype, mode, edge):
    check_choice("io_dtype", io_dtype, (None,) + IO_DTYPES)
    if mode != "int8":
        if io_dtype not in (None, "float32"):
            raise ValueError(f"io_dtype={io_dtype!r} needs quantize='int8'; a {mode} file has float32 "
                             "input and output.")
        return "float32"
    if edge and io_dtype == "float32":
        raise ValueError("edge=True needs integer input and output: `io_dtype` must be 'int8' or "
                         "'uint8'. Received: io_dtype='float32'")
    return io_dtype or "int8"


def check_output_path(path):
    """A ``.tflite`` path whose folder exists (or is created) and takes new files."""
    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix != ".tflite":
        raise ValueError(f"`path` must be a file name ending in .tflite. Received: path={path!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`path` is a directory: {str(path)!r}. Give a file name ending in .tflite.")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(e.errno, f"`path`: cannot write {str(path)!r}: the folder {str(folder)!r} does not "
                               f"take new files ({e.strerror or e})") from None
    return path


def check_batch_size(batch_size, edge):
    check_int("batch_size", batch_size, minimum=1, none_ok=True)
    if edge:
        if batch_size not in (None, 1):
            raise ValueError(f"edge=True fixes the batch at 1. Received: batch_size={batch_size!r}")
        return 1
    return batch_size


def model_input_shape(model):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"`model` must have one input and one output. Received: {len(model.inputs)} "
                         f"input(s) and {len(model.outputs)} output(s)")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"`model` must take images of a fixed size (H, W, C). Received: input shape "
                         f"{shape}; rebuild it with input_shape=(height, width, channels).")
    return tuple(int(d) for d in shape)


def check_images(name, x, input_shape):
    if x is None:
        return None
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != input_shape or len(x) == 0:
        dims = ", ".join(map(str, input_shape))
        raise ValueError(f"`{name}` must be images of shape (N, {dims}) with N >= 1, the model's input. "
                         f"Received: shape={x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"`{name}` must be normalised float32 images, (pixels / 255 - mean) / std, as the "
                         f"model sees them. Received: dtype={x.dtype} (raw pixels? normalise them first, "
                         "e.g. with keras_resnet.data.normalize)")
    return x.astype(np.float32, copy=False)


def check_labels(labels, x):
    if labels is None:
        return None
    if x is None:
        raise ValueError("`verify_labels` were given without `verify_data`.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(x) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`verify_labels` must be one int label per image of `verify_data` ({len(x)}). "
                         f"Received: shape={labels.shape}, dtype={labels.dtype}")
    return labels


def check_normalization(mean, std, channels):
    """``{"mean": [...], "std": [...]}`` per channel in [0, 1] pixel scale, or None."""
    if mean is None and std is None:
        return None
    values = {}
    for name, v in (("mean", mean), ("std", std)):
        try:
            arr = np.broadcast_to(np.asarray(v, np.float64).reshape(-1), (channels,))
        except (TypeError, ValueError):
            raise ValueError(f"`{name}` must be one number or one per channel ({channels}) in [0, 1] "
                             f"pixel scale. Received: {name}={v!r}") from None
        if name == "std" and np.any(arr <= 0):
            raise ValueError(f"`std` must be > 0. Received: std={v!r}")
        values[name] = [float(a) for a in arr]
    return values


def check_class_names(class_names, classes):
    if class_names is None:
        return None
    if isinstance(class_names, str) or len(class_names) != classes:
        raise ValueError(f"`class_names` must list one name per output ({classes}). "
                         f"Received: class_names={class_names!r}")
    names = [str(c) for c in class_names]
    if any("\n" in n or not n.strip() for n in names):
        raise ValueError("`class_names` must be non-empty names without line breaks (they become the "
                         f"lines of the file's label list). Received: class_names={class_names!r}")
    return names


def thresholds(mode, max_abs_diff, min_agreement, max_accuracy_drop):
    check_number("max_abs_diff", max_abs_diff, 0, none_ok=True)
    check_number("min_agreement", min_agreement, 0, 1, none_ok=True)
    check_number("max_accuracy_drop", max_accuracy_drop, 0, 1, none_ok=True)
    return {
        "max_abs_diff": FLOAT32_MAX_ABS_DIFF if max_abs_diff is None and mode == "float32" else max_abs_diff,
        "min_agreement": MIN_AGREEMENT.get(mode) if min_agreement is None else min_agreement,
        "max_accuracy_drop": MAX_ACCURACY_DROP if max_accuracy_drop is None else max_accuracy_drop,
    }
