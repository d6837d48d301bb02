"""Input pipelines side by side on a folder of JPEG photos: our stream, Keras's folder loader, and a
torch DataLoader with Pillow transforms.

Makes (or takes) a folder of N photos (Fashion-MNIST images upscaled to 320x320 and tinted, 10 class
sub-folders) and measures each pipeline in a fresh process at 224 pixels with random-resized-crop +
horizontal flip: time from the start to the first batch, steady images per wall-second and per
CPU-second (the process and its workers), and peak RSS (the process and its workers, sampled every
0.1 s). With --train, also the peak RSS of a real ``keras-resnet train`` on the folder; with --memory,
that of training runs side by side: ours (in float32, or the ImageNet family's depth 18 at width 0.25)
and the same network fitted by Keras from ``image_dataset_from_directory`` or from one constant batch
(the network alone). --stages times each stage of our stream and Keras's loader over the same files.
A pipeline or memory run named ``NAME@before`` imports the package from --before DIR (a copy of it as
it was), to measure a change side by side in one run.

    python scripts/bench_data.py --make 5000 --folder /tmp/photos_5000 --train --json results.json
    python scripts/bench_data.py --folder /tmp/photos_5000 --pipelines "" --memory all
    python scripts/bench_data.py --folder /tmp/photos_5000 --stages 320

The pipelines:

- ours: `keras_resnet.data.streams` (file list, per-file random-resized-crop decoded with
  ``decode_and_crop_jpeg``, bilinear resize, flip, tf.data with AUTOTUNE parallelism).
- keras: ``keras.utils.image_dataset_from_directory`` (decodes and resizes every whole image, to 256)
  + ``RandomCrop(224)`` + ``RandomFlip`` (Keras has no random-resized-crop layer).
- torch: a ``Dataset`` reading files with Pillow, torchvision's ``RandomResizedCrop`` written out
  below (torchvision does not import here), flip, ``DataLoader(num_workers=cores)``.
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np

SIZE = 224


def make_folder(folder, n, side=320, seed=0):
    """`n` tinted, upscaled Fashion-MNIST training images as JPEGs in 10 class sub-folders."""
    from concurrent.futures import ProcessPoolExecutor

    from keras_resnet import data

    (x, y), _, info = data.load("fashion_mnist")
    if n > len(x):
        raise SystemExit(f"--make {n}: Fashion-MNIST has {len(x)} training images")
    for name in range(10):
        os.makedirs(os.path.join(folder, f"class{name}"), exist_ok=True)
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.3, 1.0, (n, 3)).astype(np.float32)
    jobs = [(os.path.join(folder, f"class{y[i]}", f"{i:06d}.jpg"), x[i, ..., 0], tints[i], side)
            for i in range(n)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_save, jobs, chunksize=256))


def _save(job):
    from PIL import Image

    path, pixels, tint, side = job
    image = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
    rgb = np.asarray(image, np.float32)[..., None] * tint + 20
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)


class Meter:
    """Peak RSS and CPU seconds of this process and its children, sampled in a thread."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tree(self):
        procs = [self.proc]
        try:
            procs += self.proc.children(recursive=True)
        except Exception:  # noqa: BLE001
            pass
        return procs

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.1)

    def rss(self):
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 (a worker that just ended)
                pass
        return total

    def cpu(self):
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except Exception:  # noqa: BLE001
                pass
        return total


def ours(folder, batch):
    from keras_resnet.data import folder_streams, streams

    (x, y), _, info = folder_streams.open_folder(folder, image_size=SIZE, transform="photo", cache="none")
    return iter(streams.train_stream(x, y, info, batch, seed=0))


