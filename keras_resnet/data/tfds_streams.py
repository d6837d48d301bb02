"""A tensorflow-datasets set as a streamed source: nothing is materialised, each batch is decoded when
it is needed (`keras_resnet.data.streams`). TensorFlow only; `keras_resnet.data` holds small sets as
arrays.

`open_tfds` reads the set's metadata (no pixels), draws the splits as example indices, takes the
normalisation statistics from the first `keras_resnet.data.common.STATS_SAMPLE` training examples, and
chooses how the run is fed by the rule of image folders (`keras_resnet.data.common.hold_in_memory`): a
set of the small-image recipe whose decoded images fit `keras_resnet.data.common.CACHE_BUDGET` (and an
eighth of the memory) is held in memory as arrays (`keras_resnet.data.load`); otherwise, and always for
the photo recipe, it is streamed. One line says which. `sample_tfds` decodes only the few examples a
command uses (``export``'s int8 calibration sample and verification images). `TfdsReader` reads one
split's examples for the streams.

- Reading: ``tfds.load(..., as_supervised=True, shuffle_files=False)`` with the image left encoded
  (``tfds.decode.SkipDecoding``) and tfds's in-memory auto-cache off, numbered in tfds's (fixed) file
  order. An example is an index into its tfds split.
- Splits: the ``"test"`` split when the set has one; else a seeded `test_fraction` of ``"train"``'s
  indices (`keras_resnet.data.tfds.held_out`, the rule of every command). Not stratified: the labels
  are not read before training.
- Training order: examples are shuffled in blocks of consecutive encoded examples (about
  `SHUFFLE_BYTES` of them) by a stateless draw from ``(seed, epoch, block)``, so epoch ``e``'s order is
  a function of the seed and ``e`` alone and a resumed run reads what the uninterrupted run would have
  read. tfds shuffles the examples when it prepares a set, so the blocks are mixed already.
- Evaluation pixels: the small recipe's resize (bilinear, antialiased when shrinking, in the graph),
  or the photo recipe's `keras_resnet.data.images.center_crop`.
"""

import sys

import numpy as np

from keras_resnet.data import images
from keras_resnet.utils.checks import check_choice, check_number
from keras_resnet.data.common import (
    CACHE, STATS_SAMPLE, DatasetError, channel_stats, check_image_size, hold_in_memory, keep_positions,
    process_rows, subset_index)
from keras_resnet.data.transforms import decode_for_eval, decode_upright
from keras_resnet.data.tfds import has_test_split, held_out, tfds_features, tfds_info, tfds_split, tfds_splits

SHUFFLE_BYTES = 64 << 20  # encoded examples one shuffle block holds
MIN_BLOCK = 256  # examples of a shuffle block, at least


def open_tfds(name, *, data_dir=None, download=False, image_size=None, test_fraction=0.2, seed=0,
              transform="auto", crop_fraction=images.CROP_FRACTION, cache="auto"):
    """Opens a tensorflow-datasets set for a run and chooses how it is fed (see the module docstring).

    Returns:
        ``(x_train, y_train), (x_test, y_test), info`` like `keras_resnet.data.load`'s. Streamed,
        ``x_*`` are int64 example indices into ``info["stream"]``'s splits and ``y_*`` are -1 (the
        labels are read with the images); held in memory, they are the decoded arrays.
    """
    from keras_resnet.data import arrays as data_lib

    image_size = check_image_size(image_size)
    check_choice("cache", cache, CACHE)
    check_number("crop_fraction", crop_fraction, 0, 1, low_open=True)
    _, tinfo = tfds_split(name, "train", data_dir, download)
    image_key, shape, label_feature = tfds_features(name, tinfo, image_size)
    size = tuple(image_size or shape[:2])
    channels = int(shape[2] or 3)
    transform = images.choose_transform(transform, size)
    transforms = images.describe(transform, size, crop_fraction)
    has_test = has_test_split(tinfo)
    counts = {s: _count(name, s, data_dir, tinfo) for s in (("train", "test") if has_test else ("train",))}
    if has_test:
        train_split, train_index = "train", np.arange(counts["train"], dtype=np.int64)
        test_split, test_index = "test", np.arange(counts["test"], dtype=np.int64)
    else:
        train_split = test_split = "train"
        train_index, test_index = held_out(counts["train"], test_fraction, seed)
    held, decoded = hold_in_memory(len(train_index) + len(test_index), size, channels, transform, cache)
    print(f"data: tfds:{name}: {len(train_index)} training and {len(test_index)} test examples, "
          f"{channels} channel(s); " + (f"held in memory ({decoded / 2**20:.0f} MiB decoded)" if held else
                                        "streamed from tensorflow-datasets' files")
          + f"; {transforms['summary']}", file=sys.stderr)
    if held:
        train, test, info = data_lib.load(name, data_dir, download, image_size=image_size,
                                          test_fraction=test_fraction, seed=seed)
        info.update(transforms=transforms, cache="memory")
        return train, test, info
    info = tfds_info(name, label_feature)
    info.update(input_shape=size + (channels,), transforms=transforms, cache="none",
                splits=tfds_splits(has_test, test_fraction, seed))
    info["stream"] = {"source": "tfds", "name": name, "data_dir": data_dir, "image_key": image_key,
                      "train_split": train_split, "test_split": test_split, "counts": counts,
                      "channels": channels, "size": size, "transform": transform,
                      "crop_fraction": crop_fraction, "bad_images": "error", "folder": f"tfds:{name}"}
    info["mean"], info["std"], info["stream"]["block"] = _sample(info, train_index)
    none = np.full(len(train_index), -1, np.int64), np.full(len(test_index), -1, np.int64)
    return (train_index, none[0]), (test_index, none[1]), info


