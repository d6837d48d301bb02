"""Image folders streamed from disk through tf.data: the file list is read lazily, each batch decoded
when it is needed, nothing held whole in memory. TensorFlow only; the NumPy pipeline and the arrays
of `keras_resnet.data` stay for small sets and machines without TensorFlow.

`open_folder` lists a folder (no decoding), draws the test split from the file list, takes the
normalisation statistics from `STATS_SAMPLE` training files, and chooses how the run is fed:

- ``memory``: a folder of the small-image recipe whose decoded images take at most `CACHE_BUDGET`
  (and an eighth of the machine's memory) is decoded once into arrays, then trained as IDX sets are;
- ``stream``: otherwise, and always for the photo recipe (a new crop is decoded every epoch).

One line says which, and ``cache="memory"`` or ``"none"`` overrides the choice. `sample_folder` lists a
folder the same way and decodes only the few images a command uses (``export``'s int8 calibration
sample and verification images).

Streams (`train_stream`, `eval_stream`):

- Training: the epoch's file order is a function of the seed and the epoch only (`epoch_order`), so a
  resumed run reads the same files in the same order. Under a multi-process job each process reads
  only its rows of every global batch: the processes' files are disjoint and together cover the
  epoch once. The photo recipe decodes a random-resized-crop (`crop_window`, the graph's form of
  `keras_resnet.data.images.crop_window`, from stateless draws of ``(seed, epoch, file)``: `crop_draws`)
  with ``tf.io.decode_and_crop_jpeg`` for JPEGs, without Python (only the window and a one-block
  margin are decoded; the accurate integer IDCT gives Pillow's pixels), or
  `keras_resnet.data.images.read_image` for the rest, resizes it bilinearly (antialiased, in the graph) to
  the input size and flips half the images; the
  small-image recipe decodes and resizes, then pads, crops, flips and erases a batch as
  `keras_resnet.data.pipelines` does.
- Evaluation: `keras_resnet.data.images.eval_transform`, the transform ``evaluate``, ``export`` and
  ``predict`` apply.
- A file that does not decode is named: with ``bad_images="error"`` the run stops after the batch that
  met it with a `DatasetError` naming it (the run resumes from its last finished epoch); with
  ``"skip"`` it is left out (the epoch is filled up from its start, so every epoch has its steps) and
  one line per epoch names the files skipped.
"""

import os
import sys
import threading
from pathlib import Path

import keras
import numpy as np

from keras_resnet.data import folders, images
from keras_resnet.utils.checks import check_choice, check_number
from keras_resnet.data.common import BAD_IMAGES, DatasetError, channel_stats, check_image_size
from keras_resnet.data.pipelines import augment_batch, scale_offset, tf_ops

CACHE = ("auto", "memory", "none")
STATS_SAMPLE = 256  # training files whose pixels give the normalisation statistics
CACHE_BUDGET = 1 << 30  # decoded bytes a small-image folder may hold in memory
JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
JPEG_MARGIN = 16  # pixels decoded around a JPEG crop window (one block of 4:2:0 chroma)
NO_PIXELS = {c: np.zeros((1, 1, c), np.uint8) for c in (1, 3)}



