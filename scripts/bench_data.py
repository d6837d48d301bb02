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

Photos at their real size (``--photos imagenet``: about 500x375, ``--photos phone``: 4032x3024): real
photos (scikit-image's) cropped at random and resized (Lanczos), with grain, JPEG quality 90, 9 class folders;
``--prepared DIR`` also measures our stream from the folder prepared once (``keras-resnet prepare``,
made if missing, its rate printed):

    python scripts/bench_data.py --make 256 --photos phone --folder /tmp/phone_256 \
        --prepared /tmp/phone_256_prepared --batch-size 32 --batches 6 --pipelines ours,prepared,keras,torch

The pipelines:

- ours: `keras_resnet.data.streams` (file list, per-file random-resized-crop decoded with
  ``decode_and_crop_jpeg`` at the largest JPEG scale that keeps the crop at least 224, bilinear
  resize, flip, tf.data with AUTOTUNE parallelism).
- prepared: the same stream from the folder's prepared shards (``--prepared``; a tensorflow-datasets set).
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


PHOTO_SIZES = {"imagenet": (500, 375), "phone": (4032, 3024)}  # width, height
GRAIN = 3.0  # the standard deviation of the grain added to a made photo, in pixel levels
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
          "immunohistochemistry", "camera")  # scikit-image's photos (the motorcycle: its left view)


def make_photos(folder, n, kind, seed=0):
    """`n` JPEGs (quality 90) at `kind`'s size from scikit-image's real photos: a random crop of one
    of them (at least half its height, the output's aspect), resized with Lanczos, with a sensor's
    grain (`GRAIN`), a portrait one in four, in one class folder per photo (9)."""
    from concurrent.futures import ProcessPoolExecutor

    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(n):
        c = i % len(PHOTOS)
        os.makedirs(os.path.join(folder, f"class{c}"), exist_ok=True)
        box = rng.uniform(0, 0.5, 2), rng.uniform(0.5, 1.0)
        size = PHOTO_SIZES[kind][::-1] if i % 4 == 3 else PHOTO_SIZES[kind]
        jobs.append((os.path.join(folder, f"class{c}", f"{i:06d}.jpg"), PHOTOS[c], box, size))
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_save_photo, jobs, chunksize=8))


_GRAIN = []


def _grain():
    """A 1024x1024 tile of gray grain (one a process), tiled over a photo."""
    if not _GRAIN:
        _GRAIN.append(np.random.default_rng(os.getpid()).normal(0, GRAIN, (1024, 1024, 1)).astype(np.float32))
    return _GRAIN[0]