def sample_tfds(name, *, data_dir=None, download=False, image_size=None, transform="small",
                crop_fraction=images.CROP_FRACTION, train_count=None, test_count=None, stats=True,
                test_fraction=0.2, seed=0):
    """The examples of a tensorflow-datasets set that a command uses, decoded, and no others (the
    counterpart of `keras_resnet.data.folder_streams.sample_folder`).

    The splits are every command's: the ``"test"`` split, or without one the seeded `test_fraction` of
    ``"train"`` that training holds out (`keras_resnet.data.tfds.held_out`).
    Only a seeded sample of `train_count` training examples (`keras_resnet.data.pipelines.calibration_index`)
    and the `test_count` test examples of `subset_index` are decoded, by the evaluation transform at `image_size`
    (the small recipe's resize, or the photo recipe's centre crop); None decodes the whole split.

    Returns:
        ``(x_train, y_train), (x_test, y_test), info`` like `keras_resnet.data.load`'s; ``info``'s
        ``mean`` and ``std`` come from the first `keras_resnet.data.common.STATS_SAMPLE` training
        examples, only if `stats`.
    """
    import tensorflow as tf

    from keras_resnet.data.pipelines import calibration_index

    image_size = check_image_size(image_size)
    _, tinfo = tfds_split(name, "train", data_dir, download)
    image_key, shape, label_feature = tfds_features(name, tinfo, image_size)
    size = tuple(image_size or shape[:2])
    channels = int(shape[2] or 3)
    transform = images.choose_transform(transform, size)
    has_test = has_test_split(tinfo)
    splits = ("train", "test") if has_test else ("train",)
    stream = {"name": name, "data_dir": data_dir, "image_key": image_key, "channels": channels, "size": size,
              "transform": transform, "crop_fraction": crop_fraction,
              "counts": {s: _count(name, s, data_dir, tinfo) for s in splits},
              "train_split": "train", "test_split": splits[-1]}
    if has_test:
        train_all, test_all = np.arange(stream["counts"]["train"]), np.arange(stream["counts"]["test"])
    else:
        train_all, test_all = held_out(stream["counts"]["train"], test_fraction, seed)
    train_index = train_all if train_count is None else train_all[calibration_index(len(train_all), train_count)]
    test_index = test_all[subset_index(test_all, test_count, stratified=False)]
    transforms = images.describe(transform, size, crop_fraction)
    print(f"data: tfds:{name}: {len(train_all)} training and {len(test_all)} test examples, {channels} "
          f"channel(s); decoding {len(train_index)} training and {len(test_index)} test images; "
          f"{transforms['summary']}", file=sys.stderr)
    pixels = _eval_pixels(stream)

    def decode(split, indices):
        ds = _subset(stream, split, indices).take(len(indices))  # stops at the last one
        ds = ds.map(lambda i, data, label: (pixels(data), label), num_parallel_calls=tf.data.AUTOTUNE)
        xs, ys = [np.zeros((0,) + size + (channels,), np.uint8)], [np.zeros(0, np.int64)]
        for x, y in ds.batch(256).as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int64)

    info = tfds_info(name, label_feature)
    info.update(input_shape=size + (channels,), transforms=transforms, splits=tfds_splits(has_test, test_fraction, seed))
    if stats:
        info["stream"] = stream
        info["mean"], info["std"], _ = _sample(info, train_all)
        del info["stream"]
    return decode("train", train_index), decode(stream["test_split"], test_index), info


def _count(name, split, data_dir, tinfo):
    """Examples in a split: tfds's metadata, or counted (labels only) when it has none."""
    if tinfo.splits and split in tinfo.splits:
        return int(tinfo.splits[split].num_examples)
    ds = _read({"name": name, "data_dir": data_dir, "image_key": tinfo.supervised_keys[0]}, split)
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


