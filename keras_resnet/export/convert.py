"""`to_tflite`: conversion, the edits after it, verification against Keras, and the written file."""

import dataclasses
import tempfile

import numpy as np

from keras_resnet.utils import io_utils
from keras_resnet.utils.checks import check_bool, check_int
from keras_resnet.export import camera, graph, metadata
from keras_resnet.export import options as options_lib
from keras_resnet.export.options import ExportError, ExportOptions
from keras_resnet.export.interpreter import io_details, run, sidecar_path

_RANDOM_VERIFY_IMAGES = 32  # float32 without data: the numerics check runs on seeded random inputs


def to_tflite(model, path, options=None, representative_data=None, *, verify_data=None, verify_labels=None,
              mean=None, std=None, class_names=None, verbose=False, transforms=None):
    """Converts a Keras model to a verified LiteRT (``.tflite``) file with metadata and a JSON sidecar.

    The file takes camera pixels (see `rgb_input`) and holds TFLite Model Metadata (name, description,
    the input image's color space, size and normalisation, the class names as a label file, the
    quantization the converter set), so MediaPipe Tasks' ImageClassifier uses it as it is; the sidecar
    (``model.tflite`` -> ``model.json``) holds the same facts and the verification figures for Python.
    Checks, before anything is written (a failed one raises `ExportError` and leaves any existing file
    untouched):

    1. operators: built-in only (no Flex / custom ops); every BatchNorm that follows a convolution is
       folded into it (no MUL left on a convolution's output); with ``edge=True``, only `EDGE_OPS` and
       no float tensors.
    2. numerics of the finished file, on `verify_data` (else `representative_data`; for float32
       without either, seeded random inputs), against the Keras model with the same input map in
       front: float32 must match within `max_abs_diff`; quantized files must agree with Keras's top-1
       class on at least `min_agreement` of the images, and with `verify_labels` lose at most
       `max_accuracy_drop` of accuracy.

    Args:
        model: a `keras.Model` with one image input of fixed size, or the path of a ``.keras`` file.
        path: the ``.tflite`` file to write; the sidecar is the same path with ``.json``.
        options: an `ExportOptions` (what the file is and how strictly it is verified), or a mode name
            as a shorthand for ``ExportOptions(quantize=name)``: None or "float32" (no quantization),
            "float16" (float16 weights), "dynamic" (int8 weights, float activations quantized on the
            fly) or "int8" (full integer: int8 weights and activations, calibrated on
            `representative_data`). Its fields:

            - ``calibration_count``: how many representative images calibrate int8 (a seeded sample).
            - ``io_dtype``: input and output type of an "int8" file: "int8", "uint8", or "float32"
              (int8 inside, with QUANTIZE / DEQUANTIZE at the ends). Default "int8", and "uint8" with
              ``rgb_input`` (MediaPipe reads uint8 and float32 outputs), where the input is always
              0-255 pixels: uint8, or float32 for "float32".
            - ``edge``: the Edge TPU / NPU profile: full int8 (``quantize`` None means "int8"), batch
              fixed at 1, int8 or uint8 I/O, and only `EDGE_OPS`.
            - ``batch_size``: a fixed batch size, or None for a resizable batch (1 with ``edge``).
            - ``rgb_input``: camera-ready input (default: True for a grayscale or RGB model when `mean`
              and `std` are given): the file takes 0-255 RGB pixels (uint8 for int8 files, float32
              otherwise) and normalises them inside; a grayscale model gets their luminance. False
              keeps the model's own input (normalised images of its channel count).
            - ``max_abs_diff``: largest allowed difference of any output from Keras's; default 1e-4
              for float32 and unchecked for quantized files.
            - ``min_agreement``: smallest allowed top-1 agreement with Keras; default
              `MIN_AGREEMENT[quantize]` for quantized files and unchecked for float32.
            - ``max_accuracy_drop``: largest allowed accuracy loss against Keras on the labelled
              images (default 0.01, one point).
            - ``strip_names``: drop the names of the inner tensors, for a smaller file (ResNet-20:
              9.5 KiB of a 1.1 MB float32 file). The input, the output and the signature keep theirs.
        representative_data: normalised float32 training images ``(N, H, W, C)``, as the model sees
            them; required for "int8".
        verify_data: normalised float32 images to verify on, e.g. a slice of the test set.
        verify_labels: int labels of `verify_data`, to report and check accuracy.
        mean: per-channel mean of the normalisation ``(pixels / 255 - mean) / std`` (or one number).
        std: per-channel standard deviation, likewise.
        class_names: names of the classes: the file's label list and the sidecar's.
        verbose: let TensorFlow's and MLIR's native log lines of the conversion through.
        transforms: the run's transforms (``config.json``'s ``transforms``), recorded in the sidecar
            so that ``predict`` applies the run's evaluation transform to image files.

    Returns:
        The sidecar as a dict (also written next to the file).

    Raises:
        ValueError / TypeError: for bad arguments, naming the argument and the value received.
        OSError: when `path`'s folder does not take new files.
        ExportError: when a check fails; nothing is written.

    Example:

    >>> import keras_resnet, numpy as np
    >>> model = keras_resnet.build(blocks=(1, 1, 1), width=0.25, input_shape=(28, 28, 1), num_classes=10)
    >>> images = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype("float32")
    >>> info = to_tflite(model, "resnet8.tflite", ExportOptions(quantize="float16", min_agreement=0.5),
    ...                  verify_data=images, mean=[0.286], std=[0.353], class_names=list("abcdefghij"))
    >>> info["quantize"], info["input"]["dtype"], info["class_names"][:3]
    ('float16', 'float32', ['a', 'b', 'c'])
    """
    _check_backend()
    opts = ExportOptions.of(options)
    mode = options_lib.check_mode(opts.quantize, opts.edge)
    edge, strip_names, calibration_count = opts.edge, opts.strip_names, opts.calibration_count
    io_dtype_arg, io_dtype = opts.io_dtype, options_lib.check_io_dtype(opts.io_dtype, mode, edge)
    check_int("calibration_count", calibration_count, minimum=1)
    check_bool("strip_names", strip_names)
    if mode == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data`: normalised float32 training images "
            "(N, H, W, C) to calibrate the activation ranges, e.g. "
            "keras_resnet.data.calibration_images(x_train, info). Received: representative_data=None")
    thresholds = options_lib.thresholds(mode, opts.max_abs_diff, opts.min_agreement, opts.max_accuracy_drop)
    batch_size = options_lib.check_batch_size(opts.batch_size, edge)

    model, policy = _float32(_load_model(model))
    input_shape = options_lib.model_input_shape(model)
    representative_data = options_lib.check_images("representative_data", representative_data, input_shape)
    verify_data = options_lib.check_images("verify_data", verify_data, input_shape)
    verify_labels = options_lib.check_labels(verify_labels, verify_data)
    normalization = options_lib.check_normalization(mean, std, input_shape[-1])
    plan = _FilePlan(mode, edge, camera.front(input_shape[-1], opts.rgb_input, normalization),
                 options_lib.check_class_names(class_names, model.outputs[0].shape[-1]), strip_names)
    x_verify, source, verify_labels = _verification_images(mode, verify_data, verify_labels,
                                                          representative_data, input_shape)
    calibration = _calibration(mode, representative_data, calibration_count)
    path = options_lib.check_output_path(path)

    app_model = plan.front.with_input_map(model)
    out_dtype = "uint8" if plan.front.rgb and mode == "int8" and io_dtype_arg is None else io_dtype
    in_dtype = "uint8" if plan.front.rgb and out_dtype != "float32" else out_dtype
    shape = (batch_size,) + input_shape[:2] + (plan.front.input_channels,)
    with _native_logs(verbose):
        buffer = _convert(app_model, mode, plan.front.file_input(calibration), (in_dtype, out_dtype), shape)
    buffer = graph.rewrite(buffer, pixel_input=in_dtype == "uint8" and plan.front.rgb,
                           strip_names=strip_names)
    info = {**_file_description(model, buffer, plan, normalization), "trained_dtype_policy": policy,
            "transforms": transforms}
    buffer = _with_metadata(buffer, info)

    ops = graph.analyze(buffer)
    graph.check_graph(ops, path, edge)
    x_in = plan.front.file_input(x_verify)
    verification = _verify(_keras_predict(app_model, x_in), run(buffer, x_in), verify_labels, thresholds,
                           mode, path)
    verification.update(images=int(len(x_verify)), source=source)
    info.update(file=path.name, file_size=len(buffer), ops=ops["ops"],
                batch_norm=_batch_norm_counts(model, ops),
                calibration_images=None if calibration is None else int(len(calibration)),
                verification=verification)
    io_utils.write_bytes(path, buffer)
    io_utils.write_json(sidecar_path(path), info, indent=2)
    return info


@dataclasses.dataclass(frozen=True)
class _FilePlan:
    """The checked decisions about the file to write: its quantization mode, the edge profile, the input
    map in front of the model (`camera.Front`), its label list and whether inner names are stripped."""

    mode: str
    edge: bool
    front: camera.Front
    class_names: list
    strip_names: bool


def _with_metadata(buffer, info):
    """The converted model with TFLite Metadata from the facts `info`, and its label file appended."""
    buffer = graph.rewrite(buffer, metadata=metadata.metadata_buffer(info))
    if info["class_names"] is not None:
        buffer = metadata.append_archive(buffer, metadata.label_archive(info["class_names"]))
    return buffer


def _check_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            f"to_tflite needs the TensorFlow backend; this process runs {keras.backend.backend()!r}, whose "
            "SavedModel keeps the variables, so no BatchNorm folds. Save the model (model.save('m.keras')) "
            "and export that file with KERAS_BACKEND=tensorflow.")


def _load_model(model):
    import keras

    if isinstance(model, keras.Model):
        return model
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return io_utils.load_model(model, "model")
    raise TypeError(f"`model` must be a keras.Model or the path of a .keras file. Received: model={model!r}")


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
            return {k: "float32" if k == "dtype" and str(v).startswith("mixed_") else to_float32(v)
                    for k, v in obj.items()}
        if isinstance(obj, list):
            return [to_float32(v) for v in obj]
        return obj

    copy = model.__class__.from_config(to_float32(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy, "+".join(mixed)


def _verification_images(mode, verify_data, verify_labels, representative_data, input_shape):
    if verify_data is not None:
        return verify_data, "verify_data", verify_labels
    if representative_data is not None:
        return representative_data, "representative_data", None
    if mode == "float32":
        rng = np.random.default_rng(0)
        return rng.standard_normal((_RANDOM_VERIFY_IMAGES,) + input_shape, np.float32), "random", None
    raise ValueError(
        f"quantize={mode!r} is verified on real images: pass `verify_data` (normalised float32 "
        "images, e.g. part of the test set) or `representative_data`. Received neither.")


def _calibration(mode, representative_data, count):
    if mode != "int8":
        return None
    if len(representative_data) <= count:
        return representative_data
    pick = np.random.default_rng(0).choice(len(representative_data), count, replace=False)
    return representative_data[np.sort(pick)]


def _native_logs(verbose):
    from keras_resnet.utils.io_utils import quiet_native_logs

    return quiet_native_logs(enabled=not verbose)


def _convert(model, mode, calibration, io_dtypes, input_shape):
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
            converter.inference_input_type = tf.as_dtype(io_dtypes[0])
            converter.inference_output_type = tf.as_dtype(io_dtypes[1])
        try:
            return converter.convert()
        except Exception as e:  # noqa: BLE001 -- the converter's errors name the operators it could not lower
            raise ExportError(
                f"LiteRT conversion ({mode}) failed with built-in operators only (Flex / TensorFlow "
                f"ops are not allowed, as most phone runtimes and delegates lack them): {e}") from e


def _keras_predict(model, x):
    import keras

    return keras.ops.convert_to_numpy(model.predict(x, batch_size=256, verbose=0))


def _file_description(model, buffer, plan, normalization):
    """The sidecar's description of the converted file (model, architecture, mode, input and output
    tensors with their ranges, normalisation, class names, converter); its TFLite Metadata is written
    from this dict."""
    import keras
    import tensorflow as tf

    import keras_resnet

    inp, out = io_details(buffer)
    inp.update(color_space=plan.front.color_space, normalization=plan.front.input_normalization(),
               normalized_inside=plan.front.rgb)
    inp["range"] = _range(inp)
    out["range"] = _range(out, _softmax(model))
    return {
        "model": model.name,
        "architecture": _architecture(model),
        "version": keras_resnet.__version__,
        "quantize": plan.mode,
        "edge": plan.edge,
        "input": inp,
        "output": out,
        "normalization": None if normalization is None else {
            **normalization, "formula": "(pixels / 255 - mean) / std"},
        "class_names": plan.class_names,
        "names_stripped": plan.strip_names,
        "converter": "tf.lite.TFLiteConverter.from_saved_model "
                     f"(TensorFlow {tf.__version__}, Keras {keras.__version__})",
    }


def _range(tensor, unit=False):
    """``[low, high]`` of a tensor's real values: its quantized range, or for a float input the
    normalised 0-255 pixels, or [0, 1] for a softmax output; None when unknown."""
    if tensor["dtype"] != "float32":
        q = np.iinfo(tensor["dtype"])
        scale, zero_point = tensor["scale"], tensor["zero_point"]
        return [scale * (q.min - zero_point), scale * (q.max - zero_point)]
    norm = tensor.get("normalization")
    if norm is not None:
        mean, std = np.asarray(norm["mean"]), np.asarray(norm["std"])
        return [float(np.min(-mean / std)) + 0.0, float(np.max((255 - mean) / std))]
    return [0.0, 1.0] if unit else None


def _softmax(model):
    last = model.layers[-1]
    return getattr(getattr(last, "activation", None), "__name__", None) == "softmax"


def _architecture(model):
    from keras_resnet.models.resnet import ResNet, config_of

    if not isinstance(model, ResNet):
        return None
    return io_utils.jsonable(config_of(model))


def _batch_norm_counts(model, ops):
    import keras

    return {
        "keras_layers": sum(isinstance(layer, keras.layers.BatchNormalization)
                            for layer in model._flatten_layers(include_self=False, recursive=True)),
        "conv_ops": ops["conv_ops"],
        "unfolded": ops["bn_unfolded"],
        "standalone": ops["bn_standalone"],
    }


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
