"""A run's history (one row per epoch) as CSV, and its loss and accuracy curves as a PNG."""

import csv
import io
import os

from keras_resnet.utils import io_utils


def write_history(path, rows):
    """Writes `rows` (dicts of one epoch each, with an ``epoch`` key) as CSV, atomically."""
    columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="NA")
    writer.writeheader()
    writer.writerows(rows)
    return io_utils.write_text(path, text.getvalue())


def read_history(path):
    """history.csv as columns, one row per epoch (a row written twice around a resume counts once)."""
    rows = {}
    if os.path.exists(path):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows[int(row["epoch"])] = row
    columns = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            # "NA": the validation metrics of a run without validation data.
            columns.setdefault(key, []).append(
                int(value) if key == "epoch" else float("nan") if value in ("NA", "") else float(value))
    return {key: values for key, values in columns.items() if not all(v != v for v in values)}


def plot_history(history, path, title=""):
    """Loss and accuracy curves (train and validation) in one PNG."""
    epochs = [e + 1 for e in history.get("epoch", [])]
    fig = io_utils.new_figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + metric in history:
                ax.plot(epochs, history[prefix + metric], style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return io_utils.save_figure(fig, path)
