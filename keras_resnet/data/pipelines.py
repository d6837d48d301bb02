"""The training input pipeline on top of `keras_resnet.data`'s uint8 arrays: normalisation and
augmentation, as tf.data or as a NumPy ``keras.utils.PyDataset``.

The pipeline exists twice with the same recipe (He et al. 2015, section 4.2: pad by 1/8 of the side,
random crop back, horizontal flip; optionally random erasing, Zhong et al. 2017): ``tf_dataset`` as
tf.data, and ``numpy_dataset`` as a ``keras.utils.PyDataset`` in numpy only, for the JAX or PyTorch
backend on a machine without TensorFlow. Both augment a whole batch at once from one table of uniform
draws per image (``augment_batch``), so they differ only in where the random numbers come from.
TensorFlow is imported inside the functions that need it, never at module import. Every public name
here is also importable from `keras_resnet.data`.
"""

import math
from collections.abc import Mapping
from types import SimpleNamespace

import keras
import numpy as np

from keras_resnet.utils.checks import check_bool, check_int, check_number

ERASE_AREA = (0.02, 0.4)  # random erasing: fraction of the image area (Zhong et al. 2017, s_l, s_h)
ERASE_RATIO = 0.3  # and aspect ratio in [r_1, 1/r_1]
INFO_KEYS = ("mean", "std", "flip")


# ---------------------------------------------------------------------------------------------------
# Normalisation


def check_info(info, keys=INFO_KEYS):
    """`info` must be a dict like the one `keras_resnet.data.load` returns, holding `keys`."""
    if not isinstance(info, Mapping) or any(k not in info for k in keys):
        got = f"with keys {sorted(info)}" if isinstance(info, Mapping) else f"of type {type(info).__name__}"
        raise ValueError("`info` must be the dict returned by keras_resnet.data.load, with keys "
                         f"{keys}. Received: info {got}")
    return info


