"""Where a model looks: Grad-CAM heat maps from the last residual stage, overlaid on the input.

Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"), as in keras.io's Grad-CAM example: the gradient of a class's score
(before the softmax) with respect to the last residual stage's output; each channel weighted by its
gradient averaged over the positions; the ReLU of the weighted sum of the channels, upsampled
(bilinear) to the input's size and scaled to [0, 1].

The images are read and normalised as `predict` does: `keras_resnet.export.load_images` (grayscale
or RGB, resized to the model's input) and the training normalisation recorded in the run folder next
to a ``.keras`` file (`keras_resnet.training.run_folder`). The arithmetic uses `keras.ops`; the gradient is the
backend's own (`keras_resnet.gradcam.tf_gradients`): the TensorFlow backend.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_resnet.utils import checks, io_utils

BACKENDS = ("tensorflow",)
BATCH = 32  # images per gradient computation


def target_layer(model):
    """The name of the last residual stage's output: ``post_relu`` (pre-activation) or the last block."""
    names = [layer.name for layer in model.layers]
    if "post_relu" in names:
        return "post_relu"
    blocks = [n for n in names if n.startswith("stage") and "_block" in n]
    if not blocks or "logits" not in names:
        raise ValueError(f"Grad-CAM needs a model made by keras_resnet.build with its classifier (layers "
                         f"`stage*_block*` and `logits`). Received: model={model.name!r} with layers "
                         f"{names[:3] + ['...'] + names[-3:] if len(names) > 6 else names}")
    return blocks[-1]


def heatmaps(model, x, class_indices=None, layer=None):
    """Grad-CAM maps of normalised images.

    Args:
        model: a classifier made by `keras_resnet.build` (with ``logits``).
        x: normalised images ``(N, H, W, C)``, as the model was trained on.
        class_indices: the class explained in each image (an int for all, or one per image); None: each
            image's top class.
        layer: the feature map's layer (default: `target_layer`, the last residual stage).

    Returns:
        ``(maps, probabilities, class_indices)``: maps ``(N, H, W)`` in [0, 1] (1 where the class's
        evidence is strongest; all 0 where no position raises the score), the softmax of the scores
        ``(N, K)``, and the explained classes.
    """
    if keras.backend.backend() not in BACKENDS:
        raise RuntimeError(f"Grad-CAM takes its gradient on the {' or '.join(BACKENDS)} backend; this "
                           f"process runs {keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow.")
    from keras_resnet.gradcam import tf_gradients as gradcam_tf

    layer = layer or target_layer(model)
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.input_shape[1:]):
        raise ValueError(f"`x` must be images of shape (N, {', '.join(map(str, model.input_shape[1:]))}). "
                         f"Received: shape {x.shape}")
    num_classes = model.get_layer("logits").output.shape[-1]
    if class_indices is not None:
        class_indices = np.broadcast_to(np.asarray(class_indices), (len(x),)).astype(np.int64)
        for c in class_indices:
            checks.check_int("class_index", int(c), 0, num_classes - 1)
    features = model.get_layer(layer).output
    features_model = keras.Model(model.inputs, features)
    head = keras.Model(features, model.get_layer("logits").output)  # the feature map -> the class scores
    features, gradients, logits, chosen = gradcam_tf.features_and_gradients(features_model, head, x,
                                                                             class_indices)
    weights = ops.mean(gradients, axis=(1, 2))  # one weight per channel
    cam = ops.relu(ops.sum(features * weights[:, None, None, :], axis=-1))
    cam = ops.relu(ops.image.resize(cam[..., None], x.shape[1:3], interpolation="bilinear")[..., 0])
    peak = ops.max(cam, axis=(1, 2), keepdims=True)
    cam = ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), 0.0)
    probs = ops.softmax(logits)
    return np.asarray(ops.convert_to_numpy(cam), np.float32), np.asarray(ops.convert_to_numpy(probs)), chosen