def hold_in_memory(n, size, channels, transform, cache):
    """Whether `n` images of the small-image recipe are held decoded in memory rather than streamed
    (`cache` "memory", or "auto" when they fit the budget), and their decoded bytes."""
    decoded = n * int(np.prod(size)) * channels
    fits = decoded <= min(CACHE_BUDGET, _memory_bytes() // 8)
    if cache == "memory" and transform == "photo":
        raise ValueError("cache='memory' holds decoded images, for the small-image recipe; the photo "
                         "recipe decodes a new crop of every image each epoch. Received: cache='memory' "
                         "with transform='photo'")
    return transform == "small" and (cache == "memory" or (cache == "auto" and fits)), decoded

def open_folder(folder, *, image_size=None, test_fraction=0.2, seed=0, bad_images="error", transform="auto",
                crop_fraction=images.CROP_FRACTION, cache="auto"):
    """Lists an image folder for a run and chooses how it is fed (see the module docstring).

    Returns:
        ``(x_train, y_train), (x_test, y_test), info`` like `keras_resnet.data.load`'s; streamed,
        ``x_*`` are arrays of file paths and ``info["stream"]`` holds what the streams need; held in
        memory, they are the decoded uint8 arrays. ``info["transforms"]`` records the recipe either way.
    """
    folder = Path(os.path.expanduser(os.fspath(folder)))
    image_size = check_image_size(image_size)
    check_choice("bad_images", bad_images, BAD_IMAGES)
    check_choice("cache", cache, CACHE)
    check_number("crop_fraction", crop_fraction, 0, 1, low_open=True)
    listing = folders.list_folder(folder, test_fraction, seed)
    channels, first_size, line = folders.probe(listing.all_paths)
    size = tuple(image_size or first_size)
    transform = images.choose_transform(transform, size)
    transforms = images.describe(transform, size, crop_fraction)
    info = {"name": folder.resolve().name, "num_classes": len(listing.class_names),
            "class_names": listing.class_names, "flip": True, "source": str(folder),
            "input_shape": size + (channels,), "transforms": transforms}
    n = len(listing.train_paths) + len(listing.test_paths)
    held, decoded = hold_in_memory(n, size, channels, transform, cache)
    print(f"data: {folder}: {len(listing.train_paths)} training and {len(listing.test_paths)} test files, "
          f"{line}; " + (f"held in memory ({decoded / 2**20:.0f} MiB decoded)" if held else
                         "streamed from disk") + f"; {transforms['summary']}", file=sys.stderr)
    if held:
        train, bad, resized = folders.read_images(listing.train_paths, listing.train_labels, size, channels,
                                                  transform, crop_fraction)
        test, test_bad, test_resized = folders.read_images(listing.test_paths, listing.test_labels, size,
                                                           channels, transform, crop_fraction)
        bad = sorted({**bad, **test_bad}.items())
        if image_size is None:
            folders.note_resized(folder, resized + test_resized, len(train[1]) + len(test[1]), size)
        folders.report_bad_images(folder, [p for p, _ in bad], n, bad_images, bad[0][1] if bad else "")
        info["mean"], info["std"] = channel_stats(train[0])
        info["cache"] = "memory"
        return train, test, info
    stream = {"channels": channels, "size": size, "transform": transform, "crop_fraction": crop_fraction,
              "bad_images": bad_images, "folder": str(folder)}
    info.update(stream=stream, cache="none")
    info["mean"], info["std"] = sample_stats(listing.train_paths, stream, seed)
    return (listing.train_paths, listing.train_labels), (listing.test_paths, listing.test_labels), info


def sample_folder(folder, *, image_size, transform="small", crop_fraction=images.CROP_FRACTION, train_count=None,
                  test_count=None, stats=True, test_fraction=0.2, seed=0):
    """The images of a folder that a command uses, decoded, and no others: ``export`` calibrates int8
    on a few training images and verifies on a few test images.

    The folder is listed and split as `keras_resnet.data.load` splits it (`keras_resnet.data.folders.list_folder`),
    then only a seeded sample of `train_count` training files (`keras_resnet.data.pipelines.calibration_index`,
    the sample `calibration_images` takes) and the first `test_count` test files are decoded, by the
    evaluation transform at `image_size`; None decodes the whole split. Each image is the one
    ``data.load`` gives for its file. A file of the sample that does not decode is a `DatasetError`
    naming it; the files outside it are not opened (a grayscale folder's headers are read, as
    `keras_resnet.data.folders.probe` does, to find the channels).

    Returns:
        ``(x_train, y_train), (x_test, y_test), info`` like `keras_resnet.data.load`'s; ``info``'s
        ``mean`` and ``std`` come from `sample_stats` (`STATS_SAMPLE` training files), only if `stats`.
    """
    from keras_resnet.data.pipelines import calibration_index

    folder = Path(os.path.expanduser(os.fspath(folder)))
    size = check_image_size(image_size)
    listing = folders.list_folder(folder, test_fraction, seed)
    channels, _, line = folders.probe(listing.all_paths)
    transform = images.choose_transform(transform, size)
    n_train, n_test = len(listing.train_paths), len(listing.test_paths)
    train_index = np.arange(n_train) if train_count is None else calibration_index(n_train, train_count)
    test_index = np.arange(n_test)[:test_count]
    transforms = images.describe(transform, size, crop_fraction)
    print(f"data: {folder}: {n_train} training and {n_test} test files, {line}; decoding {len(train_index)} "
          f"training and {len(test_index)} test images; {transforms['summary']}", file=sys.stderr)
    splits, bad = [], {}
    for paths, labels, index in ((listing.train_paths, listing.train_labels, train_index),
                                 (listing.test_paths, listing.test_labels, test_index)):
        pixels, errors, _ = folders.read_images(paths[index], labels[index], size, channels, transform,
                                                crop_fraction)
        splits.append(pixels)
        bad.update(errors)
    bad = sorted(bad.items())
    folders.report_bad_images(folder, [p for p, _ in bad], len(train_index) + len(test_index), "error",
                              bad[0][1] if bad else "")
    info = {"name": folder.resolve().name, "num_classes": len(listing.class_names),
            "class_names": listing.class_names, "flip": True, "source": str(folder),
            "input_shape": size + (channels,), "transforms": transforms}
    if stats:
        stream = {"channels": channels, "size": size, "transform": transform, "crop_fraction": crop_fraction,
                  "folder": str(folder)}
        info["mean"], info["std"] = sample_stats(listing.train_paths, stream, seed)
    return splits[0], splits[1], info


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def sample_stats(paths, stream, seed=0, count=None):
    """Per-channel mean and std of `count` (default `STATS_SAMPLE`) training files, seeded, in the
    evaluation transform's pixels."""
    count = count or STATS_SAMPLE
    index = np.sort(np.random.default_rng((seed, 3)).permutation(len(paths))[:count])
    pixels = []
    for i in index:
        try:
            pixels.append(_eval_pixels(paths[i], stream))
        except images.ImageError:
            continue  # named when the stream meets it
    if not pixels:
        raise DatasetError(f"{stream['folder']}: none of {len(index)} sampled training files decodes.")
    return channel_stats(np.stack(pixels))


def _eval_pixels(path, stream):
    pixels = images.read_image(path, stream["channels"])
    return images.eval_transform(pixels, stream["size"], stream["transform"], stream["crop_fraction"])


def epoch_order(n, batch_size, seed, epoch, process=0, processes=1):
    """The file indices (int64) one process reads in an epoch: a permutation of ``range(n)`` drawn
    from ``(seed, epoch)``, cut into ``n // batch_size`` whole global batches, of which the process
    takes rows ``p * B/P .. (p+1) * B/P``."""
    order = np.random.default_rng((seed, 2, epoch)).permutation(n)
    steps, share = n // batch_size, batch_size // processes
    rows = order[:steps * batch_size].reshape(steps, batch_size)
    return np.ascontiguousarray(rows[:, process * share:(process + 1) * share]).reshape(-1).astype(np.int64)


def eval_order(n, batch_size, process=0, processes=1):
    """The file indices one process evaluates: its rows of every batch of ``range(n)`` (the last batch
    may be short; its length must divide by the processes)."""
    parts = []
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        share = len(rows) // processes
        parts.append(rows[process * share:(process + 1) * share])
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


class BadFiles:
    """Files a stream could not decode: ``(path, reason)``, recorded from tf.data's threads."""

    def __init__(self):
        self.lock, self.found, self.reported = threading.Lock(), {}, 0

    def add(self, path, reason):
        with self.lock:
            self.found.setdefault(path, reason)

    def new(self):
        """The files found since the last call."""
        with self.lock:
            items = list(self.found.items())[self.reported:]
            self.reported = len(self.found)
        return items


def crop_draws(seed, epoch, index):
    """The photo recipe's uniform draws for one image in one epoch, float64 ``(1 + 4 *
    CROP_ATTEMPTS,)``: the flip (``u[0] < 0.5``), then `keras_resnet.data.images.crop_window`'s draws.
    Stateless, from ``(seed, epoch, index)`` alone. TensorFlow, in the graph."""
    import tensorflow as tf

    key = tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)
    return tf.random.stateless_uniform((4 * images.CROP_ATTEMPTS + 1,), seed=tf.stack([key, tf.cast(index, tf.int64)]),
                                       dtype=tf.float64)


