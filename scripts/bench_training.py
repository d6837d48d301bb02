"""Training throughput (images/s, median over batches, one process) of our ResNets against keras.applications.

    python scripts/bench_training.py                  # the default table
    python scripts/bench_training.py --steps 20 --out saved_models/bench/training.json

Each case builds a model, compiles it with the package's recipe (SGD + Nesterov, weight decay), runs
warm-up steps, then times `train_on_batch` on fixed random data; images/s = batch / median step time.
The cases of a comparison are timed in alternation, batch by batch, so that the ratios stay fair on
a shared, noisy machine: compare ratios, not absolute figures from different runs.
"""

import argparse
import json
import os
import statistics
import time

import keras
import numpy as np

import keras_resnet
from keras_resnet.training import Recipe, compile_model

# Each group is measured together: models built, warmed up, then timed in alternation, batch by
# batch, so that a noisy machine slows every member of a group alike.
# (label, builder, input shape, batch, precision)
GROUPS = [
    [("keras_resnet ResNet-50", "ours:50", (224, 224, 3), 16, "float32"),
     ("keras.applications ResNet50", "applications", (224, 224, 3), 16, "float32")],
    [("keras_resnet ResNet-20", "ours:20", (32, 32, 3), 128, "float32"),
     ("keras_resnet ResNet-20", "ours:20", (32, 32, 3), 128, "mixed_bfloat16")],
    [("keras_resnet ResNet-18", "ours:18", (32, 32, 3), 128, "float32"),
     ("keras_resnet ResNet-18", "ours:18", (32, 32, 3), 128, "mixed_bfloat16")],
]


def make_model(builder, input_shape, num_classes):
    if builder == "applications":
        return keras.applications.ResNet50(weights=None, input_shape=input_shape, classes=num_classes)
    return keras_resnet.build(depth=int(builder.split(":")[1]), input_shape=input_shape,
                              num_classes=num_classes)


def measure_group(group, steps, warmup, num_classes=1000):
    """Median seconds per training batch of each case of `group`, timed in alternation."""
    rng = np.random.default_rng(0)
    runs = []
    for _, builder, shape, batch, precision in group:
        keras.mixed_precision.set_global_policy(precision)
        model = make_model(builder, shape, num_classes)
        compile_model(model, Recipe(batch_size=batch), steps_per_epoch=100)
        x = rng.standard_normal((batch,) + shape).astype("float32")
        y = rng.integers(0, num_classes, batch)
        for _ in range(warmup):
            model.train_on_batch(x, y)
        runs.append((model, x, y, []))
    keras.mixed_precision.set_global_policy("float32")
    for _ in range(steps):
        for model, x, y, times in runs:
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    return [{"params": m.count_params(), "median_step_s": statistics.median(t),
             "images_per_s": len(x) / statistics.median(t)} for m, x, _, t in runs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed batches per case")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="saved_models/bench/training.json")
    args = parser.parse_args()

    rows, ratios = [], []
    print(f"{'model':32s} {'input':>13s} {'batch':>5s} {'precision':>14s} {'params':>12s} {'img/s':>8s}")
    for group in GROUPS:
        results = measure_group(group, args.steps, args.warmup)
        for (label, _, shape, batch, precision), r in zip(group, results):
            rows.append({"model": label, "input_shape": shape, "batch": batch, "precision": precision, **r})
            print(f"{label:32s} {str(shape):>13s} {batch:5d} {precision:>14s} {r['params']:12,d} "
                  f"{r['images_per_s']:8.1f}", flush=True)
        ratio = results[0]["images_per_s"] / results[1]["images_per_s"]
        ratios.append({"first": f"{group[0][0]} {group[0][4]}", "second": f"{group[1][0]} {group[1][4]}",
                       "ratio": ratio})
        print(f"  -> first / second = {ratio:.2f}x", flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "ratios": ratios, "steps": args.steps,
                   "backend": keras.backend.backend(), "cpu_count": os.cpu_count()}, f, indent=2)


if __name__ == "__main__":
    main()