def _save_photo(job):
    import skimage.data
    from PIL import Image

    path, name, (corner, share), (width, height) = job
    pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels[0] if isinstance(pixels, tuple) else pixels).convert("RGB")
    w, h = image.size
    ch = int(h * share)
    cw = int(ch * width / height)  # the output's aspect
    if cw > w:
        cw, ch = w, int(w * height / width)
    left, top = int(corner[0] * (w - cw)), int(corner[1] * (h - ch))
    image = image.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + cw, top + ch))
    # a sensor's grain: an upscaled photo is smoother than a camera's, and its JPEG smaller
    pixels = np.asarray(image, np.float32)
    pixels += np.tile(_grain(), (-(-height // 1024), -(-width // 1024), 1))[:height, :width]
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


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


def prepared_stream(folder, batch):
    """Our stream from a prepared folder (`folder`: the one ``--prepared`` names)."""
    from keras_resnet import data
    from keras_resnet.data import streams

    (x, y), _, info = data.open_dataset(folder, image_size=SIZE, transform="photo", cache="none")
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


PIPELINES = {"ours": ours, "prepared": prepared_stream, "keras": keras_loader, "torch": torch_loader}
TARGET_RATE = 3000  # images/s a GPU trains ResNet-50 at: the cores a pipeline needs to feed it


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
    load = transforms.pillow_fallback(channels, streams.BadFiles(), lambda i: str(x[i]), size)
    epoch = tf.constant(0, tf.int64)

    def window(i):
        data = tf.io.read_file(paths_t[i])
        u = transforms.crop_draws(0, epoch, i)
        header = tf.image.extract_jpeg_shape(data)
        box = transforms.crop_window(header[0], header[1], tf.reshape(u[1:], (-1, 4)))
        return transforms.decode_window(data, header, box, size, channels)  # at its reduced scale

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
    p.add_argument("--photos", choices=sorted(PHOTO_SIZES), default=None,
                   help="--make real photos at this size (default: upscaled Fashion-MNIST at 320)")
    p.add_argument("--prepared", default=None,
                   help="the folder prepared from --folder (made with keras-resnet prepare if missing), "
                        "for the 'prepared' pipeline")
    p.add_argument("--short-side", type=int, default=320, help="the prepared photos' shorter side")
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
        if args.photos:
            make_photos(args.folder, args.make, args.photos)
        else:
            make_folder(args.folder, args.make)
        print(f"made {args.make} photos in {args.folder} in {time.perf_counter() - t:.0f} s", flush=True)
    prepare_row = None
    if args.prepared and not os.path.isdir(args.prepared):
        prepare_row = run_prepare(args.folder, args.prepared, args.short_side)
        print(prepare_row, flush=True)
    rows = []
    for name in filter(None, args.pipelines.split(",")):
        env = code_env(name, args.before)
        source = args.prepared if name.split("@")[0] == "prepared" else args.folder
        if source is None:
            raise SystemExit("the 'prepared' pipeline reads --prepared DIR; pass it")
        out = subprocess.run([sys.executable, __file__, "--folder", source, "--one", name.split("@")[0],
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
    files = [os.path.join(r, f) for r, _, fs in os.walk(args.folder) for f in fs]
    n, mean_bytes = len(files), np.mean([os.path.getsize(f) for f in files]) if files else 0
    print(f"\n{n} photos in {args.folder} ({mean_bytes / 2**20:.2f} MiB on average), {SIZE}x{SIZE}, "
          f"random-resized-crop + flip, batch {args.batch_size}; CPU: {cpu_name()}")
    print("| pipeline | first batch / fit starts (s) | images / wall-s | images / CPU-s | cores for "
          f"{TARGET_RATE:,} images/s | RSS when fit starts (GiB) | peak RSS (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        name = r["pipeline"] + (f" ({r['precision']})" if r.get("precision") else "")
        cores = f"{TARGET_RATE / r['images_per_cpu_s']:.0f}" if r.get("images_per_cpu_s") else ""
        print(f"| {name} | {r.get('first_batch_s', r.get('to_fit_s'))} | "
              f"{r.get('images_per_wall_s', '')} | {r.get('images_per_cpu_s', '')} | {cores} | "
              f"{r.get('rss_at_fit_gib', '')} | {r['peak_rss_gib']} |")
    if prepare_row:
        print(f"\nprepare: {prepare_row['images']} photos in {prepare_row['wall_s']} s, "
              f"{prepare_row['images_per_cpu_s']} images per CPU-second, "
              f"{prepare_row['mean_bytes'] / 1024:.0f} KiB per prepared photo")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": n, "mean_bytes": float(mean_bytes), "cpu": cpu_name(), "prepare": prepare_row,
                       "rows": rows}, f, indent=2)


def cpu_name():
    """The CPU's model name (lscpu's), named with every figure."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def run_prepare(folder, output, short_side):
    """``keras-resnet prepare`` of the folder, in a fresh process: its wall and CPU seconds."""
    command = [sys.executable, "-m", "keras_resnet.cli", "prepare", folder, output, "--short-side", str(short_side)]
    import resource

    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=code_env("", None), timeout=7200)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    shards = [os.path.join(output, f) for f in os.listdir(output) if ".tfrecord-" in f]
    images = sum(len(files) for _, _, files in os.walk(folder))
    return {"images": images, "wall_s": round(wall, 1),
            "images_per_cpu_s": round(images / cpu, 1),
            "mean_bytes": sum(os.path.getsize(s) for s in shards) / max(images, 1)}


if __name__ == "__main__":
    main()
