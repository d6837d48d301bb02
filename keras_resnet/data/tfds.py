"""tensorflow-datasets sets (by name, or a prepared folder by its path): loading a split with errors that say how to get it, the features of an
image-classification set, and (for small sets and the NumPy pipeline) a split read into arrays."""

import os

import numpy as np

from keras_resnet.data.common import DatasetError, DatasetInfo, held_out_name, split_indices
from keras_resnet.data.sources import is_prepared


# tensorflow-datasets sets of digits and characters, where a mirror image is another class or none.
NO_FLIP = {"mnist", "emnist", "kmnist", "svhn_cropped", "binarized_mnist", "omniglot"}


def tfds_split(name, which, data_dir=None, download=False, **kwargs):
    """``tfds.load(name, split=which, as_supervised=True, with_info=True, **kwargs)``, its errors said
    as `DatasetError`s that name the dataset and how to get it."""
    import tensorflow_datasets as tfds

    if is_prepared(name):  # `keras-resnet prepare`'s folder: a tfds set by its path
        import tensorflow as tf

        builder = tfds.builder_from_directory(os.path.expanduser(os.fspath(name)))
        as_dataset = tf.autograph.experimental.do_not_convert(builder.as_dataset)  # a wrapt method
        return as_dataset(split=which, as_supervised=True, **kwargs), builder.info
    try:
        return tfds.load(name, split=which, data_dir=data_dir, download=download, as_supervised=True,
                         with_info=True, **kwargs)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetError(
            f"dataset={name!r} is not 'fashion_mnist' or 'mnist', not an existing directory (no "
            f"such folder: {os.path.abspath(os.path.expanduser(name))}), and not a "
            "tensorflow-datasets name (see https://www.tensorflow.org/datasets/catalog; "
            "e.g. 'cifar10').") from e
    except AssertionError as e:  # tfds: "could not find data in ..."
        where = data_dir or "tensorflow-datasets' default data_dir (~/tensorflow_datasets)"
        where += "" if data_dir is None or os.path.isdir(data_dir) else " (no such folder)"
        raise DatasetError(
            f"tensorflow-datasets dataset {name!r} is not prepared in {where}. Pass `--data-dir DIR` "
            "(data_dir=DIR) where it was prepared, or `--download` (download=True) to download and "
            f"prepare it there. ({e})") from e


def tfds_features(name, tinfo, image_size):
    """``(image key, image shape (H, W, C) with None where it varies, the label feature)`` of an
    image-classification set; a `DatasetError` for another kind of set."""
    if tinfo.supervised_keys is None or len(tinfo.supervised_keys) != 2:
        raise DatasetError(f"tensorflow-datasets dataset {name!r} has no (image, label) supervised keys; "
                           "it is not an image-classification dataset.")
    image_key, label_key = tinfo.supervised_keys
    image_feature, label_feature = tinfo.features[image_key], tinfo.features[label_key]
    shape = tuple(getattr(image_feature, "shape", ()))
    if len(shape) != 3 or not hasattr(label_feature, "num_classes"):
        raise DatasetError(f"tensorflow-datasets dataset {name!r} is not image classification: "
                           f"{image_key} has shape {shape}, {label_key} is {type(label_feature).__name__}.")
    if None in shape[:2] and image_size is None:
        raise ValueError(f"tensorflow-datasets dataset {name!r} has images of varying size {shape}; "
                         "pass image_size=(height, width). Received: image_size=None")
    return image_key, shape, label_feature


def tfds_info(name, label_feature):
    """The ``info`` entries of a tensorflow-datasets set that do not depend on its pixels."""
    base = os.path.basename(os.path.normpath(name)) if is_prepared(name) else name.split(":")[0].split("/")[0]
    return DatasetInfo(name=base, num_classes=int(label_feature.num_classes),
                       class_names=[str(n) for n in label_feature.names], flip=base not in NO_FLIP,
                       source=f"tfds:{name}")


def has_test_split(tinfo):
    """Whether a set has a ``"test"`` split (tfds's mock data lists no splits: it has every one)."""
    return not tinfo.splits or "test" in tinfo.splits


def tfds_splits(has_test, test_fraction, seed):
    """Where a set's training and test examples come from (`keras_resnet.data.common.split_name`)."""
    if has_test:
        return {"train": "train", "test": "test"}
    return {"train": "train", "test": held_out_name("train", test_fraction, seed)}


def held_out(n, test_fraction, seed):
    """The one rule for a set without a ``"test"`` split, in every command (training, streamed or
    held in memory, ``evaluate`` and ``export``): ``(kept, held out)`` example indices of ``"train"``,
    a seeded share drawn from the example count alone (`keras_resnet.data.common.split_indices`), so
    that a stream needs no pass over the labels before training."""
    return split_indices(n, test_fraction, seed)


def load_tfds_arrays(name, data_dir, download, image_size, test_fraction, seed):
    """Both splits of a tensorflow-datasets set decoded into arrays, each image turned upright by its
    EXIF orientation (`keras_resnet.data.transforms.decode_upright`, as the streams decode)."""
    import tensorflow_datasets as tfds

    from keras_resnet.data.transforms import decode_upright

    _, tinfo = tfds_split(name, "train", data_dir, download)
    image_key, shape, label_feature = tfds_features(name, tinfo, image_size)
    channels = int(shape[2] or 3)

    def split(which):
        ds, _ = tfds_split(name, which, data_dir, download, decoders={image_key: tfds.decode.SkipDecoding()})
        return ds.map(lambda data, label: (decode_upright(data, channels), label))

    x, y = _materialise(split("train"), image_size)
    if has_test_split(tinfo):
        test = _materialise(split("test"), image_size)
        train = (x, y)
    else:
        kept, held = held_out(len(y), test_fraction, seed)
        train, test = (x[kept], y[kept]), (x[held], y[held])
    return train, test, DatasetInfo.of(tfds_info(name, label_feature),
                                       splits=tfds_splits(has_test_split(tinfo), test_fraction, seed))


def _materialise(ds, image_size):
    import tensorflow as tf

    if image_size is not None:
        ds = ds.map(lambda x, y: (tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
            x, image_size, antialias=True)), 0, 255), tf.uint8), y), num_parallel_calls=tf.data.AUTOTUNE)
    xs, ys = [], []
    for x, y in ds.batch(1024).prefetch(2).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DatasetError("the split is empty.")
    return np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int64)