def crop_window(height, width, u):
    """`keras_resnet.data.images.crop_window` in TensorFlow: ``(top, left, h, w)`` int32 of an image of
    ``height`` x ``width`` from the draws ``u`` ``(CROP_ATTEMPTS, 4)`` float64 (a test holds the two
    equal). All attempts are computed at once and the first that fits is taken."""
    import tensorflow as tf

    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    area = height * width
    lo, hi = np.log(images.CROP_RATIO[0]), np.log(images.CROP_RATIO[1])
    target = area * (images.CROP_AREA[0] + (images.CROP_AREA[1] - images.CROP_AREA[0]) * u[:, 0])
    ratio = tf.exp(lo + (hi - lo) * u[:, 1])
    w, h = tf.round(tf.sqrt(target * ratio)), tf.round(tf.sqrt(target / ratio))  # half to even, as round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    top, left = tf.floor(u[:, 2] * (height - h + 1)), tf.floor(u[:, 3] * (width - w + 1))
    first = tf.argmax(tf.cast(fits, tf.int32))
    aspect = width / height
    fw = tf.where(aspect > images.CROP_RATIO[1], tf.round(height * images.CROP_RATIO[1]), width)
    fh = tf.where(aspect < images.CROP_RATIO[0], tf.round(width / images.CROP_RATIO[0]), height)
    fallback = tf.stack([tf.floor((height - fh) / 2), tf.floor((width - fw) / 2), fh, fw])
    window = tf.where(tf.reduce_any(fits), tf.stack([top[first], left[first], h[first], w[first]]), fallback)
    return tf.cast(window, tf.int32)


