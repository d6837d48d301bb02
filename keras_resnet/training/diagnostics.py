"""What a classifier gets wrong: confusion matrix, per-class precision/recall/F1, its worst mistakes.

NumPy computes the figures and matplotlib (a `Figure` of its own, never pyplot) draws them, so the
training path needs nothing more than it has. `evaluate` and every training run write, from the test
split's predicted probabilities:

- ``confusion.png``: the confusion matrix normalised per true class (each row sums to 1), class names
  on the axes. Up to 100 classes are all shown, the labels shrinking with their number; beyond that,
  the block of the `MAX_SHOWN` classes most involved in confusions.
- ``mistakes.png``: a grid of the test images the model gets most confidently wrong, each with its true
  and predicted class and the probability given to the wrong one.
- per-class precision, recall, F1 and support (`per_class_metrics`), recorded in the JSON next to them.
"""

import os

import numpy as np

from keras_resnet.utils import checks, io_utils

MAX_SHOWN = 100  # classes drawn in confusion.png; more: the most-confused block of this many
ANNOTATE_UP_TO = 12  # classes whose cells carry their value as text
MISTAKES = 16  # images in mistakes.png


def confusion_matrix(y_true, y_pred, num_classes):
    """Counts ``(num_classes, num_classes)``: row = true class, column = predicted class."""
    checks.check_int("num_classes", num_classes, 1)
    y_true, y_pred = np.asarray(y_true, np.int64).ravel(), np.asarray(y_pred, np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same length. Received: {len(y_true)} and "
                         f"{len(y_pred)}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"`{name}` must hold class indices in [0, {num_classes}). Received: values "
                             f"from {y.min()} to {y.max()}")
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def normalize_rows(confusion):
    """Each row divided by its sum (the fraction of a true class predicted as each class); 0 for an empty
    row."""
    confusion = np.asarray(confusion, np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)


def per_class_metrics(confusion, class_names=None):
    """Precision, recall, F1 and support of each class, and their macro and support-weighted averages.

    Follows scikit-learn's ``precision_recall_fscore_support``: a class never predicted has precision
    0, one absent from the labels has recall 0 (and support 0).

    Returns:
        ``{"classes": [{"class", "precision", "recall", "f1", "support"}, ...], "macro_avg": {...},
        "weighted_avg": {...}, "accuracy"}``.
    """
    confusion = np.asarray(confusion, np.float64)
    k = len(confusion)
    names = _names(class_names, k)
    hits, predicted, support = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(k), where=both > 0)
    rows = [{"class": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])} for i in range(k)]
    weights = support / support.sum() if support.sum() else np.zeros(k)

    def average(w):
        return {m: float(np.sum(w * v)) for m, v in (("precision", precision), ("recall", recall), ("f1", f1))}

    return {"classes": rows, "macro_avg": average(np.full(k, 1.0 / k)), "weighted_avg": average(weights),
            "accuracy": float(hits.sum() / support.sum()) if support.sum() else 0.0}


def most_confident_mistakes(probs, y_true, count=MISTAKES):
    """Indices of the wrongly classified images, the highest probability given to a wrong class first."""
    checks.check_int("count", count, 1)
    probs, y_true = np.asarray(probs), np.asarray(y_true, np.int64)
    predicted = np.argmax(probs, axis=-1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:count]]


class WorstMistakes:
    """The images of the `count` most confident mistakes of a stream of batches, kept in a bounded heap
    (memory flat in the number of images). ``images`` maps each one's index in the stream to its
    pixels, which is what `write_pictures` and `plot_mistakes` take for the whole test set's images;
    the choice and its order are `most_confident_mistakes`'s."""

    def __init__(self, count=MISTAKES):
        self.count, self.heap, self.images = count, [], {}

    def add(self, probs, y_true, pixels, first=0):
        """A batch: its probabilities, labels, ``pixels(rows)`` -> uint8 images of those rows, and the
        stream index of its first image."""
        import heapq

        probs, y_true = np.asarray(probs), np.asarray(y_true, np.int64)
        predicted = np.argmax(probs, axis=-1)
        wrong = np.flatnonzero(predicted != y_true)
        entries = [(float(probs[i, predicted[i]]), -(first + int(i))) for i in wrong]
        kept = []
        for entry in entries:
            if len(self.heap) < self.count:
                heapq.heappush(self.heap, entry)
            elif entry > self.heap[0]:
                dropped = heapq.heapreplace(self.heap, entry)
                self.images.pop(-dropped[1], None)
            else:
                continue
            kept.append(-entry[1] - first)
        held = {e[1] for e in self.heap}
        kept = [i for i in kept if -(first + i) in held]
        if kept:
            for i, image in zip(kept, pixels(np.asarray(kept))):
                self.images[first + i] = image


