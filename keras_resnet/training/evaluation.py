"""A trained model on test images: probabilities (with the mirrored images where training flipped),
accuracy and loss, predictions of a stream that keep memory flat, and `evaluate` of a saved model."""

import os

import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.training import diagnostics
from keras_resnet.utils import checks, io_utils


def stream_predictions(model, batches, info, batch_size, *, mirror=False, average=False, digest=None):
    """Predicts a stream of ``(x, y, weight)`` batches (normalised images; weight 0 for a file that
    did not decode) keeping what is small: ``(probs, flipped or None, labels, images)``, the last the
    uint8 images of the worst mistakes alone (`diagnostics.WorstMistakes`), so memory stays flat in
    the number of images. `mirror`: also the mirrored images' probabilities; `average`: return
    the average of the two as ``probs`` (test-time augmentation), ranking the mistakes by it.
    `digest`: a `keras_resnet.data.ExampleDigest` that every decoded image and its label are added to."""
    from keras_resnet.data.pipelines import scale_offset

    scale, offset = scale_offset(info)
    worst, seen, probs, flipped, labels = diagnostics.WorstMistakes(), 0, [], [], []
    for x, y, w in batches:
        kept = w.numpy() > 0
        x, y = x.numpy()[kept], y.numpy()[kept]
        p = predict_probs(model, x, batch_size=batch_size)
        f = predict_probs(model, _mirror(x), batch_size=batch_size) if mirror else None
        p = (p + f) / 2.0 if average else p

        def pixels(rows, x=x):  # the normalisation undone: the evaluation transform's pixels
            return np.clip(np.rint((x[rows] - offset) / scale), 0, 255).astype(np.uint8)

        worst.add(p, y, pixels, first=seen)
        if digest is not None:
            digest.add(pixels(slice(None)), y)
        seen += len(y)
        probs.append(p)
        labels.append(y)
        if mirror:
            flipped.append(f)
    if not probs:
        raise data_lib.DatasetError("no test images to evaluate.")
    return (np.concatenate(probs), np.concatenate(flipped) if mirror else None, np.concatenate(labels),
            worst.images)


def _stream_folder_for(model, folder, defaults, dataset):
    """`keras_resnet.training.run_folder.load_data_for` for an image folder, listed and not decoded: the test
    split's files, to stream through the run's evaluation transform. Returns ``(dataset, (paths,
    labels), info)``."""
    transforms = (defaults or {}).get("transforms") or {}
    test, info = data_lib.open_folder_test(folder, tuple(model.input_shape[1:3]), transforms)
    if defaults:
        info.update(defaults["normalization"] or {})
        info["class_names"] = defaults["class_names"] or info["class_names"]
    info["transforms"] = transforms or None
    return dataset, test, info


def _mirror(x):
    """Images (N, H, W, C) flipped left to right."""
    return np.ascontiguousarray(x[:, :, ::-1])


def _accuracy(probs, y):
    return float(np.mean(np.argmax(probs, -1) == y))


def predict_probs(model, x, flip=False, batch_size=256):
    """Class probabilities of normalised images `x` (N, H, W, C); ``flip=True`` averages them with the
    probabilities of the horizontally mirrored images (test-time augmentation; only for data whose
    training used flips, where a mirrored image is as likely as the original)."""
    probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype="float64")
    if flip:
        probs = (probs + predict_probs(model, _mirror(x), batch_size=batch_size)) / 2.0
    return probs


def test_accuracies(model, x, y, info, batch_size=256, probs=None):
    """``{"test_accuracy", "test_loss"}`` (plain cross-entropy) for normalised `x`, and
    ``"test_accuracy_flip_tta"`` (mirrored images averaged in) where the training used flips.
    `probs`: the model's probabilities of `x`, when the caller has them already."""
    probs = predict_probs(model, x, batch_size=batch_size) if probs is None else probs
    flipped = predict_probs(model, _mirror(x), batch_size=batch_size) if info.get("flip") else None
    return accuracies(probs, y, flipped)


def accuracies(probs, y, flipped=None):
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(y)), np.asarray(y).astype(int)], 1e-12, None)))
    result = {"test_accuracy": _accuracy(probs, y), "test_loss": float(loss)}
    if flipped is not None:
        result["test_accuracy_flip_tta"] = _accuracy(probs + flipped, y)
    return result