def scale_offset(info):
    """float32 per-channel (scale, offset) such that (x / 255 - mean) / std == x * scale + offset."""
    mean = np.asarray(info["mean"], np.float64)
    std = np.asarray(info["std"], np.float64)
    return (1 / (255 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def normalize(x, info):
    """uint8 NHWC images -> float32 ``(x / 255 - mean) / std`` with ``info``'s per-channel statistics.

    Works on numpy arrays (returns numpy) and TensorFlow tensors (returns a tensor).
    """
    check_info(info, ("mean", "std"))
    scale, offset = scale_offset(info)
    if type(x).__module__.startswith("tensorflow"):
        import tensorflow as tf

        return tf.cast(x, tf.float32) * scale + offset
    return np.asarray(x).astype(np.float32) * scale + offset


def calibration_images(x, info, count=200, seed=0):
    """A seeded random sample of ``min(count, len(x))`` images, normalised float32: int8 calibration data.
    The sample is `calibration_index`'s, so a caller that decodes only those images gets the same."""
    check_int("count", count, 1)
    check_int("seed", seed, 0)
    return normalize(x[calibration_index(len(x), count, seed)], info)


def calibration_index(n, count=200, seed=0):
    """The sorted indices of the ``min(count, n)`` images out of `n` that `calibration_images` takes:
    a seeded random sample without replacement (int64)."""
    index = np.random.default_rng(seed).choice(n, size=min(count, n), replace=False)
    return np.sort(index).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# The pipeline: one augmentation, two array libraries


# ---------------------------------------------------------------------------------------------------
# The pipeline: one augmentation, two array libraries


def _pad(side):
    return side // 8  # 4 px at 32, 3 px at 28


def augment_batch(x, u, info, erase, ops):
    """Augments and normalises a uint8 batch ``(B, H, W, C)`` from uniform draws ``u`` ``(B, 8)``.

    Reflect-pad by 1/8 of the side and crop back at a random offset, flip horizontally if ``info``
    allows, then normalise and erase one random box with probability ``erase`` (filled with 0, the
    dataset mean after normalisation). The pad and crop are one gather of reflected indices.
    ``ops`` holds the few array functions used, from numpy or TensorFlow.
    """
    h, w = x.shape[1], x.shape[2]

    def crop(offset, side):
        pad = _pad(side)
        i = ops.abs(ops.floor(offset * (2 * pad + 1)) - pad + ops.arange(side))
        return ops.minimum(i, 2 * (side - 1) - i)  # reflect at both edges (pad < side)

    rows, cols = crop(u[:, 0:1], h), crop(u[:, 1:2], w)
    if info["flip"]:
        cols = ops.where(u[:, 2:3] < 0.5, (w - 1) - cols, cols)
    scale, offset = scale_offset(info)
    out = ops.float32(ops.take(x, rows, cols)) * scale + offset
    if erase > 0:
        lo, hi = ERASE_AREA
        area = h * w * (lo + (hi - lo) * u[:, 3:4])
        ratio = ops.exp(math.log(ERASE_RATIO) * (1 - 2 * u[:, 4:5]))
        eh = ops.clip(ops.floor(ops.sqrt(area * ratio) + 0.5), 1, h)
        ew = ops.clip(ops.floor(ops.sqrt(area / ratio) + 0.5), 1, w)
        top = ops.minimum(ops.floor(u[:, 5:6] * (h - eh + 1)), h - eh)
        left = ops.minimum(ops.floor(u[:, 6:7] * (w - ew + 1)), w - ew)
        r, c = ops.arange(h), ops.arange(w)
        in_rows = (r >= top) & (r < top + eh) & (u[:, 7:8] < erase)
        in_cols = (c >= left) & (c < left + ew)
        out = ops.where((in_rows[:, :, None] & in_cols[:, None, :])[..., None], 0.0, out)
    return out


NUMPY_OPS = SimpleNamespace(
    abs=np.abs, floor=np.floor, sqrt=np.sqrt, exp=np.exp, minimum=np.minimum, clip=np.clip, where=np.where,
    arange=lambda n: np.arange(n, dtype=np.float32),
    float32=lambda a: a.astype(np.float32),
    take=lambda x, rows, cols: x[np.arange(len(x))[:, None, None], rows.astype(np.intp)[:, :, None],
                                 cols.astype(np.intp)[:, None, :]],
)


def tf_ops():
    import tensorflow as tf

    def take(x, rows, cols):
        x = tf.gather(x, tf.cast(rows, tf.int32), axis=1, batch_dims=1)
        return tf.gather(x, tf.cast(cols, tf.int32), axis=2, batch_dims=1)

    return SimpleNamespace(
        abs=tf.abs, floor=tf.floor, sqrt=tf.sqrt, exp=tf.exp, minimum=tf.minimum,
        clip=tf.clip_by_value, where=tf.where, arange=lambda n: tf.range(n, dtype=tf.float32),
        float32=lambda a: tf.cast(a, tf.float32), take=take)


def _check_pipeline_args(x, y, info, batch_size, training, augment, seed, erase):
    check_info(info)
    x_shape = getattr(x, "shape", None)
    if x_shape is None or len(x_shape) != 4 or getattr(x, "dtype", None) != np.uint8:
        raise ValueError("`x` must be a uint8 array of images (N, H, W, C). Received: "
                         f"x with shape={x_shape}, dtype={getattr(x, 'dtype', type(x).__name__)}")
    if len(y) != len(x):
        raise ValueError(f"`y` must hold one label per image. Received: {len(y)} labels for {len(x)} images")
    if x_shape[-1] != len(info["mean"]):
        raise ValueError(f"`x` has {x_shape[-1]} channel(s) but info['mean'] has {len(info['mean'])}.")
    check_int("batch_size", batch_size, 1)
    check_bool("training", training)
    check_bool("augment", augment)
    check_int("seed", seed, 0)
    check_number("erase", erase, 0, 1)
    if training:  # the last partial batch is dropped: fewer images than a batch would give no batch
        check_batch_size(batch_size, len(x), "images of `x` (training drops the last partial batch)")


def check_batch_size(batch_size, n_train, what="training images left after the validation split"):
    """Checks that `n_train` training images fill at least one batch of `batch_size`.

    Training drops the last partial batch, so a batch larger than the training split leaves nothing
    to train on; the error suggests the largest power of two that fits.

    Args:
        batch_size: images per batch, a positive integer.
        n_train: how many training images there are.
        what: how the message names those images.

    Returns:
        ``batch_size``.

    Raises:
        ValueError: if ``batch_size > n_train``, e.g. "`batch_size`=128 is larger than the 96 training
            images left after the validation split; pass --batch-size 64 (batch_size=64) or less".
    """
    check_int("batch_size", batch_size, 1)
    check_int("n_train", n_train, 0)
    if n_train == 0:
        raise ValueError(f"there are no {what}: nothing to train on. Received: batch_size={batch_size}")
    if batch_size > n_train:
        fits = 2 ** (int(n_train).bit_length() - 1)
        raise ValueError(f"`batch_size`={batch_size} is larger than the {n_train} {what}; "
                         f"pass --batch-size {fits} (batch_size={fits}) or less")
    return batch_size


def tf_dataset(x, y, info, batch_size=128, training=False, augment=True, seed=0, erase=0.0):
    """A tf.data pipeline of normalised float32 image batches and int64 labels from uint8 arrays.

    In training: a seeded shuffle that changes every epoch, batches of exactly `batch_size` (the last
    partial batch dropped), and with ``augment`` the augmentation of the module docstring, seeded and
    different every epoch. Augmentation runs on whole batches (batch first, then map), in parallel.
    Outside training: the arrays in order, every sample, normalisation only.

    Args:
        x: uint8 images ``(N, H, W, C)``.
        y: int labels ``(N,)``; they stay sparse.
        info: the dict from `load` (``mean``, ``std``, ``flip``).
        batch_size: images per batch.
        training: shuffle, augment and drop the remainder.
        augment: augment in training (pad-crop, flip if ``info["flip"]``, erasing).
        seed: seed of the shuffle and of the augmentation.
        erase: probability of random erasing per image, in [0, 1].

    Returns:
        A ``tf.data.Dataset`` of ``(images, labels)``.
    """
    import tensorflow as tf

    _check_pipeline_args(x, y, info, batch_size, training, augment, seed, erase)
    images, labels = tf.constant(x), tf.constant(np.asarray(y, np.int64))
    ds = tf.data.Dataset.range(len(x))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    if training and augment:
        ops = tf_ops()
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def fn(index, draw_seed):
            u = tf.random.stateless_uniform((tf.shape(index)[0], 8), seed=draw_seed)
            return augment_batch(tf.gather(images, index), u, info, erase, ops), tf.gather(labels, index)

        ds = tf.data.Dataset.zip(ds, draws).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda index: (normalize(tf.gather(images, index), info), tf.gather(labels, index)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class NumpyDataset(keras.utils.PyDataset):
    """The `tf_dataset` recipe in numpy only: see `numpy_dataset`."""

    def __init__(self, x, y, info, batch_size=128, training=False, augment=True, seed=0, erase=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        _check_pipeline_args(x, y, info, batch_size, training, augment, seed, erase)
        self.x, self.y, self.info = x, np.asarray(y, np.int64), info
        self.batch_size, self.training, self.augment = batch_size, training, augment
        self.seed, self.erase = seed, erase
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self):
        if not self.training:
            return np.arange(len(self.x))
        return np.random.default_rng((self.seed, 0, self.epoch)).permutation(len(self.x))

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.training else -(-n // self.batch_size)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"batch index {i} out of range for {len(self)} batches")
        index = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        x = self.x[index]
        if self.training and self.augment:
            u = np.random.default_rng((self.seed, 1, self.epoch, i)).random((len(x), 8), np.float32)
            x = augment_batch(x, u, self.info, self.erase, NUMPY_OPS)
        else:
            x = normalize(x, self.info)
        return x, self.y[index]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._permutation()


FIT_ITERATORS_PER_EPOCH = 2  # iterators Keras's fit makes of a tf.data pipeline per epoch (a test pins it)


def start_at_epoch(dataset, epoch):
    """Positions a training pipeline of `tf_dataset` or `numpy_dataset`, not iterated yet, so that
    ``fit(..., initial_epoch=epoch)`` trains epoch `epoch` and the next ones on the shuffles and
    augmentations that an uninterrupted ``fit`` from epoch 0 gets in them: a resumed run reads what the
    whole run read. Returns `dataset`.

    A `tf_dataset` draws the seeds of a pass when an iterator is made, and Keras's ``fit`` makes
    `FIT_ITERATORS_PER_EPOCH` per epoch: that many iterators per epoch are made and dropped (no batch
    is read). A `numpy_dataset`'s pass is a function of its epoch number alone.
    """
    if isinstance(dataset, NumpyDataset):
        dataset.epoch = epoch
        dataset._order = dataset._permutation()
        return dataset
    for _ in range(FIT_ITERATORS_PER_EPOCH * epoch):
        iter(dataset)
    return dataset


def numpy_dataset(x, y, info, batch_size=128, training=False, augment=True, seed=0, erase=0.0, **kwargs):
    """The `tf_dataset` recipe as a ``keras.utils.PyDataset`` in numpy only (no TensorFlow import).

    For training with the JAX or PyTorch backend where TensorFlow is not installed. Same arguments and
    the same augmentation as `tf_dataset` (a different random stream); batch ``i`` of epoch ``e`` is a
    function of ``(seed, e, i)`` only, so it is reproducible with any number of workers, and
    ``on_epoch_end`` (called by ``fit``) reshuffles. ``kwargs`` go to ``PyDataset``
    (``workers``, ``use_multiprocessing``, ``max_queue_size``).

    Returns:
        A `NumpyDataset` of ``(float32 images, int64 labels)`` batches.
    """
    return NumpyDataset(x, y, info, batch_size, training, augment, seed, erase, **kwargs)

