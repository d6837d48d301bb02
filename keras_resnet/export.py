"""LiteRT (TFLite) export: conversion, quantization, verification against Keras, and inference.

`to_tflite` converts a model (or a ``.keras`` file) to a ``.tflite`` file that is checked before it is
kept: the written file is run with the LiteRT interpreter on real images and compared with Keras, its
operator list is read back (built-in operators only, every BatchNorm folded into its convolution, and
for the edge profile only operators that Edge TPU / NPU delegates accept), and only then is it moved
into place, next to a JSON sidecar (``model.tflite`` -> ``model.json``) that holds what an app needs to
feed it: input shape and dtype, normalisation, quantization parameters, class names.

The route: ``model.export(..., format="tf_saved_model")`` into a temporary folder, then
``tf.lite.TFLiteConverter.from_saved_model`` with built-in operators only. It is what Keras's own
``model.export(format="litert")`` does inside (which also allows Flex ops); converting from a concrete
function instead keeps Keras 3's variables as resource variables and leaves every BatchNorm unfolded,
and so does the JAX backend's SavedModel: export runs on the TensorFlow backend (a ``.keras`` file
saved under any backend loads there).

`run` and `predict` run files with ``ai_edge_litert`` (numpy in, numpy out, Pillow for image files);
TensorFlow is imported by `to_tflite` alone.
"""

import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

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
_PRODUCERS_OF_FOLDABLE_BN = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}

# Verification defaults. float32 must reproduce Keras; quantized files must agree with it on top-1
# (on a trained model; near-uniform outputs of an untrained one flip easily) and, with labels, lose at
# most one accuracy point.
FLOAT32_MAX_ABS_DIFF = 1e-4
MIN_AGREEMENT = {"float16": 0.99, "dynamic": 0.98, "int8": 0.97}
MAX_ACCURACY_DROP = 0.01
CALIBRATION_COUNT = 200
_RANDOM_VERIFY_IMAGES = 32  # float32 without data: the numerics check runs on seeded random inputs


class ExportError(ValueError):
    """A conversion or verification check failed; nothing was written. The message says which and why."""


# ---------------------------------------------------------------------------------------------------
# Export


