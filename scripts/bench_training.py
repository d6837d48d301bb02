"""Training throughput (images/s, median over batches, one process) of our ResNets against keras.applications.

    python scripts/bench_training.py                  # the default table
    python scripts/bench_training.py --steps 20 --out saved_models/bench/training.json

Each case builds a model, compiles it with the package's recipe (SGD + Nesterov, weight decay), runs
warm-up steps, then times `train_on_batch` on fixed random data; images/s = batch / median step time.
Cases sharing a process share the machine's state, so ratios measured in one run are what to compare.
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

# (label, builder, input shape, batch, precision)
CASES = [
    ("keras_resnet ResNet-50", "ours:50", (224, 224, 3), 16, "float32"),
    ("keras.applications ResNet50", "applications", (224, 224, 3), 16, "float32"),
    ("keras_resnet ResNet-20", "ours:20", (32, 32, 3), 128, "float32"),
    ("keras_resnet ResNet-20", "ours:20", (32, 32, 3), 128, "mixed_bfloat16"),
    ("keras_resnet ResNet-18", "ours:18", (32, 32, 3), 128, "float32"),
    ("keras_resnet ResNet-18", "ours:18", (32, 32, 3), 128, "mixed_bfloat16"),
]


def make_model(builder, input_shape, num_classes):
    if builder == "applications":
        return keras.applications.ResNet50(weights=None, input_shape=input_shape, classes=num_classes)
    return keras_resnet.build(depth=int(builder.split(":")[1]), input_shape=input_shape,
                              num_classes=num_classes)


def measure(builder, input_shape, batch, precision, steps, warmup, num_classes=1000):
    keras.mixed_precision.set_global_policy(precision)
    model = make_model(builder, input_shape, num_classes)
    compile_model(model, Recipe(batch_size=batch), steps_per_epoch=100)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + input_shape).astype("float32")
    y = rng.integers(0, num_classes, batch)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    keras.mixed_precision.set_global_policy("float32")
    median = statistics.median(times)
    return {"params": model.count_params(), "median_step_s": median, "images_per_s": batch / median}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed batches per case")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="saved_models/bench/training.json")
    args = parser.parse_args()

    rows = []
    print(f"{'model':32s} {'input':>13s} {'batch':>5s} {'precision':>14s} {'params':>12s} {'img/s':>8s}")
    for label, builder, shape, batch, precision in CASES:
        r = measure(builder, shape, batch, precision, args.steps, args.warmup)
        rows.append({"model": label, "input_shape": shape, "batch": batch, "precision": precision, **r})
        print(f"{label:32s} {str(shape):>13s} {batch:5d} {precision:>14s} {r['params']:12,d} "
              f"{r['images_per_s']:8.1f}", flush=True)
    ours, theirs = rows[0]["images_per_s"], rows[1]["images_per_s"]
    print(f"ResNet-50 at 224, batch 16: keras_resnet / keras.applications = {ours / theirs:.2f}x")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "resnet50_ratio": ours / theirs, "steps": args.steps,
                   "backend": keras.backend.backend(), "cpu_count": os.cpu_count()}, f, indent=2)


if __name__ == "__main__":
    main()