def shown_classes(confusion, limit=MAX_SHOWN):
    """The classes `plot_confusion` draws: all up to `limit`, else the `limit` classes with the most
    confused images (as true or as predicted class), in index order."""
    confusion = np.asarray(confusion)
    k = len(confusion)
    if k <= limit:
        return np.arange(k)
    off = confusion - np.diag(np.diag(confusion))
    involvement = off.sum(axis=0) + off.sum(axis=1)
    return np.sort(np.argsort(-involvement, kind="stable")[:limit])


def plot_confusion(confusion, path, class_names=None, title=""):
    """Draws the confusion matrix normalised per true class (see `shown_classes` for many classes)."""
    confusion = np.asarray(confusion)
    names = _names(class_names, len(confusion))
    keep = shown_classes(confusion)
    rates = normalize_rows(confusion)[np.ix_(keep, keep)]
    k = len(keep)
    side = min(16.0, max(5.0, 3.0 + 0.13 * k))  # inches: 10 classes 5, 100 classes 16
    fontsize = float(np.clip(0.55 * side * 72 / k, 4.0, 9.0))  # about half a row's height, in points
    fig = io_utils.new_figure(figsize=(side + 1.0, side))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    labels = [_short(names[i]) for i in keep]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(k), labels, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= ANNOTATE_UP_TO:
        for i in range(k):
            for j in range(k):
                if rates[i, j] >= 0.005:
                    ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=fontsize,
                            color="white" if rates[i, j] > 0.5 else "black")
    shown = "" if k == len(confusion) else f" ({k} most-confused of {len(confusion)} classes)"
    ax.set_title(f"{title} confusion, normalised per true class{shown}".strip(), fontsize=10)
    fig.tight_layout()
    return io_utils.save_figure(fig, path, dpi=100 if k <= 30 else 150)  # small labels: finer pixels


def plot_mistakes(images, y_true, probs, indices, path, class_names=None, title=""):
    """A grid of `images[indices]` (uint8 NHWC) titled with their true and predicted classes."""
    probs = np.asarray(probs)
    names = _names(class_names, probs.shape[-1])
    n = len(indices)
    columns = min(n, 8) or 1
    rows = max(1, -(-n // columns))
    height = 1.9 * rows + 0.6
    fig = io_utils.new_figure(figsize=(1.6 * columns, height))
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, indices):
        image = np.asarray(images[i])
        predicted = int(np.argmax(probs[i]))
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        ax.set_title(f"true {_short(names[int(y_true[i])], 14)}\npred {_short(names[predicted], 14)} "
                     f"{probs[i, predicted]:.2f}", fontsize=7)
    if not n:
        axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(f"{title} most confident mistakes".strip(), fontsize=10)
    # Fixed margins (inches: 0.65 above for the figure's and the first row's titles) instead of
    # tight_layout, which is most of the drawing time for a grid.
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.65 / height, wspace=0.08, hspace=0.3)
    return io_utils.save_figure(fig, path)


def write_pictures(folder, probs, y_true, images, class_names=None, title=""):
    """Writes ``confusion.png`` and ``mistakes.png`` into `folder`; returns the per-class metrics with
    the files' paths (``"files"``).

    A model with more outputs than `class_names` (a 1000-way head trained on 10 classes) has its
    other outputs named by their index, and counted only where it predicts them."""
    probs = np.asarray(probs)
    k = probs.shape[-1]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) > k:
        raise ValueError(f"`class_names` must name the {k} classes. Received: {len(names)} names")
    named = len(names)
    names += [str(i) for i in range(named, k)]  # outputs the data has no name for (a 1000-way head)
    confusion = confusion_matrix(y_true, np.argmax(probs, axis=-1), k)
    # The named classes and any other that is predicted: the rest have no images and no predictions.
    keep = np.flatnonzero((np.arange(k) < named) | (confusion.sum(axis=0) > 0) | (confusion.sum(axis=1) > 0))
    confusion, kept = confusion[np.ix_(keep, keep)], [names[i] for i in keep]
    report = per_class_metrics(confusion, kept)
    report["files"] = {
        "confusion_png": plot_confusion(confusion, os.path.join(folder, "confusion.png"), kept, title),
        "mistakes_png": plot_mistakes(images, y_true, probs, most_confident_mistakes(probs, y_true),
                                      os.path.join(folder, "mistakes.png"), names, title),
    }
    return report


def _names(class_names, k):
    if class_names is None:
        return [str(i) for i in range(k)]
    if len(class_names) != k:
        raise ValueError(f"`class_names` must name the {k} classes. Received: {len(class_names)} names")
    return [str(n) for n in class_names]


def _short(name, length=18):
    return name if len(name) <= length else name[:length - 1] + "\u2026"