def photo_loader(paths, stream, bad):
    """(index, draws) -> the photo recipe's crop of a file that TensorFlow does not decode here (not a
    JPEG, a JPEG without its end marker, or a colour JPEG of a grayscale run), decoded by Pillow in
    Python: ``(pixels, ok)``; a file that does not decode is recorded in `bad`."""
    channels = stream["channels"]

    def load(index, u):
        path = paths[index]
        try:
            pixels = images.read_image(path, channels)
        except (OSError, images.ImageError) as e:
            bad.add(path, _reason(e))
            return NO_PIXELS[channels], False
        top, left, ch, cw = images.crop_window(*pixels.shape[:2], u[1:].reshape(images.CROP_ATTEMPTS, 4))
        return np.ascontiguousarray(pixels[top:top + ch, left:left + cw]), True

    return load


def crop_and_resize(load, path, index, epoch, seed, size, channels):
    """The photo recipe's training transform of one file: float32 pixels at `size`, and ok.

    A JPEG is read, its window drawn (`crop_draws`, `crop_window`) and decoded in the graph, with no
    Python: ``decode_and_crop_jpeg`` decodes the window with a margin of one 16-pixel block (there the
    chroma upsampling sees the neighbours of a whole decode, so the pixels are Pillow's) and the
    window is cut from it. Other files go to `load` (Pillow, `photo_loader`)."""
    import tensorflow as tf

    data = tf.io.read_file(path)
    u = crop_draws(seed, epoch, index)
    # a JPEG with its end marker (a truncated one goes to Pillow, which names it; so does one padded
    # with NULs after the marker, which Pillow reads)
    whole = (tf.strings.substr(data, 0, 3) == JPEG_START) & (tf.strings.substr(
        data, tf.maximum(tf.strings.length(data) - 2, 0), 2) == JPEG_END)

    def jpeg(header):
        top, left, ch, cw = tf.unstack(crop_window(header[0], header[1], tf.reshape(u[1:], (-1, 4))))
        t, l = tf.maximum(top - JPEG_MARGIN, 0), tf.maximum(left - JPEG_MARGIN, 0)
        b, r = tf.minimum(top + ch + JPEG_MARGIN, header[0]), tf.minimum(left + cw + JPEG_MARGIN, header[1])
        decoded = tf.io.decode_and_crop_jpeg(data, tf.stack([t, l, b - t, r - l]), channels=channels,
                                             dct_method="INTEGER_ACCURATE")
        return decoded[top - t:top - t + ch, left - l:left - l + cw], tf.constant(True)

    def jpeg_or_other():
        header = tf.image.extract_jpeg_shape(data)
        if channels == 3:
            return jpeg(header)
        return tf.cond(header[2] == 1, lambda: jpeg(header), other)  # colour to gray: Pillow's formula

    def other():
        pixels, ok = tf.numpy_function(load, [index, u], (tf.uint8, tf.bool), stateful=False)
        return tf.ensure_shape(pixels, (None, None, channels)), tf.ensure_shape(ok, ())

    crop, ok = tf.cond(whole, jpeg_or_other, other)
    crop = tf.ensure_shape(crop, (None, None, channels))
    x = resize_crop(crop, size)
    x = tf.cond(u[0] < 0.5, lambda: tf.reverse(x, [1]), lambda: x)  # a strided slice costs 4x
    return tf.ensure_shape(x, tuple(size) + (channels,)), ok