def to_tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    *,
    verify_data=None,
    verify_labels=None,
    calibration_count=CALIBRATION_COUNT,
    io_dtype=None,
    edge=False,
    batch_size=None,
    mean=None,
    std=None,
    class_names=None,
    max_abs_diff=None,
    min_agreement=None,
    max_accuracy_drop=None,
    strip_names=False,
):
    """Converts a Keras model to a verified LiteRT (``.tflite``) file with a JSON sidecar.

    The file is written under a temporary name in the target folder, checked, and only then renamed
    to `path` (the sidecar likewise): a failed check raises `ExportError` and leaves any existing file
    at `path` untouched. Checks, in order:

    1. operators: built-in only (no Flex / custom ops); every BatchNorm that follows a convolution is
       folded into it (no MUL left on a convolution's output); with ``edge=True``, only `EDGE_OPS` and
       no float tensors.
    2. numerics, on `verify_data` (else `representative_data`; for float32 without either, seeded
       random inputs): float32 must match Keras within `max_abs_diff`; quantized files must agree with
       Keras's top-1 class on at least `min_agreement` of the images, and with `verify_labels` lose at
       most `max_accuracy_drop` of accuracy.

    Args:
        model: a `keras.Model` with one image input of fixed size, or the path of a ``.keras`` file.
        path: the ``.tflite`` file to write; the sidecar is the same path with ``.json``.
        quantize: None or "float32" (no quantization), "float16" (float16 weights), "dynamic" (int8
            weights, float activations quantized on the fly) or "int8" (full integer: int8 weights
            and activations, calibrated on `representative_data`).
        representative_data: normalised float32 training images ``(N, H, W, C)``, as the model sees
            them; required for "int8".
        verify_data: normalised float32 images to verify on, e.g. a slice of the test set.
        verify_labels: int labels of `verify_data`, to report and check accuracy.
        calibration_count: how many representative images calibrate int8 (a seeded random sample).
        io_dtype: input and output type of an "int8" file: "int8" (default), "uint8", or "float32"
            (int8 inside, with QUANTIZE / DEQUANTIZE at the ends).
        edge: the Edge TPU / NPU profile: full int8 (``quantize`` None means "int8"), batch fixed at 1,
            int8 or uint8 I/O, and only `EDGE_OPS`.
        batch_size: a fixed batch size, or None for a resizable batch (1 with `edge`).
        mean: per-channel mean of the normalisation ``(pixels / 255 - mean) / std`` (or one number),
            stored in the sidecar for `predict`.
        std: per-channel standard deviation, likewise.
        class_names: names of the classes, stored in the sidecar.
        max_abs_diff: largest allowed difference of any output from Keras's; default 1e-4 for
            float32 and unchecked for quantized files.
        min_agreement: smallest allowed top-1 agreement with Keras; default `MIN_AGREEMENT[quantize]`
            for quantized files and unchecked for float32.
        max_accuracy_drop: largest allowed accuracy loss against Keras on the labelled images
            (default 0.01, one point).
        strip_names: drop the names of the inner tensors, for the smallest file (ResNet-20: 9.5 KiB
            of a 1.1 MB float32 file, 15 KiB of the float16 one). The input, the output and the
            signature keep theirs; profilers and Netron then show operators without layer names.
            (Quantized files always store identical zero-point vectors once, names or not.)

    Returns:
        The sidecar as a dict (also written next to the file).

    Raises:
        ValueError: for bad arguments, naming the argument and the value received.
        ExportError: when a check fails; nothing is written.

    Example:

    >>> model = keras_resnet.build(depth=20, input_shape=(28, 28, 1), num_classes=10)
    >>> info = to_tflite(model, "resnet20.tflite", "int8", calibration, verify_data=x_val,
    ...                  verify_labels=y_val, mean=[0.286], std=[0.353])
    >>> info["verification"]["top1_agreement"]
    0.998
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            f"to_tflite needs the TensorFlow backend; this process runs {keras.backend.backend()!r}, whose "
            "SavedModel keeps the variables, so no BatchNorm folds. Save the model (model.save('m.keras')) "
            "and export that file with KERAS_BACKEND=tensorflow.")
    mode = _check_quantize(quantize, edge)
    io_dtype = _check_io_dtype(io_dtype, mode, edge)
    path = _check_path(path)
    batch_size = _check_batch_size(batch_size, edge)
    if isinstance(calibration_count, bool) or not isinstance(calibration_count, int) or calibration_count < 1:
        raise ValueError("`calibration_count` must be a positive int. "
                         f"Received: calibration_count={calibration_count!r}")
    if mode == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data`: normalised float32 training images "
            "(N, H, W, C) to calibrate the activation ranges, e.g. "
            "keras_resnet.data.calibration_images(x_train, info). Received: representative_data=None")
    if strip_names not in (True, False):
        raise ValueError(f"`strip_names` must be True or False. Received: strip_names={strip_names!r}")
    thresholds = _thresholds(mode, max_abs_diff, min_agreement, max_accuracy_drop)

    model, policy = _float32(_load_model(model))
    input_shape = _model_input_shape(model)
    representative_data = _check_images("representative_data", representative_data, input_shape)
    verify_data = _check_images("verify_data", verify_data, input_shape)
    verify_labels = _check_labels(verify_labels, verify_data)
    normalization = _check_normalization(mean, std, input_shape[-1])
    class_names = _check_class_names(class_names, model.outputs[0].shape[-1])

    if verify_data is not None:
        x_verify, source = verify_data, "verify_data"
    elif representative_data is not None:
        x_verify, source, verify_labels = representative_data, "representative_data", None
    elif mode == "float32":
        rng = np.random.default_rng(0)
        x_verify, source = rng.standard_normal((_RANDOM_VERIFY_IMAGES,) + input_shape, np.float32), "random"
    else:
        raise ValueError(
            f"quantize={mode!r} is verified on real images: pass `verify_data` (normalised float32 "
            "images, e.g. part of the test set) or `representative_data`. Received neither.")
    calibration = None
    if mode == "int8":
        calibration = representative_data
        if len(calibration) > calibration_count:
            pick = np.random.default_rng(0).choice(len(calibration), calibration_count, replace=False)
            calibration = calibration[np.sort(pick)]

    buffer = _convert(model, mode, calibration, io_dtype, (batch_size,) + input_shape)
    if strip_names or mode in ("dynamic", "int8"):
        buffer = _rewrite(buffer, strip_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_path(path)
    tmp_model = tmp_json = None
    try:
        tmp_model = _write_temporary(path, buffer)
        graph = analyze(buffer)
        _check_graph(graph, path, edge)
        keras_out = keras.ops.convert_to_numpy(model.predict(x_verify, batch_size=256, verbose=0))
        lite_out = run(tmp_model, x_verify)
        verification = _verify(keras_out, lite_out, verify_labels, thresholds, mode, path)
        verification.update(images=int(len(x_verify)), source=source)
        info = _sidecar(model, path, len(buffer), mode, edge, tmp_model, normalization, class_names,
                        graph, verification, None if calibration is None else len(calibration))
        info["names_stripped"] = strip_names
        info["trained_dtype_policy"] = policy
        tmp_json = _write_temporary(sidecar, (json.dumps(info, indent=2) + "\n").encode())
        os.replace(tmp_model, path)
        tmp_model = None
        os.replace(tmp_json, sidecar)
        tmp_json = None
    finally:
        for leftover in (tmp_model, tmp_json):
            if leftover is not None and os.path.exists(leftover):
                os.remove(leftover)
    return info


def _load_model(model):
    import keras

    import keras_resnet.layers  # noqa: F401  registers the layers, so .keras files load in safe mode

    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        model_path = Path(model)
        if model_path.suffix != ".keras":
            raise ValueError("`model` must be a keras.Model or the path of a .keras file. "
                             f"Received: model={str(model)!r}")
        if not model_path.is_file():
            raise FileNotFoundError(f"`model`: no such file: {str(model_path)!r}")
        return keras.saving.load_model(model_path, compile=False)
    raise ValueError(f"`model` must be a keras.Model or the path of a .keras file. Received: model={model!r}")


def float32_model(model):
    """The Keras model that `to_tflite` converts and verifies against: float32 throughout.

    `model` is a `keras.Model` or the path of a ``.keras`` file. A mixed-precision model (float16 or
    bfloat16 compute, float32 weights) is rebuilt from its config with the float32 policy and given
    the same weights; a float32 model is returned as it is. A LiteRT file is float32 before any
    quantization, so this is the reference for its numbers.
    """
    return _float32(_load_model(model))[0]


def _float32(model):
    """``(float32 model, the mixed policies it was built with or "float32")``."""
    policies = {layer.dtype_policy.name for layer in model._flatten_layers(include_self=True, recursive=True)}
    mixed = sorted(p for p in policies if p.startswith("mixed_"))
    if not mixed:
        return model, "float32"

    def to_float32(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                return "float32"
            return {k: to_float32(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [to_float32(v) for v in obj]
        return obj

    copy = model.__class__.from_config(to_float32(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy, "+".join(mixed)


def _check_quantize(quantize, edge):
    if edge not in (True, False):
        raise ValueError(f"`edge` must be True or False. Received: edge={edge!r}")
    mode = "float32" if quantize is None else quantize
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"`quantize` must be None or one of {QUANTIZE_MODES}. "
                         f"Received: quantize={quantize!r}")
    if edge:
        if quantize is None:
            return "int8"
        if mode != "int8":
            raise ValueError("edge=True is full-integer: `quantize` must be 'int8' (or None, meaning "
                             f"'int8'). Received: quantize={quantize!r}")
    return mode


def _check_io_dtype(io_dtype, mode, edge):
    if io_dtype is not None and io_dtype not in IO_DTYPES:
        raise ValueError(f"`io_dtype` must be None or one of {IO_DTYPES}. Received: io_dtype={io_dtype!r}")
    if mode != "int8":
        if io_dtype not in (None, "float32"):
            raise ValueError(f"io_dtype={io_dtype!r} needs quantize='int8'; a {mode} file has float32 "
                             "input and output.")
        return "float32"
    if edge and io_dtype == "float32":
        raise ValueError("edge=True needs integer input and output: `io_dtype` must be 'int8' or "
                         "'uint8'. Received: io_dtype='float32'")
    return io_dtype or "int8"


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix != ".tflite":
        raise ValueError(f"`path` must be a file name ending in .tflite. Received: path={path!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`path` is a directory: {str(path)!r}. Give a file name ending in .tflite.")
    return path


def _check_batch_size(batch_size, edge):
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError("`batch_size` must be None (resizable) or a positive int. "
                         f"Received: batch_size={batch_size!r}")
    if edge:
        if batch_size not in (None, 1):
            raise ValueError(f"edge=True fixes the batch at 1. Received: batch_size={batch_size!r}")
        return 1
    return batch_size


def _model_input_shape(model):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"`model` must have one input and one output. Received: {len(model.inputs)} "
                         f"input(s) and {len(model.outputs)} output(s)")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"`model` must take images of a fixed size (H, W, C). Received: input shape "
                         f"{shape}; rebuild it with input_shape=(height, width, channels).")
    return tuple(int(d) for d in shape)


def _check_images(name, x, input_shape):
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


def _check_labels(labels, x):
    if labels is None:
        return None
    if x is None:
        raise ValueError("`verify_labels` were given without `verify_data`.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(x) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`verify_labels` must be one int label per image of `verify_data` ({len(x)}). "
                         f"Received: shape={labels.shape}, dtype={labels.dtype}")
    return labels


def _check_normalization(mean, std, channels):
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


def _check_class_names(class_names, classes):
    if class_names is None:
        return None
    if isinstance(class_names, str) or len(class_names) != classes:
        raise ValueError(f"`class_names` must list one name per output ({classes}). "
                         f"Received: class_names={class_names!r}")
    return [str(c) for c in class_names]


def _thresholds(mode, max_abs_diff, min_agreement, max_accuracy_drop):
    for name, value, low, high in (("max_abs_diff", max_abs_diff, 0, None),
                                   ("min_agreement", min_agreement, 0, 1),
                                   ("max_accuracy_drop", max_accuracy_drop, 0, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < low or (high is not None and value > high)):
            allowed = f"a number >= {low}" if high is None else f"a number in [{low}, {high}]"
            raise ValueError(f"`{name}` must be None or {allowed}. Received: {name}={value!r}")
    return {
        "max_abs_diff": FLOAT32_MAX_ABS_DIFF if max_abs_diff is None and mode == "float32" else max_abs_diff,
        "min_agreement": MIN_AGREEMENT.get(mode) if min_agreement is None else min_agreement,
        "max_accuracy_drop": MAX_ACCURACY_DROP if max_accuracy_drop is None else max_accuracy_drop,
    }


def _convert(model, mode, calibration, io_dtype, input_shape):
    """The SavedModel of `model` in a temporary folder, converted with built-in operators only."""
    import tensorflow as tf

    signature = [tf.TensorSpec(input_shape, tf.float32, name="input")]
    with tempfile.TemporaryDirectory(prefix="keras_resnet_export_") as saved_model:
        model.export(saved_model, format="tf_saved_model", input_signature=signature, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif mode == "int8":
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.as_dtype(io_dtype)
        try:
            return converter.convert()
        except Exception as e:  # the converter's errors name the operators it could not lower
            raise ExportError(
                f"LiteRT conversion ({mode}) failed with built-in operators only (Flex / TensorFlow "
                f"ops are not allowed, as most phone runtimes and delegates lack them): {e}") from e


def _rewrite(buffer, strip_names):
    """The same model, smaller: identical zero-point vectors stored once, and optionally no names.

    A per-channel quantized convolution stores a float32 scale and an int64 zero point per output
    channel for its kernel and again for its bias; the zero points are all 0 and the converter writes
    a copy of them for every tensor (18 KB of a 652 KB int8 ResNet-20 at width 1.5). FlatBuffers lets
    tables share a vector, so each distinct zero-point vector is written once; readers see the same
    values. With `strip_names`, the inner tensor names and the description go too; input, output and
    signature keep theirs.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(buffer))
    if strip_names:
        m.description = None
    shared = {}
    for graph in m.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for i, tensor in enumerate(graph.tensors):
            if strip_names and i not in keep:
                tensor.name = None
            if tensor.quantization is not None:
                tensor.quantization.Pack = _pack_sharing_zero_points(tensor.quantization, shared)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _pack_sharing_zero_points(q, shared):
    """`QuantizationParametersT.Pack` for `q` that reuses the zero-point vectors in `shared`."""
    from ai_edge_litert import schema_py_generated as schema

    def pack(builder):
        vectors = {name: builder.CreateNumpyVector(np.asarray(getattr(q, name), np.float32))
                   for name in ("min", "max", "scale") if getattr(q, name) is not None}
        if q.zeroPoint is not None:
            zero_point = np.asarray(q.zeroPoint, np.int64)
            key = zero_point.tobytes()
            if key not in shared:
                shared[key] = builder.CreateNumpyVector(zero_point)
            vectors["zeroPoint"] = shared[key]
        details = q.details.Pack(builder) if q.details is not None else None
        schema.QuantizationParametersStart(builder)
        for name, add in (("min", schema.QuantizationParametersAddMin),
                          ("max", schema.QuantizationParametersAddMax),
                          ("scale", schema.QuantizationParametersAddScale),
                          ("zeroPoint", schema.QuantizationParametersAddZeroPoint)):
            if name in vectors:
                add(builder, vectors[name])
        schema.QuantizationParametersAddDetailsType(builder, q.detailsType)
        if details is not None:
            schema.QuantizationParametersAddDetails(builder, details)
        schema.QuantizationParametersAddQuantizedDimension(builder, q.quantizedDimension)
        return schema.QuantizationParametersEnd(builder)

    return pack


