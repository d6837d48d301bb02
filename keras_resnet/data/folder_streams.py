"""An image folder as a streamed source: `open_folder` lists it (no decoding), draws the test split
from the file list, takes the normalisation statistics from `STATS_SAMPLE` training files and chooses
how the run is fed; `FolderReader` reads one split's files for `keras_resnet.data.streams`.

- ``memory``: a folder of the small-image recipe whose decoded images take at most `CACHE_BUDGET`
  (and an eighth of the machine's memory) is decoded once into arrays, then trained as IDX sets are;
- ``stream``: otherwise, and always for the photo recipe (a new crop is decoded every epoch).

One line says which, and ``cache="memory"`` or ``"none"`` overrides the choice. `sample_folder` lists a
folder the same way and decodes only the few images a command uses (``export``'s int8 calibration
sample and verification images). The evaluation pixels of a file are
`keras_resnet.data.images.eval_transform`'s, the transform ``evaluate``, ``export`` and ``predict``
apply. TensorFlow only, imported inside the functions.
"""

import os
import sys
from pathlib import Path

import numpy as np

from keras_resnet.data import folders, images
from keras_resnet.data.common import (
    BAD_IMAGES, CACHE, STATS_SAMPLE, DatasetError, channel_stats, check_image_size, hold_in_memory,
    process_rows, subset_index)
from keras_resnet.data.transforms import decode_error
from keras_resnet.utils.checks import check_choice, check_number


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
    info = folders.folder_info(folder, listing, input_shape=size + (channels,), transforms=transforms)
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
        val, val_bad = (None, {}) if listing.val_paths is None else folders.read_images(
            listing.val_paths, listing.val_labels, size, channels, transform, crop_fraction)[:2]
        if val is not None:
            info["validation"] = val
        bad = sorted({**bad, **test_bad, **val_bad}.items())
        if image_size is None:
            folders.note_resized(folder, resized + test_resized, len(train[1]) + len(test[1]), size)
        folders.report_bad_images(folder, [p for p, _ in bad], n, bad_images, bad[0][1] if bad else "")
        info["mean"], info["std"] = channel_stats(train[0])
        info["cache"] = "memory"
        return train, test, info
    stream = {"channels": channels, "size": size, "transform": transform, "crop_fraction": crop_fraction,
              "bad_images": bad_images, "folder": str(folder)}
    info.update(stream=stream, cache="none")
    if listing.val_paths is not None:
        info["validation"] = (listing.val_paths, listing.val_labels)
    info["mean"], info["std"] = sample_stats(listing.train_paths, stream, seed)
    return (listing.train_paths, listing.train_labels), (listing.test_paths, listing.test_labels), info