def _read(stream, split):
    """The split's ``(index, encoded image, label)`` in tfds's file order, nothing decoded."""
    import tensorflow_datasets as tfds

    ds, _ = tfds_split(stream["name"], split, stream["data_dir"], False, shuffle_files=False,
                       decoders={stream["image_key"]: tfds.decode.SkipDecoding()},
                       read_config=tfds.ReadConfig(try_autocache=False))
    return ds.enumerate().map(lambda i, example: (i, example[0], example[1]))


def _subset(stream, split, indices):
    """`_read` of the split, only the examples at `indices` (sorted), in that order."""
    import tensorflow as tf

    mask = np.zeros(stream["counts"][split], bool)
    mask[indices] = True
    mask = tf.constant(mask)
    return _read(stream, split).filter(lambda i, data, label: tf.gather(mask, i))


def _eval_pixels(stream):
    """encoded image -> uint8 pixels at the input size by the evaluation transform."""
    import tensorflow as tf

    size, channels = stream["size"], stream["channels"]
    if stream["transform"] == "photo":
        def crop(pixels):
            return images.center_crop(pixels, size, stream["crop_fraction"])

        def pixels(data):  # a JPEG at its reduced scale, as Pillow's evaluation decodes it
            decoded = decode_for_eval(data, channels, size, stream["crop_fraction"])
            x = tf.numpy_function(crop, [decoded], tf.uint8, stateful=False)
            return tf.ensure_shape(x, tuple(size) + (channels,))

        return pixels

    def pixels(data):
        x = decode_upright(data, channels)
        same = tf.reduce_all(tf.equal(tf.shape(x)[:2], size))
        x = tf.cond(same, lambda: x, lambda: tf.cast(tf.clip_by_value(tf.round(
            tf.image.resize(x, size, antialias=True)), 0, 255), tf.uint8))
        return tf.ensure_shape(x, tuple(size) + (channels,))

    return pixels


def _sample(info, train_index):
    """The normalisation statistics of the first `STATS_SAMPLE` training examples (evaluation
    transform), and the shuffle block that holds about `SHUFFLE_BYTES` of encoded examples."""
    import tensorflow as tf

    stream = info["stream"]
    pixels = _eval_pixels(stream)
    first = _subset(stream, stream["train_split"], train_index).take(STATS_SAMPLE)
    ds = first.map(lambda i, data, label: (pixels(data), tf.strings.length(data)),
                   num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    xs, sizes = [], []
    for x, n in ds.as_numpy_iterator():
        xs.append(x)
        sizes.append(n)
    if not xs:
        raise DatasetError(f"tfds:{stream['name']}: the training split is empty.")
    mean_bytes = max(float(np.mean(np.concatenate(sizes))), 1.0)
    block = int(min(max(SHUFFLE_BYTES // mean_bytes, MIN_BLOCK), max(len(train_index), 1)))
    return (*channel_stats(np.concatenate(xs)), block)


def _shuffled(ds, block, seed, epoch):
    """`ds` shuffled within blocks of `block` consecutive elements by stateless draws from
    ``(seed, epoch, block number)``."""
    import tensorflow as tf

    def permute(number, batch):
        order = tf.argsort(tf.random.stateless_uniform(
            tf.shape(batch[0])[:1], seed=tf.stack([seed * 1_000_003 + epoch, number])))
        return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(t, order) for t in batch))

    return ds.batch(block).enumerate().flat_map(permute)


class TfdsReader:
    """The examples at `indices` of one split of a tensorflow-datasets set as
    `keras_resnet.data.streams` reads them: ``(example index, encoded image, label)`` records from
    tfds's files in file order (`shuffled`: within blocks of about `SHUFFLE_BYTES`, drawn from the seed
    and the epoch alone), and evaluation pixels decoded in the graph. `bad` names a failed decode as
    ``tfds:NAME SPLIT example I``."""

    def __init__(self, stream, split, indices, bad):
        self.stream, self.split, self.bad = stream, split, bad
        self.indices, self.n = np.sort(np.asarray(indices, np.int64)), len(indices)
        self.pixels = _eval_pixels(stream)

    def in_order(self):
        return _subset(self.stream, self.split, self.indices)

    def epoch(self, seed, epoch, count, batch_size, process=0, processes=1):
        """This process's records (`process_rows`) of the first `count` of the epoch's order: every
        process reads the same encoded examples, and decodes its own rows."""
        rows = process_rows(np.arange(count), count, batch_size, process, processes)
        return keep_positions(_shuffled(self.in_order(), self.stream["block"], seed, epoch).take(count), rows)

    def encoded(self, data):
        return data

    def name_of(self, index):
        return f"tfds:{self.stream['name']} {self.split} example {index}"

    def eval_pixels(self, index, data):
        import tensorflow as tf

        return self.pixels(data), tf.constant(True)