def evaluate(model_path, dataset=None, data_dir=None, download=False, batch_size=256, tta=False, output=None,
             test_size=None):
    """Test-split accuracy of a saved `.keras` model, per-class figures and pictures of its mistakes.

    ``tta=True`` averages each image's prediction with its mirror image's (refused for data whose
    training does not flip, such as digits). Without `dataset`, the dataset and normalisation of the
    run folder next to the file (its ``config.json``) are used, or Fashion-MNIST when there is none (a
    line says which). ``test_size`` evaluates a seeded sample of N test images, the one `train`'s keeps (a run
    trained with ``test_size=N`` reports the accuracy that ``evaluate(..., test_size=N)`` reproduces);
    only those are decoded or resized.

    Writes into `output` (default: the model's folder) ``confusion.png`` (normalised per true class),
    ``mistakes.png`` (the most confidently wrong test images) and ``evaluation.json`` (what this
    returns; see `keras_resnet.training.diagnostics`).

    Returns:
        ``{"model", "test_accuracy", "test_images", "tta", "per_class": {"classes": [{"class",
        "precision", "recall", "f1", "support"}, ...], "macro_avg", "weighted_avg", "accuracy"},
        "files"}``.
    """
    from keras_resnet.training import run_folder

    checks.check_int("test_size", test_size, 1, none_ok=True)
    model = io_utils.load_model(model_path, "model_path")
    resolved, defaults, note = run_folder.dataset_for(model_path, dataset)
    folder = data_lib.streamed_test_folder(resolved)
    if folder is not None:  # streamed: memory flat in the folder's size
        dataset, (x_test, y_test), info = _stream_folder_for(model, folder, defaults, resolved)
        index = data_lib.subset_index(y_test, test_size)  # the test images a run's test_size kept
        x_test, y_test = x_test[index], y_test[index]
    else:
        dataset, _, (x_test, y_test), info, note = run_folder.load_data_for(
            model, model_path, dataset, data_dir, download, train_count=0, test_count=test_size)
    if note:
        print(note, flush=True)
    if tuple(model.input_shape[1:]) != tuple(info["input_shape"]):
        raise ValueError(f"The model takes inputs of shape {model.input_shape[1:]}, but {dataset!r} "
                         f"has images of shape {tuple(info['input_shape'])}.")
    if tta and not info["flip"]:
        raise ValueError(f"`tta`=True averages over mirrored images, but {dataset!r} is not trained with "
                         "flips (mirrored images are not valid samples of it); evaluate it with tta=False.")
    output = os.fspath(output) if output is not None else os.path.dirname(os.path.abspath(os.fspath(model_path)))
    os.makedirs(output, exist_ok=True)
    digest = data_lib.ExampleDigest()  # what the figures are measured on
    if "stream" in info:
        from keras_resnet.data import streams

        bad = streams.BadFiles()
        probs, _, y_test, images = stream_predictions(
            model, streams.eval_stream(x_test, y_test, info, batch_size, bad=bad), info, batch_size,
            mirror=tta, average=tta, digest=digest)
        found = bad.new()
        if found:
            raise data_lib.DatasetError(f"{found[0][0]}: {found[0][1]} ({len(found)} test file(s) do not "
                                        "decode). Delete or replace it.")
    else:
        probs = predict_probs(model, data_lib.normalize(x_test, info), flip=tta, batch_size=batch_size)
        images = x_test
        digest.add(x_test, y_test)
    report = diagnostics.write_pictures(output, probs, y_test, images, info["class_names"], title=model.name)
    files = report.pop("files")
    result = {"model": os.fspath(model_path), "dataset": str(dataset), "test_accuracy": _accuracy(probs, y_test),
              "test_images": int(len(y_test)), "tta": "flip" if tta else None,
              "data": {"test": digest.record(data_lib.split_name(info, "test"))}, "per_class": report}
    files["evaluation_json"] = os.path.join(output, "evaluation.json")
    result["files"] = files
    io_utils.write_json(files["evaluation_json"], result, indent=2)
    return result