def _write_temporary(final, data):
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return name


# ---------------------------------------------------------------------------------------------------
# The written file: operators and BatchNorm folding


def analyze(tflite_model):
    """Operators of a ``.tflite`` file (a path or its bytes) and how its BatchNorms were converted.

    Returns:
        A dict: ``ops`` (operator name -> count, Flex and custom operators as ``CUSTOM:<name>``),
        ``conv_ops`` (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), ``bn_unfolded`` (MUL by a
        constant on the output of a convolution that feeds nothing else: a BatchNorm the converter
        should have folded), ``bn_standalone`` (other MULs by a constant: BatchNorms that cannot fold,
        such as those of pre-activation blocks, which follow an addition) and ``float_tensors``
        (float32 and float16 tensors).
    """
    from ai_edge_litert import schema_py_generated as schema

    if isinstance(tflite_model, (str, os.PathLike)):
        data = Path(tflite_model).read_bytes()
    else:
        data = bytes(tflite_model)
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    float_types = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16}
    ops, unfolded, standalone, float_tensors = collections.Counter(), 0, 0, 0
    for graph in m.subgraphs:
        kinds, producer, consumers = [], {}, collections.Counter()
        for op in graph.operators:
            code = m.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "UNKNOWN")
            if name == "CUSTOM":
                name = "CUSTOM:" + (code.customCode or b"?").decode(errors="replace")
            kinds.append(name)
            for t in op.outputs if op.outputs is not None else ():
                producer[int(t)] = name
            consumers.update(int(t) for t in (op.inputs if op.inputs is not None else ()))
        for op, name in zip(graph.operators, kinds):
            ops[name] += 1
            if name != "MUL":
                continue
            inputs = [int(t) for t in op.inputs]
            # A MUL on the output of a convolution that feeds nothing else is a BatchNorm the converter
            # should have folded (its scale may be a constant or, with unfrozen variables, computed).
            # A pre-activation block's identity shortcut also reads the raw output: that one cannot fold.
            if any(producer.get(t) in _PRODUCERS_OF_FOLDABLE_BN and consumers[t] == 1 for t in inputs):
                unfolded += 1
            elif any(_is_constant(m, graph, t) for t in inputs):
                standalone += 1
        float_tensors += sum(t.type in float_types for t in graph.tensors)
    conv = sum(ops[k] for k in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))
    return {"ops": dict(ops.most_common()), "conv_ops": conv, "bn_unfolded": unfolded,
            "bn_standalone": standalone, "float_tensors": int(float_tensors)}