def keras_loader(folder, batch):
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(folder, image_size=(256, 256), batch_size=batch, seed=0,
                                                  verbose=False)
    crop, flip = keras.layers.RandomCrop(SIZE, SIZE, seed=0), keras.layers.RandomFlip("horizontal", seed=0)
    ds = ds.map(lambda x, y: (flip(crop(x, training=True), training=True), y),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return iter(ds)


def rrc_params(width, height, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's ``RandomResizedCrop.get_params``, written out: ``(top, left, h, w)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TorchFolder:
    """(tensor, label) of each file: Pillow decode, random-resized-crop, flip, to float, normalise."""

    def __init__(self, folder):
        self.items = []
        for label, name in enumerate(sorted(os.listdir(folder))):
            for f in sorted(os.listdir(os.path.join(folder, name))):
                self.items.append((os.path.join(folder, name, f), label))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import torch
        from PIL import Image

        path, label = self.items[i]
        image = Image.open(path).convert("RGB")
        top, left, h, w = rrc_params(*image.size)
        image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)
        return (x - 0.45) / 0.25, label


def torch_loader(folder, batch):
    import torch

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(TorchFolder(folder), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=os.cpu_count(), persistent_workers=True)
    return iter(loader)


PIPELINES = {"ours": ours, "keras": keras_loader, "torch": torch_loader}


def run_one(name, folder, batch, batches):
    """Measures one pipeline in this process; prints a JSON line."""
    meter = Meter()
    start = time.perf_counter()
    it = PIPELINES[name](folder, batch)
    next(it)
    first = time.perf_counter() - start
    wall0, cpu0 = time.perf_counter(), meter.cpu()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall0, meter.cpu() - cpu0
    meter.stop = True
    images = batch * batches
    print(json.dumps({"pipeline": name, "first_batch_s": round(first, 2), "images_per_wall_s": round(images / wall, 1),
                      "images_per_cpu_s": round(images / cpu, 1), "peak_rss_gib": round(meter.peak / 2**30, 3)}))
    os._exit(0)  # DataLoader workers and tf.data threads need not be joined


TRAIN_ARGS = ["--image-size", str(SIZE), "--depth", "8", "--batch-size", "64", "--epochs", "1"]
# --memory: peak RSS of whole training runs, ours against the same network fed other ways
MEMORY_RUNS = {
    "train": [],
    "train --precision float32": ["--precision", "float32"],
    "train --depth 18 --width 0.25": ["--depth", "18", "--width", "0.25"],
    "fit from image_dataset_from_directory": "keras",
    "fit from constant batches in memory": "constant",
}


def code_env(name, before):
    """The environment of a measured process: ``NAME@before`` imports keras_resnet from `before` (a
    copy of the package as it was, to measure a change side by side in one run)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if name.endswith("@before"):
        if not before:
            raise SystemExit(f"{name}: pass --before DIR, a folder holding the package as it was")
        env["PYTHONPATH"] = os.pathsep.join([before, env.get("PYTHONPATH", "")])
    return env


def peak_rss(command, run_dir=None, env=None):
    """Peak RSS (GiB) of `command` and its children, sampled every 0.1 s, and the seconds until
    ``RUN_DIR/config.json`` appears (a train run: the data listed, the statistics sampled, the model
    built, just before fit). A train run is stopped when its epoch is committed (``history.csv``: the
    test split's evaluation after it holds no more than a batch)."""
    import psutil

    start = time.perf_counter()
    proc = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        env=env or code_env("", None))
    peak, first_step, at_fit = 0, None, None
    lines = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True)
    reader.start()
    done = (lambda: os.path.exists(os.path.join(run_dir, "history.csv"))) if run_dir else (lambda: False)
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [proc] + proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            rss = 0
        if at_fit is None and (os.path.exists(os.path.join(run_dir, "config.json")) if run_dir
                               else any(line.startswith("fit starts") for line in lines)):
            # config.json is written when the model is built, just before fit
            first_step, at_fit = time.perf_counter() - start, rss
        if done():
            proc.kill()
            break
        time.sleep(0.1)
    proc.wait()
    reader.join(5)
    if (run_dir and not done()) or (not run_dir and proc.returncode):
        raise SystemExit("".join(lines)[-3000:])
    return {"peak_rss_gib": round(peak / 2**30, 3), "to_fit_s": None if first_step is None else round(first_step, 1),
            "rss_at_fit_gib": None if at_fit is None else round(at_fit / 2**30, 3),
            "wall_s": round(time.perf_counter() - start, 1)}


def run_train(folder, train_size, extra=(), label="keras-resnet train", env=None):
    """Peak RSS of a real ``keras-resnet train`` on the folder (depth 8, batch 64, one epoch of
    `train_size` images and its validation; `extra` flags appended), and the time until ``fit``
    starts."""
    import shutil

    run_dir = os.path.join("/tmp", f"bench_data_run_{os.getpid()}")
    shutil.rmtree(run_dir, ignore_errors=True)
    base = TRAIN_ARGS[:2] + TRAIN_ARGS[4:] if "--depth" in extra else TRAIN_ARGS
    command = [sys.executable, "-m", "keras_resnet.cli", "train", "--dataset", folder, *base,
               "--train-size", str(train_size), "--run-dir", run_dir, "--verbose", "2", *extra]
    row = peak_rss(command, run_dir, env)
    with open(os.path.join(run_dir, "config.json")) as f:
        precision = json.load(f).get("precision")
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"pipeline": label, **row, "precision": precision, "command": " ".join(command[1:])}