def sample_folder(folder, *, image_size, transform="small", crop_fraction=images.CROP_FRACTION, train_count=None,
                  test_count=None, stats=True, test_fraction=0.2, seed=0):
    """The images of a folder that a command uses, decoded, and no others: ``export`` calibrates int8
    on a few training images and verifies on a few test images.

    The folder is listed and split as `keras_resnet.data.load` splits it (`keras_resnet.data.folders.list_folder`),
    then only a seeded sample of `train_count` training files (`keras_resnet.data.pipelines.calibration_index`,
    the sample `calibration_images` takes) and the `test_count` test files of `subset_index` are decoded, by the
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
    test_index = subset_index(listing.test_labels, test_count)
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
    info = folders.folder_info(folder, listing, input_shape=size + (channels,), transforms=transforms)
    if stats:
        stream = {"channels": channels, "size": size, "transform": transform, "crop_fraction": crop_fraction,
                  "folder": str(folder)}
        info["mean"], info["std"] = sample_stats(listing.train_paths, stream, seed)
    return splits[0], splits[1], info


def sample_stats(paths, stream, seed=0, count=None):
    """Per-channel mean and std of `count` (default `STATS_SAMPLE`) training files, seeded, in the
    evaluation transform's pixels. A file of the sample that does not decode stops a run of
    ``bad_images="error"`` here, before training, with one line naming it; otherwise it is left out
    of the sample (the stream names it when it meets it)."""
    count = count or STATS_SAMPLE
    index = np.sort(np.random.default_rng((seed, 3)).permutation(len(paths))[:count])
    pixels = []
    for i in index:
        try:
            pixels.append(_eval_pixels(paths[i], stream))
        except images.ImageError as e:
            if stream.get("bad_images") == "error":
                raise DatasetError(f"{e}. Delete or replace it and run the same command again, or pass "
                                   "bad_images='skip' (--bad-images skip) to leave such files out.") from None
    if not pixels:
        raise DatasetError(f"{stream['folder']}: none of {len(index)} sampled training files decodes.")
    return channel_stats(np.stack(pixels))


def _eval_pixels(path, stream):
    return images.read_for_eval(path, stream["size"], stream["transform"], stream["crop_fraction"],
                                stream["channels"])


def epoch_permutation(n, seed, epoch):
    """The order of a folder's `n` files in an epoch: a function of the seed and the epoch alone, so a
    resumed run reads the same files in the same order."""
    return np.random.default_rng((seed, 2, epoch)).permutation(n).astype(np.int64)


class FolderReader:
    """One split of a folder as `keras_resnet.data.streams` reads it: ``(index, path, label)`` records
    (the path is read, ``tf.io.read_file``, only for the rows a process keeps), and the evaluation
    pixels of a file by Pillow. A file that does not decode is recorded in `bad`, named by its path."""

    def __init__(self, paths, labels, stream, bad):
        import tensorflow as tf

        self.paths, self.stream, self.bad, self.n = paths, stream, bad, len(paths)
        self.path_tensor = tf.constant([os.fsencode(str(p)) for p in paths], tf.string, shape=(len(paths),))
        self.labels = tf.constant(np.asarray(labels, np.int64), shape=(len(paths),))

    def records(self, positions):
        import tensorflow as tf

        return positions.map(lambda i: (i, tf.gather(self.path_tensor, i), tf.gather(self.labels, i)))

    def in_order(self):
        import tensorflow as tf

        return self.records(tf.data.Dataset.range(self.n))

    def epoch(self, seed, epoch, count, batch_size, process=0, processes=1):
        """This process's records of the first `count` (whole batches) of the epoch's order: only
        its files are ever read (`epoch_order`)."""
        import tensorflow as tf

        share = count // batch_size * (batch_size // processes)
        order = tf.numpy_function(lambda e: epoch_order(self.n, batch_size, seed, int(e), process, processes),
                                  [epoch], tf.int64, stateful=False)
        return self.records(tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, (share,))))

    def encoded(self, path):
        import tensorflow as tf

        return tf.io.read_file(path)

    def name_of(self, index):
        return str(self.paths[index])

    def eval_pixels(self, index, path):
        """``(uint8 pixels at the input size, ok)``: Pillow and `images.eval_transform`, as the app."""
        import tensorflow as tf

        size, channels = tuple(self.stream["size"]), self.stream["channels"]

        def load(i):
            try:
                return _eval_pixels(self.paths[i], self.stream), True
            except (OSError, images.ImageError) as e:
                self.bad.add(self.name_of(i), decode_error(e))
                return np.zeros(size + (channels,), np.uint8), False

        pixels, ok = tf.numpy_function(load, [index], (tf.uint8, tf.bool), stateful=False)
        return tf.ensure_shape(pixels, size + (channels,)), tf.ensure_shape(ok, ())


def epoch_order(n, batch_size, seed, epoch, process=0, processes=1):
    """The file indices (int64) one process reads in an epoch of a folder of `n` files: the epoch's
    permutation, cut into ``n // batch_size`` whole global batches, this process's rows of each."""
    kept = n // batch_size * batch_size
    order = epoch_permutation(n, seed, epoch)[:kept]
    return order[process_rows(np.arange(kept), kept, batch_size, process, processes)]