def explain(model, images, *, class_name=None, output=None, layer=None, normalization=None, class_names=None):
    """Grad-CAM of images: which parts of each image raise a class's score, one PNG per image.

    Args:
        model: a ``.keras`` file (its run folder gives the normalisation and class names) or a model
            made by `keras_resnet.build`.
        images: image files (PNG, JPEG, ...) or uint8 arrays ``(H, W, C)``, or one uint8 array
            ``(N, H, W, C)``; each is made grayscale or RGB and resized to the model's input, as
            `predict` does.
        class_name: the class to explain in every image (a class name, or its index); None: each
            image's top prediction.
        output: the folder of the PNGs (``gradcam_<image name>.png``: the image, and the heat map
            over it, titled with the top prediction and the explained class); None: no files.
        layer: the feature map (default: the last residual stage's output).
        normalization: ``{"mean": [...], "std": [...]}`` on the [0, 1] pixel scale; default: the
            run folder's (required for a model in memory).
        class_names: the class names; default: the run folder's (else the indices).

    Returns:
        One dict per image: ``image`` (its name), ``heatmap`` ``(H, W)`` in [0, 1], ``top`` and
        ``explained`` (each ``{"index", "name", "probability"}``) and ``file`` (the PNG, or None).

    Works on the TensorFlow backend (see `BACKENDS`).
    """
    from keras_resnet.data import pipelines
    from keras_resnet.training import run_folder
    from keras_resnet.export.interpreter import load_images

    defaults = None
    if isinstance(model, (str, os.PathLike)):
        defaults = run_folder.run_defaults(model)
        model = io_utils.load_model(model, "model")
    elif not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a .keras file or a keras.Model. Received: model={model!r}")
    normalization = normalization or (defaults or {}).get("normalization")
    if not (isinstance(normalization, dict) and "mean" in normalization and "std" in normalization):
        raise ValueError("`normalization` ({'mean': [...], 'std': [...]}, as in training) is needed: pass it, or "
                         "pass the path of a .keras file whose run folder records it (config.json). Received: "
                         f"normalization={normalization!r}")
    layer = layer or target_layer(model)
    num_classes = model.get_layer("logits").output.shape[-1]
    names = [str(n) for n in class_names or (defaults or {}).get("class_names") or range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"`class_names` must name the model's {num_classes} classes. Received: {len(names)} "
                         "names")
    index = _class_index(class_name, names)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if isinstance(images, (str, os.PathLike, np.ndarray)) or not len(images):
        raise TypeError("`images` must be a non-empty list of image files or uint8 arrays. Received: "
                        f"images={images!r:.80}")
    labels = [os.path.splitext(os.path.basename(os.fspath(i)))[0] if isinstance(i, (str, os.PathLike))
              else f"image{n}" for n, i in enumerate(images)]
    if len(set(labels)) < len(labels):  # files of the same name in different folders
        labels = [f"{n}_{label}" for n, label in enumerate(labels)]
    if output is not None:
        os.makedirs(output, exist_ok=True)
    results = []
    for start in range(0, len(images), BATCH):  # memory bounded by the batch, not the number of images
        pixels = load_images(images[start:start + BATCH], model.input_shape[1:])
        maps, probs, chosen = heatmaps(model, pipelines.normalize(pixels, normalization), index, layer)
        for n, label in enumerate(labels[start:start + BATCH]):
            result = {"image": label, "heatmap": maps[n], "top": _entry(np.argmax(probs[n]), names, probs[n]),
                      "explained": _entry(chosen[n], names, probs[n]), "file": None}
            if output is not None:
                result["file"] = plot_overlay(pixels[n], maps[n], os.path.join(output, f"gradcam_{label}.png"),
                                              result["top"], result["explained"])
            results.append(result)
    return results


def overlay(pixels, heatmap, alpha=0.45):
    """RGB uint8: `pixels` (H, W, 1 or 3) blended with the heat map in matplotlib's "jet" colours."""
    from matplotlib import colormaps

    rgb = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels
    heat = colormaps["jet"](np.asarray(heatmap))[..., :3] * 255.0
    return np.clip((1 - alpha) * rgb + alpha * heat, 0, 255).astype(np.uint8)


def plot_overlay(pixels, heatmap, path, top, explained):
    """The image and its Grad-CAM overlay side by side, titled with the top and explained classes."""
    fig = io_utils.new_figure(figsize=(4.4, 2.6))
    left, right = fig.subplots(1, 2)
    if pixels.shape[-1] == 1:
        left.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        left.imshow(pixels)
    left.set_title(f"top: {top['name']} {top['probability']:.2f}", fontsize=8)
    right.imshow(overlay(pixels, heatmap))
    right.set_title(f"Grad-CAM of {explained['name']}", fontsize=8)
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    return io_utils.save_figure(fig, path)


def _class_index(class_name, names):
    if class_name is None:
        return None
    if checks.is_int(class_name):
        return checks.check_int("class_name", class_name, 0, len(names) - 1)
    if class_name in names:
        return names.index(class_name)
    if isinstance(class_name, str) and class_name.isdigit() and int(class_name) < len(names):
        return int(class_name)
    raise ValueError(f"`class_name` must be one of the model's classes {names[:10]}"
                     f"{' ...' if len(names) > 10 else ''} or an index below {len(names)}. "
                     f"Received: class_name={class_name!r}")


def _entry(index, names, probs):
    return {"index": int(index), "name": names[int(index)], "probability": float(probs[int(index)])}
