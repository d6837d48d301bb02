"""LiteRT (TFLite) export: conversion, quantization, metadata, verification against Keras, inference.

`to_tflite` converts a model (or a ``.keras`` file) to a ``.tflite`` file that an app uses as it is:
it takes RGB images (camera-ready input: a grayscale model gets their luminance inside the file; an
int8 file takes uint8 pixels and normalises them inside) and carries TFLite Model Metadata (the
input's color space, size and normalisation, the class names as a label file), which MediaPipe
Tasks' ImageClassifier reads. The file is checked before it is kept: its operator list is read back
(built-in operators only, every BatchNorm folded into its convolution, and for the edge profile only
operators that Edge TPU / NPU delegates accept) and the finished file is run with the LiteRT
interpreter and compared with Keras. Next to it goes a JSON sidecar (``model.tflite`` ->
``model.json``) with the same facts and the verification figures.

The route: ``model.export(..., format="tf_saved_model")`` into a temporary folder, then
``tf.lite.TFLiteConverter.from_saved_model`` with built-in operators only. It is what Keras's own
``model.export(format="litert")`` does inside (which also allows Flex ops); converting from a concrete
function instead keeps Keras 3's variables as resource variables and leaves every BatchNorm unfolded,
and so does the JAX backend's SavedModel: export runs on the TensorFlow backend (a ``.keras`` file
saved under any backend loads there).

`run` and `predict` run files with ``ai_edge_litert`` (numpy in, numpy out, Pillow for image files);
TensorFlow is imported by `to_tflite` alone.

Modules: ``convert`` (`to_tflite`), ``camera`` (the input map in front of the model), ``graph``
(`analyze` and the edits after conversion), ``metadata`` (the TFLite Metadata writer), ``options``
(constants and argument checks), ``interpreter`` (`run`, `predict`, `load_images`, the sidecar).
"""

from keras_resnet.export.convert import float32_model, to_tflite
from keras_resnet.export.graph import analyze
from keras_resnet.export.options import (
    CALIBRATION_COUNT,
    EDGE_OPS,
    FLOAT32_MAX_ABS_DIFF,
    IO_DTYPES,
    MAX_ACCURACY_DROP,
    MIN_AGREEMENT,
    QUANTIZE_MODES,
    ExportError,
    ExportOptions,
)
from keras_resnet.export.interpreter import load_images, predict, read_sidecar, run, sidecar_path

__all__ = [
    "CALIBRATION_COUNT",
    "EDGE_OPS",
    "FLOAT32_MAX_ABS_DIFF",
    "IO_DTYPES",
    "MAX_ACCURACY_DROP",
    "MIN_AGREEMENT",
    "QUANTIZE_MODES",
    "ExportError",
    "ExportOptions",
    "analyze",
    "float32_model",
    "load_images",
    "predict",
    "read_sidecar",
    "run",
    "sidecar_path",
    "to_tflite",
]