def _is_constant(m, graph, t):
    if t < 0:
        return False
    buffer = m.buffers[graph.tensors[t].buffer]
    if buffer is None:
        return False
    return (buffer.data is not None and len(buffer.data) > 0) or (buffer.size or 0) > 0


def _check_graph(graph, path, edge):
    ops = graph["ops"]
    foreign = sorted(k for k in ops if k.startswith(("CUSTOM", "UNKNOWN")) or k.startswith("Flex"))
    if foreign:
        raise ExportError(f"{path}: the converted model holds non-built-in operators {foreign}; only "
                          "LiteRT built-in operators are allowed. Nothing was written.")
    if graph["bn_unfolded"]:
        raise ExportError(
            f"{path}: {graph['bn_unfolded']} BatchNorm(s) were not folded into the convolution before "
            f"them (MUL on a convolution's output); operators: {ops}. Nothing was written.")
    if edge:
        outside = sorted(set(ops) - EDGE_OPS)
        if outside:
            raise ExportError(
                f"{path}: edge profile: operators {outside} are outside the Edge TPU / NPU allow-list "
                f"{sorted(EDGE_OPS)} and would run on the CPU. Nothing was written.")
        if graph["float_tensors"]:
            raise ExportError(f"{path}: edge profile: {graph['float_tensors']} float tensors remain; "
                              "the model must be integer end to end. Nothing was written.")