def resize_crop(crop, size):
    """A training crop -> float32 at `size`: bilinear, antialiased when shrinking as torchvision's is
    (growing, the two filters are the same and the plain one costs half as much)."""
    import tensorflow as tf

    shrinks = tf.reduce_any(tf.shape(crop)[:2] > size)
    return tf.cond(shrinks, lambda: tf.image.resize(crop, size, method="bilinear", antialias=True),
                   lambda: tf.image.resize(crop, size, method="bilinear"))


def _eval_loader(paths, stream, bad):
    size, channels = stream["size"], stream["channels"]

    def load(index):
        try:
            return _eval_pixels(paths[index], stream), True
        except (OSError, images.ImageError) as e:
            bad.add(paths[index], _reason(e))
            return np.zeros(tuple(size) + (channels,), np.uint8), False

    return load


def _reason(e):
    return str(e).split(": ", 1)[-1] if isinstance(e, images.ImageError) else f"cannot read it: {e}"


def _py(fn, args, shape, channels):
    import tensorflow as tf

    pixels, ok = tf.numpy_function(fn, args, (tf.uint8, tf.bool), stateful=False)
    return tf.ensure_shape(pixels, tuple(shape) + (channels,)), tf.ensure_shape(ok, ())


def train_stream(paths, labels, info, batch_size, *, seed=0, start_epoch=0, erase=0.0, process=0,
                 processes=1, bad=None):
    """Normalised float32 training batches of this process's rows, epoch after epoch from
    `start_epoch` (pass ``steps_per_epoch=len(paths) // batch_size`` to ``fit``)."""
    import tensorflow as tf

    stream = info["stream"]
    size, channels = stream["size"], stream["channels"]
    bad = bad if bad is not None else BadFiles()
    n, share = len(paths), batch_size // processes
    steps = n // batch_size
    labels_t = tf.constant(np.asarray(labels, np.int64))
    photo = stream["transform"] == "photo"
    paths_t = tf.constant([os.fsencode(str(p)) for p in paths]) if photo else None
    scale, offset = scale_offset(info)
    load = photo_loader(paths, stream, bad) if photo else _eval_loader(paths, stream, bad)

    def normalised(i, x, ok):
        return i, x * scale + offset, ok

    def epoch_files(epoch):
        order = tf.numpy_function(lambda e: epoch_order(n, batch_size, seed, int(e), process, processes),
                                  [epoch], tf.int64, stateful=False)
        files = tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, (steps * share,)))
        if photo:  # normalised image by image, while its pixels are in the cache (a batch is 38 MB at 224)
            files = files.map(lambda i: normalised(i, *crop_and_resize(load, paths_t[i], i, epoch, seed, size,
                                                                          channels)),
                              num_parallel_calls=tf.data.AUTOTUNE)
        else:
            files = files.map(lambda i: (i, *_py(load, [i], size, channels)), num_parallel_calls=tf.data.AUTOTUNE)
        # a file that does not decode is left out, the epoch filled up from its start (a JPEG whose
        # body is corrupt stops its decode in the graph: left out too, unnamed)
        files = files.ignore_errors().filter(lambda i, x, ok: ok).repeat(2).take(steps * share)
        batches = files.batch(share, drop_remainder=True)
        steps_t = tf.data.Dataset.range(steps)
        return tf.data.Dataset.zip(batches, steps_t).map(lambda b, s: (b, s, epoch))

    def finish(batch, step, epoch):
        index, x, _ = batch
        y = tf.gather(labels_t, index)
        if photo:
            return x, y
        # the small-image recipe: the whole global batch's draws, this process's rows of them
        u = tf.random.stateless_uniform((batch_size, 8), seed=tf.stack([tf.cast(seed, tf.int64),
                                                                        epoch * steps + step]))
        u = u[process * share:(process + 1) * share]
        return augment_batch(x, u, info, erase, tf_ops()), y

    ds = tf.data.Dataset.range(start_epoch, 2**31).flat_map(epoch_files)
    # two batches ahead: memory flat (the photo recipe's batches are finished: labels alone)
    return ds.map(finish, num_parallel_calls=None if photo else tf.data.AUTOTUNE).prefetch(2)


