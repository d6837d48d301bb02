"""Images per second of ResNet-50 training on one GPU from a prepared folder, and of the model alone:
which one is the bottleneck.

For a machine with an NVIDIA GPU, JAX and Keras, and no TensorFlow: the prepared folder's shards
(``keras-resnet prepare``) are read by the pure-Python reader (`keras_resnet.data.prepared.read_prepared`),
and worker processes make each batch with Pillow: the photo recipe's random-resized-crop window drawn
in full-resolution coordinates, decoded at the largest JPEG scale that keeps it at least the input
size (`keras_resnet.data.images.read_crop`, the pixels of the TensorFlow stream), resized
(`keras_resnet.data.images.resize`: bilinear, antialiased) and flipped half the time, written into
shared memory as uint8. The network (`keras_resnet.build`, compiled by
`keras_resnet.training.compile_model` with the recipe's SGD) takes the uint8 batch and normalises it
on the device. Two timed runs of `--steps` steps each after `--warmup` steps (compilation):

- pipeline: the whole thing, batches from the workers;
- model alone: one constant batch, copied to the device every step as the pipeline's batches are.

    KERAS_BACKEND=jax python scripts/gpu_throughput.py --dataset /data/photos_320 --steps 200

prints one JSON line per run and a table row. Tested on CPU with a tiny network:

    KERAS_BACKEND=jax python scripts/gpu_throughput.py --dataset DIR --depth 18 --width 0.25 --size 64 \\
        --batch-size 8 --steps 2 --warmup 1 --workers 2 --precision float32
"""

import argparse
import json
import os
import sys
import time
from multiprocessing import get_context, shared_memory

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, in [0, 1]: throughput only


def _worker_init(name, shape):
    global SLOTS, SHM
    SHM = shared_memory.SharedMemory(name=name)
    SLOTS = np.ndarray(shape, np.uint8, buffer=SHM.buf)


def _make_batch(job):
    """Fills shared-memory slot `slot` with the batch of `encoded` images; returns the slot."""
    from keras_resnet.data import images

    slot, encoded, seed = job
    size = SLOTS.shape[2:4]
    rng = np.random.default_rng(seed)
    for i, data in enumerate(encoded):
        u = rng.random(1 + 4 * images.CROP_ATTEMPTS)
        crop = images.read_crop(data, u[1:].reshape(images.CROP_ATTEMPTS, 4), size, 3)
        pixels = images.resize(crop, size)
        SLOTS[slot, i] = pixels[:, ::-1] if u[0] < 0.5 else pixels
    return slot


class Batches:
    """uint8 batches ``(batch, size, size, 3)`` and labels from `workers` processes, `depth` batches in
    flight, the prepared split read in order and repeated."""

    def __init__(self, folder, batch, size, workers, depth=None):
        from keras_resnet.data import prepared

        self.folder, self.batch = folder, batch
        self.depth = depth or 2 * workers
        shape = (self.depth, batch, size, size, 3)
        self.shm = shared_memory.SharedMemory(create=True, size=int(np.prod(shape)))
        self.slots = np.ndarray(shape, np.uint8, buffer=self.shm.buf)
        self.pool = get_context("spawn").Pool(workers, _worker_init, (self.shm.name, shape))
        self.examples, self.class_names = prepared.read_prepared(folder)
        self.count = 0

    def _next_examples(self):
        from keras_resnet.data import prepared

        chunk = []
        while len(chunk) < self.batch:
            try:
                chunk.append(next(self.examples))
            except StopIteration:
                self.examples, _ = prepared.read_prepared(self.folder)
        return [c[0] for c in chunk], np.array([c[1] for c in chunk], np.int32)

    def __iter__(self):
        pending = []
        for slot in range(self.depth):
            encoded, labels = self._next_examples()
            pending.append((self.pool.apply_async(_make_batch, ((slot, encoded, self.count),)), labels))
            self.count += 1
        while True:
            result, labels = pending.pop(0)
            slot = result.get(timeout=600)  # a worker that hangs ends the run
            yield self.slots[slot].copy(), labels
            encoded, labels = self._next_examples()
            pending.append((self.pool.apply_async(_make_batch, ((slot, encoded, self.count),)), labels))
            self.count += 1

    def close(self):
        self.pool.terminate()
        self.shm.close()
        self.shm.unlink()


def build_model(args, classes, steps):
    import keras

    import keras_resnet
    from keras_resnet import training

    keras.mixed_precision.set_global_policy(args.precision)
    inputs = keras.Input((args.size, args.size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)  # cast and scale on the device
    x = keras.layers.Normalization(mean=MEAN, variance=np.square(STD))(x)
    net = keras_resnet.build(depth=args.depth, width=args.width, input_shape=(args.size, args.size, 3),
                             num_classes=classes)
    model = keras.Model(inputs, net(x))
    training.compile_model(model, training.Recipe(batch_size=args.batch_size, epochs=1), steps)
    return model


def timed_fit(model, batches, steps, warmup):
    """Steps per second over `steps` steps after `warmup` steps of ``fit``."""
    import keras

    marks = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == warmup - 1 or batch == warmup + steps - 1:
                float(logs["loss"])  # waits for the device
                marks.append(time.perf_counter())

    model.fit(batches, steps_per_epoch=warmup + steps, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    return steps / (marks[1] - marks[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="a folder written by keras-resnet prepare")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="steps timed, after the warm-up")
    p.add_argument("--warmup", type=int, default=20, help="steps before the clock starts (compilation)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes making batches")
    p.add_argument("--precision", default="mixed_bfloat16", help="Keras dtype policy")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 1:
        raise SystemExit(f"--steps and --warmup must be at least 1. Received: --steps {args.steps} "
                         f"--warmup {args.warmup}")
    import jax
    import keras

    device = str(jax.devices()[0])
    batches = Batches(args.dataset, args.batch_size, args.size, args.workers)
    rows = []
    try:
        model = build_model(args, len(batches.class_names), args.warmup + args.steps)
        start = time.perf_counter()
        rate = timed_fit(model, iter(batches), args.steps, args.warmup) * args.batch_size
        rows.append({"run": "pipeline (prepared shards, Pillow workers)", "images_per_s": round(rate, 1),
                     "wall_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
        x, y = next(iter(batches))

        def constant():
            while True:
                yield x, y

        start = time.perf_counter()
        rate = timed_fit(model, constant(), args.steps, args.warmup) * args.batch_size
        rows.append({"run": "model alone (one constant batch)", "images_per_s": round(rate, 1),
                     "wall_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    finally:
        batches.close()
    pipeline, alone = rows[0]["images_per_s"], rows[1]["images_per_s"]
    bottleneck = "the input pipeline" if pipeline < 0.9 * alone else "the model"
    print(f"\nResNet-{args.depth} at width {args.width}, {args.size}x{args.size}, batch {args.batch_size}, "
          f"{args.precision}, {args.workers} workers, on {device} (backend {keras.backend.backend()}); "
          f"bottleneck: {bottleneck}")
    print("| run | images / s |\n|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['images_per_s']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "args": vars(args), "rows": rows, "bottleneck": bottleneck}, f, indent=2)
    assert "tensorflow" not in sys.modules, "TensorFlow was imported"


if __name__ == "__main__":
    main()
