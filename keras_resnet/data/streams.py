"""The streamed pipeline: an image folder's files or a tensorflow-datasets set's examples, read and
decoded batch by batch through tf.data, nothing held whole in memory. One `train_stream` and one
`eval_stream` serve both sources; a source is a reader (`reader_for`: `folder_streams.FolderReader`,
`tfds_streams.TfdsReader`) that lists ``(index, payload, label)`` records in order (``in_order``) or
a process's rows of an epoch (``epoch``), reads a payload's encoded bytes (``encoded``) and decodes
the evaluation pixels (``eval_pixels``); ``name_of`` names an example for a bad-file line.

- Training: the epoch's order is a function of the seed and the epoch only, so a resumed run reads the
  same examples in the same order (the reader's ``epoch``). Under a multi-process job each process
  keeps only its rows of every global batch (`keras_resnet.data.common.process_rows`, the one rule of
  the package: rows ``p*B/P .. (p+1)*B/P``), before anything is decoded. The photo recipe decodes a random-resized-crop
  (`keras_resnet.data.transforms.photo_crop`, the same for both sources); the small-image recipe
  decodes and resizes, then pads, crops, flips and erases a batch as `keras_resnet.data.pipelines`
  does, with the global batch's draws.
- Evaluation: the source's evaluation pixels, rows of each batch split across processes the same way.
- A file that does not decode is named: with ``bad_images="error"`` the run stops after the batch that
  met it with a `DatasetError` naming it (`BadFileCheck`; the run resumes from its last finished
  epoch); with ``"skip"`` it is left out (the epoch is filled up from its start, so every epoch has
  its steps) and one line per epoch names the files skipped. In evaluation it gets weight 0.

TensorFlow only, imported inside the functions; the NumPy pipeline and the arrays of
`keras_resnet.data` stay for small sets and machines without TensorFlow.
"""

import sys
import threading

import keras
import numpy as np

from keras_resnet.data import folder_streams, tfds_streams
from keras_resnet.data.common import DatasetError, keep_positions, process_rows
from keras_resnet.data.folder_streams import epoch_order, open_folder, sample_folder  # noqa: F401 (their 0.1 path)
from keras_resnet.data.pipelines import augment_batch, scale_offset, tf_ops
from keras_resnet.data.transforms import photo_crop, pillow_fallback



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


def reader_for(x, y, info, split="train", bad=None):
    """The reader of a stream's examples: an image folder's files (`x` paths, `y` labels) or a
    tensorflow-datasets split's examples (`x` example indices of ``info["stream"]``'s training or test
    split, as `split` says; their labels are read with the images)."""
    stream = info["stream"]
    bad = bad if bad is not None else BadFiles()
    if stream.get("source") == "tfds":
        return tfds_streams.TfdsReader(stream, stream[f"{split}_split"], x, bad)
    return folder_streams.FolderReader(x, y, stream, bad)


def train_stream(x, y, info, batch_size, *, seed=0, start_epoch=0, erase=0.0, process=0, processes=1, bad=None):
    """Normalised float32 training batches ``(x, y)`` of this process's rows, epoch after epoch from
    `start_epoch` (pass ``steps_per_epoch=len(x) // batch_size`` to ``fit``); `x`, `y` as
    `reader_for` takes them."""
    import tensorflow as tf

    reader = reader_for(x, y, info, "train", bad)
    stream = info["stream"]
    size, channels, photo = tuple(stream["size"]), stream["channels"], stream["transform"] == "photo"
    steps, share = len(x) // batch_size, batch_size // processes
    scale, offset = scale_offset(info)
    fallback = pillow_fallback(channels, reader.bad, reader.name_of, size)

    def pixels(index, payload, label, epoch):
        if photo:  # normalised image by image, while its pixels are in the cache (a batch is 38 MB at 224)
            image, ok = photo_crop(reader.encoded(payload), index, epoch, seed, size, channels, fallback)
            return image * scale + offset, ok, label
        return (*reader.eval_pixels(index, payload), label)

    def epoch_examples(epoch):
        mine = reader.epoch(seed, epoch, steps * batch_size, batch_size, process, processes)
        ds = mine.map(lambda i, payload, label: pixels(i, payload, label, epoch),
                      num_parallel_calls=tf.data.AUTOTUNE)
        # a file that does not decode is left out, the epoch filled up from its start (a JPEG whose
        # body is corrupt stops its decode in the graph: left out too, unnamed)
        ds = ds.ignore_errors().filter(lambda image, ok, label: ok).repeat(2).take(steps * share)
        batches = ds.batch(share, drop_remainder=True)
        return tf.data.Dataset.zip(batches, tf.data.Dataset.range(steps)).map(lambda b, s: (b, s, epoch))

    def finish(batch, step, epoch):
        images, _, labels = batch
        if photo:
            return images, labels
        # the small-image recipe: the whole global batch's draws, this process's rows of them
        u = tf.random.stateless_uniform((batch_size, 8), seed=tf.stack([tf.cast(seed, tf.int64),
                                                                        epoch * steps + step]))
        return augment_batch(images, u[process * share:(process + 1) * share], info, erase, tf_ops()), labels

    ds = tf.data.Dataset.range(start_epoch, 2**31).flat_map(epoch_examples)
    # two batches ahead: memory flat (the photo recipe's batches are finished: labels alone)
    return ds.map(finish, num_parallel_calls=None if photo else tf.data.AUTOTUNE).prefetch(2)


def eval_stream(x, y, info, batch_size, *, split="test", process=0, processes=1, bad=None):
    """Normalised float32 evaluation batches ``(x, y, weight)`` of this process's rows of every batch,
    in the examples' order; an example that does not decode gets weight 0 (so every process has the
    same batches). `split`: "test", or "train" for validation examples of a tensorflow-datasets set."""
    import tensorflow as tf

    reader = reader_for(x, y, info, split, bad)
    n = len(x)
    scale, offset = scale_offset(info)
    ds = keep_positions(reader.in_order(), process_rows(np.arange(n), n, batch_size, process, processes))
    ds = ds.map(lambda i, payload, label: (*reader.eval_pixels(i, payload), label),
                num_parallel_calls=tf.data.AUTOTUNE)
    last = n % batch_size // processes  # the rows of the short last batch that are this process's
    ds = ds.batch(batch_size // processes).apply(
        tf.data.experimental.assert_cardinality(n // batch_size + (last > 0)))  # Keras knows its end
    ds = ds.map(lambda images, ok, labels: (tf.cast(images, tf.float32) * scale + offset, labels,
                                            tf.cast(ok, tf.float32)))
    return ds.prefetch(2)


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
        self.report(f"in epoch {epoch + 1}")

    def report(self, where):
        """One line naming the files skipped since the last one (``bad_images="skip"``)."""
        if self.skipped:
            shown = ", ".join(self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            print(f"warning: {self.folder}: skipped {len(self.skipped)} image files that do not decode "
                  f"{where}: {shown}", file=sys.stderr)
            self.skipped = []