def eval_stream(paths, labels, info, batch_size, *, process=0, processes=1, bad=None):
    """Normalised float32 evaluation batches ``(x, y, weight)`` of this process's rows of every batch,
    in file order; a file that does not decode gets weight 0 (so every process has the same batches)."""
    import tensorflow as tf

    stream = info["stream"]
    bad = bad if bad is not None else BadFiles()
    load = _eval_loader(paths, stream, bad)
    order = eval_order(len(paths), batch_size, process, processes)
    labels_t = tf.constant(np.asarray(labels, np.int64))
    scale, offset = scale_offset(info)
    ds = tf.data.Dataset.from_tensor_slices(order).map(
        lambda i: (i, *_py(load, [i], stream["size"], stream["channels"])), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size // processes)
    ds = ds.map(lambda i, x, ok: (tf.cast(x, tf.float32) * scale + offset, tf.gather(labels_t, i),
                                  tf.cast(ok, tf.float32)))
    return ds.prefetch(tf.data.AUTOTUNE)


class BadFileCheck(keras.callbacks.Callback):
    """Stops the run after the batch that met an unreadable file (``bad_images="error"``), with a
    `DatasetError` naming it; with ``"skip"``, one line per epoch names the files left out."""

    def __init__(self, bad, bad_images, folder):
        super().__init__()
        self.bad, self.bad_images, self.folder = bad, bad_images, folder
        self.skipped = []

    def check(self):
        new = self.bad.new()
        if new and self.bad_images == "error":
            path, reason = new[0]
            more = f" ({len(new)} files so far)" if len(new) > 1 else ""
            raise DatasetError(f"{path}: {reason}{more}. Delete or replace it and run the same command "
                               "again (the run resumes from its last finished epoch), or pass "
                               "bad_images='skip' (--bad-images skip) to leave such files out.")
        self.skipped += [path for path, _ in new]

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        self.check()

    def on_epoch_end(self, epoch, logs=None):
        self.check()
        if self.skipped:
            shown = ", ".join(self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            print(f"warning: {self.folder}: skipped {len(self.skipped)} image files that do not decode "
                  f"in epoch {epoch + 1}: {shown}", file=sys.stderr)
            self.skipped = []