def run_reference(folder, train_size, feed, precision):
    """Peak RSS of the same network, compiled as ``keras-resnet train`` compiles it, fitted for the
    same steps (one epoch of `train_size` images, a tenth of them its validation) fed by `feed`:
    "keras" (``image_dataset_from_directory`` at 224) or "constant" (one batch in memory, repeated:
    the network's own share)."""
    command = [sys.executable, __file__, "--folder", folder, "--fit", feed, "--precision", precision,
               "--train-size", str(train_size)]
    return {"pipeline": [k for k, v in MEMORY_RUNS.items() if v == feed][0], **peak_rss(command),
            "precision": precision, "command": " ".join(command[1:])}


def fit_reference(folder, train_size, feed, precision):
    import keras
    import tensorflow as tf

    import keras_resnet
    from keras_resnet import training

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    batch, val = 64, train_size // 10
    steps = (train_size - val) // batch
    if feed == "keras":
        def part(subset):
            return keras.utils.image_dataset_from_directory(
                folder, image_size=(SIZE, SIZE), batch_size=batch, seed=0, validation_split=0.1,
                subset=subset, verbose=False)
        norm = keras.layers.Rescaling(1 / 64.0, offset=-2.0)
        train, test = (part(s).map(lambda x, y: (norm(x), y)).prefetch(tf.data.AUTOTUNE)
                       for s in ("training", "validation"))
        test = test.take(max(1, val // batch))
    else:
        x = tf.random.stateless_normal((batch, SIZE, SIZE, 3), seed=(0, 0))
        y = tf.constant(np.arange(batch) % 10)
        train = tf.data.Dataset.from_tensors((x, y)).repeat()
        test = tf.data.Dataset.from_tensors((x, y)).repeat(max(1, val // batch))
    model = keras_resnet.build(depth=8, input_shape=(SIZE, SIZE, 3), num_classes=10)
    training.compile_model(model, training.Recipe(epochs=1, batch_size=batch), steps)
    print("fit starts", flush=True)
    model.fit(train.repeat() if feed == "keras" else train, validation_data=test, epochs=1,
              steps_per_epoch=steps, verbose=2)
    os._exit(0)


def run_stages(folder, count, batch, repeats=3):
    """CPU- and wall-seconds per image of our stream's stages, each cumulative pipeline over the
    same `count` files (the first of epoch 0's order) in one process, and of Keras's loader's:
    the median of `repeats` passes after a warm-up. Prints a JSON line per stage."""
    import keras
    import tensorflow as tf

    from keras_resnet.data import folder_streams, streams, transforms

    (x, y), _, info = folder_streams.open_folder(folder, image_size=SIZE, transform="photo", cache="none")
    stream = info["stream"]
    size, channels = stream["size"], stream["channels"]
    order = folder_streams.epoch_order(len(x), batch, 0, 0)[:count]
    paths_t = tf.constant([os.fsencode(str(p)) for p in x])
    load = transforms.pillow_fallback(channels, streams.BadFiles(), lambda i: str(x[i]))
    epoch = tf.constant(0, tf.int64)

    def window(i):
        data = tf.io.read_file(paths_t[i])
        u = transforms.crop_draws(0, epoch, i)
        header = tf.image.extract_jpeg_shape(data)
        top, left, ch, cw = tf.unstack(transforms.crop_window(header[0], header[1], tf.reshape(u[1:], (-1, 4))))
        m = transforms.JPEG_MARGIN
        t, l = tf.maximum(top - m, 0), tf.maximum(left - m, 0)
        b, r = tf.minimum(top + ch + m, header[0]), tf.minimum(left + cw + m, header[1])
        decoded = tf.io.decode_and_crop_jpeg(data, tf.stack([t, l, b - t, r - l]), channels=channels,
                                             dct_method="INTEGER_ACCURATE")
        return decoded[top - t:top - t + ch, left - l:left - l + cw]

    def files(fn):
        return tf.data.Dataset.from_tensor_slices(order).map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    def keras_files():
        listing = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)
        ds = tf.data.Dataset.from_tensor_slices(np.array(listing)[order % len(listing)])
        return ds.map(lambda p: tf.image.resize(tf.io.decode_image(tf.io.read_file(p), channels=3,
                                                                   expand_animations=False), (256, 256)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    crop, flip = keras.layers.RandomCrop(SIZE, SIZE, seed=0), keras.layers.RandomFlip("horizontal", seed=0)
    stages = {
        "ours: read bytes": lambda: files(lambda i: tf.strings.length(tf.io.read_file(paths_t[i]))),
        "ours: + decode the window": lambda: files(lambda i: tf.shape(window(i))),
        "ours: + resize to 224": lambda: files(lambda i: transforms.resize_crop(window(i), size)),
        "ours: + flip (the file map)": lambda: files(lambda i: transforms.photo_crop(
            tf.io.read_file(paths_t[i]), i, epoch, 0, size, channels, load)[0]),
        "ours: the stream (batch, normalise)": lambda: streams.train_stream(x, y, info, batch).take(count // batch),
        "keras: read, decode, resize to 256": keras_files,
        "keras: + batch, crop, flip": lambda: keras_files().batch(batch).map(
            lambda b: flip(crop(b, training=True), training=True)),
    }
    for name, make in stages.items():
        for _ in make().take(2 * batch if "stream" not in name and "batch" not in name else 2):
            pass  # warm-up: graph tracing, thread pools
        cpu, wall = [], []
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in make():
                pass
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        print(json.dumps({"stage": name, "cpu_ms_per_image": round(1000 * float(np.median(cpu)) / count, 2),
                          "wall_ms_per_image": round(1000 * float(np.median(wall)) / count, 2)}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", required=True, help="the photo folder (made with --make if it does not exist)")
    p.add_argument("--make", type=int, default=None, help="make a folder of this many photos")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=40, help="batches timed after the first")
    p.add_argument("--pipelines", default="ours,keras,torch")
    p.add_argument("--train", action="store_true", help="also measure a real keras-resnet train")
    p.add_argument("--train-size", type=int, default=640)
    p.add_argument("--memory", default=None, help="peak RSS of these training runs, comma-separated "
                   f"(or 'all'): {', '.join(MEMORY_RUNS)}")
    p.add_argument("--precision", default="mixed_bfloat16",
                   help="the references' dtype policy under --memory (ours: what `train` chooses)")
    p.add_argument("--before", default=None, help="a folder holding keras_resnet as it was: a pipeline "
                   "or --memory run named NAME@before imports it from there")
    p.add_argument("--json", default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--fit", default=None, help=argparse.SUPPRESS)
    p.add_argument("--stages", type=int, default=None,
                   help="CPU per image of each stage of our stream and Keras's loader over this many files")
    args = p.parse_args()
    if args.stages:
        return run_stages(args.folder, args.stages, args.batch_size)
    if args.one:
        return run_one(args.one, args.folder, args.batch_size, args.batches)
    if args.fit:
        return fit_reference(args.folder, args.train_size, args.fit, args.precision)
    if not os.path.isdir(args.folder):
        if not args.make:
            raise SystemExit(f"no such folder: {args.folder}; pass --make N to make one")
        t = time.perf_counter()
        make_folder(args.folder, args.make)
        print(f"made {args.make} photos in {args.folder} in {time.perf_counter() - t:.0f} s", flush=True)
    rows = []
    for name in filter(None, args.pipelines.split(",")):
        env = code_env(name, args.before)
        out = subprocess.run([sys.executable, __file__, "--folder", args.folder, "--one", name.split("@")[0],
                              "--batch-size", str(args.batch_size), "--batches", str(args.batches)],
                             capture_output=True, text=True, env=env, timeout=3600)
        line = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not line:
            raise SystemExit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        rows.append({**json.loads(line[-1]), "pipeline": name})
        print(rows[-1], flush=True)
    if args.train:
        rows.append(run_train(args.folder, args.train_size))
        print(rows[-1], flush=True)
    memory = list(MEMORY_RUNS) if args.memory == "all" else list(filter(None, (args.memory or "").split(",")))
    for name in memory:
        run = name.split("@")[0]
        if run not in MEMORY_RUNS:
            raise SystemExit(f"--memory: {run!r} is not one of {list(MEMORY_RUNS)}")
        feed = MEMORY_RUNS[run]
        rows.append(run_reference(args.folder, args.train_size, feed, args.precision) if isinstance(feed, str)
                    else run_train(args.folder, args.train_size, feed, f"keras-resnet {name}",
                                   code_env(name, args.before)))
        print(rows[-1], flush=True)
    n = sum(len(files) for _, _, files in os.walk(args.folder))
    print(f"\n{n} photos in {args.folder}, {SIZE}x{SIZE}, random-resized-crop + flip, batch {args.batch_size}")
    print("| pipeline | first batch / fit starts (s) | images / wall-s | images / CPU-s | RSS when fit starts (GiB) "
          "| peak RSS (GiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = r["pipeline"] + (f" ({r['precision']})" if r.get("precision") else "")
        print(f"| {name} | {r.get('first_batch_s', r.get('to_fit_s'))} | "
              f"{r.get('images_per_wall_s', '')} | {r.get('images_per_cpu_s', '')} | {r.get('rss_at_fit_gib', '')} | "
              f"{r['peak_rss_gib']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": n, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
