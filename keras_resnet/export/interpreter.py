"""Running exported files with ``ai_edge_litert``: numpy in, numpy out, Pillow for image files.

TensorFlow is not imported here: an app-side Python process needs only LiteRT, numpy and Pillow.
"""

import json
import os
from pathlib import Path

import numpy as np

from keras_resnet.utils.checks import check_int


def sidecar_path(tflite_path):
    """``model.tflite`` -> ``model.json``."""
    return Path(tflite_path).with_suffix(".json")


def read_sidecar(tflite_path):
    """The sidecar dict written next to a ``.tflite`` file by `to_tflite`."""
    side = sidecar_path(_check_path("tflite_path", tflite_path))
    if not side.is_file():
        raise FileNotFoundError(f"{str(side)!r}: no sidecar next to {str(tflite_path)!r}; it is written by "
                                "keras_resnet.export.to_tflite and holds the normalisation and class names.")
    try:
        return json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(side)!r} is not a readable sidecar (truncated or corrupt?): {e}") from None


def _check_path(name, path):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"`{name}` must be a file path (str or os.PathLike). Received: {name}={path!r}")
    return Path(path)


def _interpreter(model, num_threads=None):
    """An interpreter of a ``.tflite`` path or of its bytes."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), num_threads=num_threads)
    path = _check_path("tflite_path", model)
    if not path.is_file():
        raise FileNotFoundError(f"no such .tflite file: {str(path)!r}")
    try:
        return Interpreter(model_path=str(path), num_threads=num_threads)
    except ValueError as e:
        raise ValueError(f"{str(path)!r} is not a readable .tflite file (truncated or corrupt?): "
                         f"{str(e).splitlines()[0]}") from None


def io_details(model):
    """``(input, output)`` of a ``.tflite`` path or bytes: shape (-1 for a resizable batch), dtype,
    scale and zero point (0.0 and 0 for float tensors)."""
    interpreter = _interpreter(model)
    result = []
    for d in (interpreter.get_input_details()[0], interpreter.get_output_details()[0]):
        scale, zero_point = d["quantization"]
        result.append({"shape": [int(s) for s in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name,
                       "scale": float(scale), "zero_point": int(zero_point)})
    return tuple(result)


def run(tflite_path, x, *, num_threads=None, batch_size=64):
    """Runs a ``.tflite`` classifier (a path, or the file's bytes) on float32 inputs; returns float32
    outputs ``(N, K)``.

    `x` holds the real values of the file's input: normalised images for most files, 0-255 pixels
    for those that normalise inside (the sidecar's ``input.normalization`` says how pixels map to the
    input; `predict` applies it). Integer inputs are quantized and integer outputs dequantized with
    the file's own scale and zero point, so any file from `to_tflite` is called the same way. A
    resizable batch runs `batch_size` images at a time; a fixed one, its own size.
    """
    check_int("batch_size", batch_size, minimum=1)
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

    The images are mapped to the file's input as its sidecar says (normalised as in training, or
    given as pixels to a file that normalises inside) and quantized when the input is integer.

    Args:
        tflite_path: a ``.tflite`` file with its ``.json`` sidecar next to it.
        images: uint8 pixels, ``(N, H, W, C)`` or one ``(H, W, C)``, at the file's input size (see
            `load_images` for files); grayscale images are repeated to RGB for an RGB input.
        top: how many classes to return per image.
        num_threads: LiteRT CPU threads (default: LiteRT's choice).

    Returns:
        One list per image of ``(class_index, class_name, probability)`` tuples, best first;
        ``class_name`` is the index as a string when the sidecar has no class names.
    """
    info = read_sidecar(tflite_path)
    check_int("top", top, minimum=1)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 pixels (0-255). Received: dtype={images.dtype}")
    if info["input"].get("normalization") is None:
        raise ValueError(f"{str(sidecar_path(tflite_path))!r} has no normalisation: export with `mean` and "
                         "`std` (the training statistics) so that images can be fed as in training.")
    probs = run(tflite_path, input_values(info, images), num_threads=num_threads)
    names = info.get("class_names") or [str(i) for i in range(probs.shape[-1])]
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :top]
    return [[(int(c), names[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


def input_values(sidecar, images):
    """uint8 images ``(N, H, W, C)`` -> the real values of a file's input, as its sidecar says:
    ``(pixels - mean) / std`` with the input's normalisation; grayscale images are repeated to RGB for
    an RGB input."""
    norm = sidecar["input"]["normalization"]
    if images.shape[-1] == 1 and sidecar["input"]["shape"][-1] == 3:
        images = np.repeat(images, 3, axis=-1)
    return (images.astype(np.float32) - np.float32(norm["mean"])) / np.float32(norm["std"])


def load_images(paths, input_shape, transforms=None):
    """Reads image files (or uint8 arrays) as uint8 ``(N, H, W, C)`` for a model input ``(H, W, C)``.

    Files are decoded with the package's one decoder (`keras_resnet.data.images.read_image`, the one
    training reads folders with) to grayscale (C = 1) or RGB (C = 3), then brought to ``H x W`` by the
    run's evaluation transform: `transforms` is what the run folder and the sidecar record
    (``{"recipe": "photo", "crop_fraction": 0.875}``: shorter side resized, centre kept); None or the
    small-image recipe resizes bilinearly. Fashion-MNIST is light clothing on a black background;
    photos of the opposite polarity are not inverted.
    """
    from keras_resnet.data import images

    h, w, c = (int(d) for d in input_shape)
    if c not in (1, 3):
        raise ValueError(f"image files give 1 (grayscale) or 3 (RGB) channels; the model takes {c}.")
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(f"`paths` must be a list of image files or arrays. Received: paths={paths!r}")
    transforms = transforms or {}
    recipe = transforms.get("recipe") or "small"
    crop_fraction = transforms.get("crop_fraction") or images.CROP_FRACTION
    out = []
    for item in paths:
        if isinstance(item, np.ndarray):
            pixels = images.to_array(images.to_pil(item if item.ndim == 3 else item[..., None]), c)
            out.append(images.eval_transform(pixels, (h, w), recipe, crop_fraction))
            continue
        path = _check_path("paths", item)
        if not path.is_file():
            raise FileNotFoundError(f"no such image file: {str(path)!r}")
        try:  # a JPEG decoded at its reduced scale, as evaluation does
            out.append(images.read_for_eval(path, (h, w), recipe, crop_fraction, c))
        except images.ImageError as e:
            reason = str(e).split(": not a readable image: ", 1)[-1]
            raise ValueError(f"{str(path)!r} is not a readable image file (PNG, JPEG, BMP, ...): "
                             f"{reason}") from None
    return np.stack(out) if out else np.zeros((0, h, w, c), np.uint8)