# ---------------------------------------------------------------------------------------------------
# Verification and the sidecar


def _verify(keras_out, lite_out, labels, thresholds, mode, path):
    k_top, l_top = keras_out.argmax(-1), lite_out.argmax(-1)
    result = {
        "max_abs_diff": float(np.abs(keras_out - lite_out).max()),
        "top1_agreement": float(np.mean(k_top == l_top)),
    }
    if labels is not None:
        result["keras_accuracy"] = float(np.mean(k_top == labels))
        result["tflite_accuracy"] = float(np.mean(l_top == labels))
    result["thresholds"] = thresholds
    failures = []
    if thresholds["max_abs_diff"] is not None and result["max_abs_diff"] > thresholds["max_abs_diff"]:
        failures.append(f"max |LiteRT - Keras| = {result['max_abs_diff']:.3g} > "
                        f"max_abs_diff={thresholds['max_abs_diff']:g}")
    if thresholds["min_agreement"] is not None and result["top1_agreement"] < thresholds["min_agreement"]:
        failures.append(f"top-1 agreement with Keras {result['top1_agreement']:.4f} < "
                        f"min_agreement={thresholds['min_agreement']:g}")
    if labels is not None:
        drop = result["keras_accuracy"] - result["tflite_accuracy"]
        if drop > thresholds["max_accuracy_drop"]:
            failures.append(f"accuracy {result['tflite_accuracy']:.4f} vs Keras "
                            f"{result['keras_accuracy']:.4f}, a drop of {drop:.4f} > "
                            f"max_accuracy_drop={thresholds['max_accuracy_drop']:g}")
    if failures:
        hint = (" Calibrate on more, and more representative, images (representative_data, "
                "calibration_count), or relax" if mode == "int8" else " Relax")
        raise ExportError(
            f"{path}: verification of the {mode} file against Keras failed on {len(keras_out)} images: "
            + "; ".join(failures) + f". Nothing was written.{hint} the threshold if this is expected "
            "(an untrained model's near-uniform outputs flip easily).")
    return result


def _sidecar(model, path, size, mode, edge, tflite_file, normalization, class_names, graph,
             verification, calibration_images):
    import keras
    import tensorflow as tf

    interpreter = _interpreter(tflite_file)
    io = {}
    details = (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0]))
    for key, d in details:
        scale, zero_point = d["quantization"]
        io[key] = {"shape": [int(s) for s in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name,
                   "scale": float(scale), "zero_point": int(zero_point)}
    return {
        "file": path.name,
        "file_size": int(size),
        "model": model.name,
        "quantize": mode,
        "edge": edge,
        "input": io["input"],
        "output": io["output"],
        "normalization": None if normalization is None else {
            **normalization, "formula": "(pixels / 255 - mean) / std"},
        "class_names": class_names,
        "ops": graph["ops"],
        "batch_norm": {
            "keras_layers": sum(isinstance(layer, keras.layers.BatchNormalization)
                                for layer in model._flatten_layers(include_self=False, recursive=True)),
            "conv_ops": graph["conv_ops"],
            "unfolded": graph["bn_unfolded"],
            "standalone": graph["bn_standalone"],
        },
        "calibration_images": calibration_images,
        "verification": verification,
        "converter": "tf.lite.TFLiteConverter.from_saved_model "
                     f"(TensorFlow {tf.__version__}, Keras {keras.__version__})",
    }


def sidecar_path(tflite_path):
    """``model.tflite`` -> ``model.json``."""
    return Path(tflite_path).with_suffix(".json")


def read_sidecar(tflite_path):
    """The sidecar dict written next to a ``.tflite`` file by `to_tflite`."""
    side = sidecar_path(tflite_path)
    if not side.is_file():
        raise FileNotFoundError(f"{str(side)!r}: no sidecar next to {str(tflite_path)!r}; it is written by "
                                "keras_resnet.export.to_tflite and holds the normalisation and class names.")
    return json.loads(side.read_text())


# ---------------------------------------------------------------------------------------------------
# Inference


def _interpreter(tflite_path, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter

    if not Path(tflite_path).is_file():
        raise FileNotFoundError(f"no such .tflite file: {str(tflite_path)!r}")
    return Interpreter(model_path=str(tflite_path), num_threads=num_threads)


def run(tflite_path, x, *, num_threads=None, batch_size=64):
    """Runs a ``.tflite`` classifier on normalised float32 images; returns float32 outputs ``(N, K)``.

    Integer inputs are quantized and integer outputs dequantized with the file's own scale and zero
    point, so any file from `to_tflite` is called the same way. A resizable batch runs `batch_size`
    images at a time; a fixed one, its own size.
    """
    interpreter = _interpreter(tflite_path, num_threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"`x` must be images of shape (N, {', '.join(map(str, inp['shape'][1:]))}), the "
                         f"file's input. Received: shape={x.shape}")
    fixed = int(inp["shape_signature"][0]) != -1
    step = int(inp["shape"][0]) if fixed else batch_size
    results, allocated = [], None
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        n = len(chunk)
        if fixed and n < step:  # pad the last chunk of a fixed batch
            chunk = np.concatenate([chunk, np.zeros((step - n,) + chunk.shape[1:], np.float32)])
        if not fixed and allocated != len(chunk):
            interpreter.resize_tensor_input(inp["index"], [len(chunk)] + list(inp["shape"][1:]))
            allocated = None
        if allocated != len(chunk):
            interpreter.allocate_tensors()
            allocated = len(chunk)
        interpreter.set_tensor(inp["index"], _quantize(chunk, inp))
        interpreter.invoke()
        results.append(_dequantize(interpreter.get_tensor(out["index"]), out)[:n])
    if not results:
        return np.zeros((0,) + tuple(out["shape"][1:]), np.float32)
    return np.concatenate(results)


def _quantize(x, detail):
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    if np.dtype(detail["dtype"]) == np.float32:
        return y.copy()
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale


def predict(tflite_path, images, top=5, *, num_threads=None):
    """Top classes of uint8 images with a ``.tflite`` file from `to_tflite` and its sidecar.

    The images are normalised with the sidecar's mean and std and quantized when the file's input is
    integer, exactly as in training.

    Args:
        tflite_path: a ``.tflite`` file with its ``.json`` sidecar next to it.
        images: uint8 pixels, ``(N, H, W, C)`` or one ``(H, W, C)``, at the model's input size (see
            `load_images` for files).
        top: how many classes to return per image.
        num_threads: LiteRT CPU threads (default: LiteRT's choice).

    Returns:
        One list per image of ``(class_index, class_name, probability)`` tuples, best first;
        ``class_name`` is the index as a string when the sidecar has no class names.
    """
    info = read_sidecar(tflite_path)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 pixels (0-255). Received: dtype={images.dtype}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"`top` must be a positive int. Received: top={top!r}")
    norm = info.get("normalization")
    if norm is None:
        raise ValueError(f"{str(sidecar_path(tflite_path))!r} has no normalisation: export with `mean` and "
                         "`std` (the training statistics) so that images can be fed as in training.")
    x = (images.astype(np.float32) / 255 - np.float32(norm["mean"])) / np.float32(norm["std"])
    probs = run(tflite_path, x, num_threads=num_threads)
    names = info.get("class_names") or [str(i) for i in range(probs.shape[-1])]
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :top]
    return [[(int(c), names[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


def load_images(paths, input_shape):
    """Reads image files (or uint8 arrays) as uint8 ``(N, H, W, C)`` for a model input ``(H, W, C)``.

    Each image is converted to grayscale (C = 1) or RGB (C = 3) and resized with bilinear filtering
    to ``H x W``. Fashion-MNIST is light clothing on a black background; photos of the opposite
    polarity are not inverted.
    """
    from PIL import Image

    h, w, c = (int(d) for d in input_shape)
    if c not in (1, 3):
        raise ValueError(f"image files give 1 (grayscale) or 3 (RGB) channels; the model takes {c}.")
    out = []
    for item in paths:
        if isinstance(item, np.ndarray):
            image = Image.fromarray(item.squeeze(-1) if item.ndim == 3 and item.shape[-1] == 1 else item)
        else:
            if not Path(item).is_file():
                raise FileNotFoundError(f"no such image file: {str(item)!r}")
            image = Image.open(item)
        image = image.convert("L" if c == 1 else "RGB")
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        out.append(np.asarray(image, np.uint8).reshape(h, w, c))
    return np.stack(out) if out else np.zeros((0, h, w, c), np.uint8)
